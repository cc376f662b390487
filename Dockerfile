# The orchestrator (python -m orchestrator). Built by docker compose from this checkout:
#   docker build -t mao-orchestrator:0.1.0 -f Dockerfile .
FROM python:3.11-slim

# git for the datasets (GitPython runs it), ssh for git remotes reached over SSH, util-linux for
# setpriv (git children die with the orchestrator; docs/security.md#tools).
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client ca-certificates util-linux \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/mao
# Dependencies first (cached until pyproject.toml or the pins change), then the code.
COPY pyproject.toml constraints.txt maoctl.py ./
COPY orchestrator ./orchestrator
COPY executor ./executor
COPY ctl ./ctl
RUN pip install --no-cache-dir -c constraints.txt .

EXPOSE 8080
CMD ["mao-orchestrator"]
