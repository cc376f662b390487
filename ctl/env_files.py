"""An instance's env files: ``.env`` (compose's own) and one private file per service that needs a secret.

- ``.env`` (read by compose itself, never by a service) names the compose project
  (``COMPOSE_PROJECT_NAME``: compose v1 rejects a top-level ``name``) and the images;
- one env file per service that needs a secret, each mode 0600 and each holding only what that
  service needs (compose hands a service the variables of its own ``env_file`` alone):
  ``mao.env`` the orchestrator's (instance name, git e-mail, labels, the API token, the executor
  token it sends, the database URL with its password; also a valid ``MAO_CONFIG_FILE``),
  ``executor.env`` the executor's (its token), ``postgres.env`` PostgreSQL's (its password). etcd
  gets none: its peers and clients are authenticated by certificates. So a PostgreSQL or executor
  container, or anything reading its environment (``docker inspect``), never holds the API token.

``Secrets.reuse_or_generate`` keeps an earlier install's secrets, so its database stays readable.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .instance_config import IMAGE_VARIABLES, InstanceConfig, project_name

ENV_FILE = "mao.env"  # the orchestrator's
EXECUTOR_ENV_FILE = "executor.env"
POSTGRES_ENV_FILE = "postgres.env"
PRIVATE_FILES = (ENV_FILE, EXECUTOR_ENV_FILE, POSTGRES_ENV_FILE)
DOTENV = ".env"
DB_USER = DB_NAME = "mao"


@dataclass(frozen=True)
class Secrets:
    postgres_password: str
    api_token: str
    executor_token: str

    @classmethod
    def generate(cls) -> Secrets:
        return cls(secrets.token_urlsafe(24), secrets.token_urlsafe(32), secrets.token_urlsafe(32))

    @classmethod
    def reuse_or_generate(cls, directory: Path) -> Secrets:
        """The secrets of an earlier install in the same folder, so its database stays readable. An
        install from before the split kept them all in mao.env; the database URL holds the password."""
        fresh = cls.generate()
        old: dict[str, str] = {}
        for name in (ENV_FILE, EXECUTOR_ENV_FILE, POSTGRES_ENV_FILE):  # later files win
            try:
                old.update({k: v for k, v in parse_env((directory / name).read_text()).items() if v})
            except OSError:
                continue
        password = old.get("POSTGRES_PASSWORD") or _url_password(old.get("MAO_DATABASE_URL", ""))
        return cls(
            password or fresh.postgres_password,
            old.get("MAO_API_TOKEN") or fresh.api_token,
            old.get("MAO_EXECUTOR_TOKEN") or fresh.executor_token,
        )


def _url_password(url: str) -> str:
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return ""


def parse_env(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines as written by :func:`env_text` (the orchestrator reads them the same way)."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            values[key.strip()] = value.strip()
    return values


def database_url(config: InstanceConfig, password: str) -> str:
    return f"postgresql+asyncpg://{DB_USER}:{password}@127.0.0.1:{config.postgres_port}/{DB_NAME}"


def env_values(config: InstanceConfig, keys: Secrets) -> dict[str, str]:
    """The orchestrator's ``mao.env``: everything but PostgreSQL's own password variable (the URL
    carries it)."""
    values = {
        "MAO_INSTANCE_NAME": config.name,
        "MAO_GIT_EMAIL": config.git_email,
        "MAO_API_TOKEN": keys.api_token,
        "MAO_EXECUTOR_TOKEN": keys.executor_token,
        "MAO_DATABASE_URL": database_url(config, keys.postgres_password) if keys.postgres_password else "",
    }
    if config.labels:
        values["MAO_LABELS"] = ",".join(f"{k}={v}" for k, v in config.labels.items())
    return values


def env_text(config: InstanceConfig, keys: Secrets) -> str:
    lines = [
        f"# MAO instance {config.name}: the orchestrator's identity and secrets. Keep this file private (mode 0600).",
        "# Read by the orchestrator only (its env_file in the compose file); the executor's token is also in",
        "# executor.env and the database password in postgres.env: change them in both places.",
    ]
    lines += [f"{key}={value}" for key, value in env_values(config, keys).items()]
    return "\n".join(lines) + "\n"


def executor_env_text(config: InstanceConfig, keys: Secrets) -> str:
    """``executor.env``: the executor's token, and nothing else."""
    return (
        f"# MAO instance {config.name}: the executor's token. Keep this file private (mode 0600).\n"
        "# Read by the executor only; the orchestrator sends the same value (MAO_EXECUTOR_TOKEN in mao.env).\n"
        f"MAO_EXECUTOR_TOKEN={keys.executor_token}\n"
    )


def postgres_env_text(config: InstanceConfig, keys: Secrets) -> str:
    """``postgres.env``: PostgreSQL's password, and nothing else."""
    return (
        f"# MAO instance {config.name}: PostgreSQL's password. Keep this file private (mode 0600).\n"
        "# Read by PostgreSQL only, at its first start (changing it later does not change the database's\n"
        "# password); the orchestrator's MAO_DATABASE_URL in mao.env holds the same value.\n"
        f"POSTGRES_PASSWORD={keys.postgres_password}\n"
    )


def private_texts(config: InstanceConfig, keys: Secrets) -> dict[str, str]:
    """Each private env file's name and text."""
    return {
        ENV_FILE: env_text(config, keys),
        EXECUTOR_ENV_FILE: executor_env_text(config, keys),
        POSTGRES_ENV_FILE: postgres_env_text(config, keys),
    }


def dotenv_text(config: InstanceConfig) -> str:
    """``.env``: what compose itself reads (project name, images); nothing secret."""
    lines = [
        "# Read by docker compose / docker-compose (not by the services): the project and its images.",
        f"COMPOSE_PROJECT_NAME={project_name(config.name)}",
    ]
    lines += [f"{IMAGE_VARIABLES[service]}={image}" for service, image in config.images.items()]
    return "\n".join(lines) + "\n"
