"""A small HTTP client for tests and benchmarks: JSON in, ``requests.Response`` out."""

from __future__ import annotations

import uuid
from typing import Any

import requests

from tests import servers


class Api:
    """``token`` None: the token the harness gave the node at ``url`` (tests.servers.TOKENS); "" sends
    none. Every request is JSON (the API refuses writes of any other content type)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Content-Type"] = "application/json"
        token = servers.token_for(self.url) if token is None else token
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.session.get(self.url + path, params=params or None, timeout=self.timeout)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> requests.Response:
        return self.session.post(self.url + path, json=json, timeout=self.timeout, **kwargs)

    def delete(self, path: str) -> requests.Response:
        return self.session.delete(self.url + path, timeout=self.timeout)

    # -- conveniences used by many tests ----------------------------------------------------------
    def ok(self, response: requests.Response) -> Any:
        assert response.status_code < 300, (
            f"{response.request.method} {response.url} -> {response.status_code}: {response.text}"
        )
        return response.json()

    def tool(self, name: str, image: str = "busybox:latest") -> None:
        self.ok(
            self.post(
                "/registry/tools",
                {
                    "name": name,
                    "author": "tests",
                    "image": image,
                    "data_repo": "",
                    "code_repo": "",
                    "artefact": "",
                },
            )
        )

    def local_dataset(self, name: str) -> str:
        """A bare repository on this node registered as dataset ``name``; returns its path."""
        path = self.ok(self.post("/bare-repo/init", {"name": name}))["path"]
        self.ok(self.post("/registry/datasets", {"name": name, "body": {"master": path, "nodes": []}}))
        return path

    def run(self, pipeline: str, **extra: Any) -> dict[str, Any]:
        response = self.post("/pipeline/run", {"name": pipeline, **extra})
        assert response.status_code in (200, 202), response.text
        return response.json()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def assert_error(response: requests.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """An error answer: the given status, a JSON object with ``error`` and ``message``."""
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    body = response.json()
    assert (
        isinstance(body, dict) and isinstance(body.get("error"), str) and isinstance(body.get("message"), str)
    ), body
    assert "Traceback" not in response.text
    if code is not None:
        assert body["error"] == code, body
    return body


def one_step_pipeline(api: Api, cmd: str, **fields: Any) -> tuple[str, str]:
    """A new pipeline with one step ``only`` (a new tool on busybox) running ``sh -c cmd`` into a new
    local dataset; ``fields`` go into the step. Returns (pipeline, dataset)."""
    tool, dataset, pipeline = unique("tool"), unique("out"), unique("one")
    api.tool(tool)
    api.local_dataset(dataset)
    step = {"name": "only", "tool": tool, "output_dataset": dataset, "cmd": ["sh", "-c", cmd], **fields}
    api.ok(api.post("/pipeline/init", {"name": pipeline, "steps": [step]}))
    return pipeline, dataset
