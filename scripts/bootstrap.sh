#!/usr/bin/env bash
# Idempotent set-up of a Debian 12 machine for development, the demo and the tests:
#   - Debian packages (only the missing ones): etcd-server docker.io git busybox-static curl postgresql tmux
#     util-linux openssl debootstrap docker-compose (scripts/images.sh and the compose test)
#     chromium chromium-driver (the web console's browser test; never downloaded at run time)
#     slurmctld slurmd slurm-client munge (the single-node Slurm of tests/servers/slurm.py)
#   - .venv (python3 -m venv) with the project installed: pip install -e '.[test]' [-c constraints.txt]
# Services are NOT started here: the tests and the demo start their own etcd, dockerd and
# PostgreSQL instances (see tests/servers/).
# Environment: MAO_BOOTSTRAP_FORCE_PIP=1 reinstalls the Python packages even when up to date.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"

step() { printf '[bootstrap] %s\n' "$*"; }

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
else
    SUDO=(sudo)
fi

PACKAGES=(etcd-server docker.io git busybox-static curl postgresql tmux util-linux openssl debootstrap docker-compose chromium chromium-driver
          slurmctld slurmd slurm-client munge)

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

apt_install() {
    # Installing etcd-server/docker.io/postgresql/munge/slurmctld/slurmd tries to start their services; in a
    # container that can fail. A temporary policy-rc.d (exit 101) tells dpkg not to start them.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 755 "$policy"
        made_policy=1
    fi
    local rc=0
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q || rc=$?
    if [ "$rc" -eq 0 ]; then
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" || rc=$?
    fi
    if [ "$rc" -ne 0 ]; then
        step "apt-get reported exit code $rc (often a service that cannot start here); finishing package configuration"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive dpkg --configure -a || true
    fi
    if [ "$made_policy" -eq 1 ]; then
        "${SUDO[@]}" rm -f "$policy"
    fi
}

# 1. Debian packages ---------------------------------------------------------------------------
missing=()
for pkg in "${PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
    step "apt: all packages present (${PACKAGES[*]})"
else
    step "apt: installing ${missing[*]}"
    apt_install "${missing[@]}"
fi

# The binaries the tests need must be there, whatever apt said about services.
have_bin() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
absent=()
for bin in etcd dockerd docker git busybox curl tmux debootstrap docker-compose munged slurmctld slurmd sbatch; do
    have_bin "$bin" || absent+=("$bin")
done
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || absent+=("postgresql(initdb)")
if [ "${#absent[@]}" -ne 0 ]; then
    step "ERROR: still missing after apt: ${absent[*]}"
    exit 1
fi
step "tools: etcd, dockerd, docker, git, busybox, curl, tmux, debootstrap, docker-compose, munge, slurm, postgresql found"

# 2. Python virtualenv -------------------------------------------------------------------------
if [ ! -x "$ROOT/.venv/bin/python" ]; then
    step "venv: creating .venv with $(command -v python3)"
    if ! python3 -m venv "$ROOT/.venv"; then
        step "venv: python3 -m venv failed; installing python3-venv and retrying"
        rm -rf "$ROOT/.venv"
        apt_install python3-venv
        python3 -m venv "$ROOT/.venv"
    fi
else
    step "venv: .venv exists ($("$ROOT/.venv/bin/python" --version 2>&1))"
fi

# 3. Python packages ---------------------------------------------------------------------------
PIP_ARGS=(-e "$ROOT[test]")
if [ -f "$ROOT/constraints.txt" ]; then
    PIP_ARGS+=(-c "$ROOT/constraints.txt")
fi
STAMP="$ROOT/.venv/.mao-bootstrap-stamp"
stamp_files=("$ROOT/pyproject.toml")
[ -f "$ROOT/constraints.txt" ] && stamp_files+=("$ROOT/constraints.txt")
want_stamp="$(cat "${stamp_files[@]}" | sha256sum | cut -d' ' -f1)"
have_stamp="$(cat "$STAMP" 2>/dev/null || true)"
if [ "${MAO_BOOTSTRAP_FORCE_PIP:-0}" != "1" ] && [ "$want_stamp" = "$have_stamp" ] \
    && "$ROOT/.venv/bin/python" -c "import pytest, pytest_asyncio, aetcd, docker, asyncpg, aiohttp" 2>/dev/null; then
    step "pip: project and test extras up to date (pyproject.toml unchanged)"
else
    step "pip: install ${PIP_ARGS[*]}"
    "$ROOT/.venv/bin/python" -m pip install -q --disable-pip-version-check "${PIP_ARGS[@]}"
    printf '%s\n' "$want_stamp" >"$STAMP"
fi

step "done"
