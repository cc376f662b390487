"""The orchestrator's HTTP API as maoctl sees it: JSON in, JSON out, every failure one clear line.

Errors are ``click.ClickException`` subclasses, so click prints ``Error: <message>`` on stderr and exits
with status 1; nothing here ever lets a traceback reach the operator.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import click
import requests

from executor.transport import UntrustedServer, unix_socket_path

from .local_socket import route, session_for

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 30.0
START_HINT = (
    "is the orchestrator running? start it with `mao-orchestrator` "
    "(or `maoctl instance up --dir DIR` for an installed instance), or check --url / MAO_URL"
)


class CtlError(click.ClickException):
    """A failure maoctl explains in one line (exit status 1)."""


class Unreachable(CtlError):
    """No HTTP answer at all: refused, unknown host, timed out."""


class ApiError(CtlError):
    """The orchestrator answered with an error status; ``message`` is the server's own message."""

    def __init__(self, status: int, body: Any, fallback: str) -> None:
        self.status = status
        self.body = body if isinstance(body, dict) else {}
        self.code = str(self.body.get("error") or "")
        message = self.body.get("message") if isinstance(self.body.get("message"), str) else None
        if status == 401:
            message = (message or "the API token is missing or wrong") + (
                " (maoctl sends --token, MAO_API_TOKEN, or the token file $MAO_DATA_DIR/api-token "
                "of an orchestrator on this host, through its socket $MAO_DATA_DIR/api.sock)"
            )
        super().__init__(message or fallback)


def url_problem(url: str) -> str | None:
    if (path := unix_socket_path(url)) is not None:
        return None if path.startswith("/") else f"{url!r} is not unix:///absolute/path/api.sock"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http(s) URL such as {DEFAULT_URL}, or unix:///path/to/api.sock"
    return None


def segment(value: str) -> str:
    """One path segment, quoted so a name can never change the path it is put in."""
    return quote(value, safe="")


class Client:
    """``token``: the one the operator gave (--token, MAO_API_TOKEN), or None: then a local
    orchestrator's token file is used, through its socket only (``ctl.local_socket``)."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout: float = DEFAULT_TIMEOUT):
        self.route = route(url, token)
        # For messages: the URL as given, and the socket when the requests go there instead.
        self.url = url.rstrip("/")
        if self.route.socket is not None and unix_socket_path(url) is None:
            self.url += f" (through {self.route.socket})"
        self.base = self.route.base
        self.timeout = timeout
        self.session = session_for(self.route)
        self.session.headers["Accept"] = "application/json"
        if self.route.token:
            self.session.headers["Authorization"] = f"Bearer {self.route.token}"

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        wait_forever: bool = False,
    ) -> tuple[int, Any]:
        """``(status, parsed JSON body)`` of any HTTP answer; raises Unreachable when there is none.

        ``wait_forever`` waits as long as the server needs (a pipeline run that answers at its end).
        """
        timeout = (min(self.timeout, 10.0), None if wait_forever else self.timeout)
        url = self.base + path
        if self.route.refusal:
            raise Unreachable(self.route.refusal)
        timed_out = f"the orchestrator at {self.url} did not answer {method} {path} within {self.timeout:g} s"
        with self._reaching(f"cannot talk to the orchestrator at {self.url}", timed_out):
            # Every write is JSON, even without a body: the API refuses other content types (415).
            headers = {"Content-Type": "application/json"} if method in ("POST", "PUT", "PATCH") else None
            response = self.session.request(
                method, url, json=json, params=params, headers=headers, timeout=timeout
            )
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
            if response.ok:
                raise CtlError(
                    f"{self.url} answered {method} {path} with something that is not JSON: "
                    "is --url pointing at a MAO orchestrator?"
                ) from None
        return response.status_code, body

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The parsed body of a successful answer; raises ApiError carrying the server's message."""
        status, body = self.request(method, path, **kwargs)
        if status >= 400:
            raise ApiError(
                status,
                body,
                f"{method} {self.url}{path} failed with HTTP {status} "
                "(no MAO error message: is --url pointing at a MAO orchestrator?)",
            )
        return body

    def stream(self, path: str, params: dict[str, Any], follow: bool = False) -> Iterator[bytes]:
        """The body of a text answer in chunks as they come (``GET /runs/{id}/log``); raises ApiError
        carrying the server's message for an error status. ``follow``: no read timeout (a followed
        log may be silent for as long as its step)."""
        timeout = (min(self.timeout, 10.0), None if follow else self.timeout)
        if self.route.refusal:
            raise Unreachable(self.route.refusal)
        with (
            self._reaching(f"the log from {self.url} broke off"),
            self.session.get(
                self.base + path, params=params, stream=True, timeout=timeout, headers={"Accept": "text/plain"}
            ) as response,
        ):
            if response.status_code >= 400:
                try:
                    body = response.json()
                except ValueError:
                    body = None
                raise ApiError(
                    response.status_code,
                    body,
                    f"GET {self.url}{path} failed with HTTP {response.status_code}",
                )
            yield from response.iter_content(chunk_size=None)

    @contextlib.contextmanager
    def _reaching(self, failed: str, timed_out: str | None = None) -> Iterator[None]:
        """A transport failure inside as ``Unreachable``: a server this client does not trust, one
        that cannot be reached (with the hint to start it), an answer later than ``timed_out`` says
        (None: as any other failure), and any other failure as ``failed: <what>``."""
        try:
            yield
        except UntrustedServer as exc:
            raise Unreachable(f"refusing to talk to {self.url}: {exc}") from None
        except requests.exceptions.ConnectTimeout:
            raise Unreachable(
                f"cannot reach the orchestrator at {self.url} (connection timed out); {START_HINT}"
            ) from None
        except requests.exceptions.ReadTimeout as exc:  # not a ConnectionError: only the wait ran out
            raise Unreachable(timed_out or f"{failed}: {exc}") from None
        except requests.exceptions.ConnectionError as exc:
            raise Unreachable(f"cannot reach the orchestrator at {self.url} ({_reason(exc)}); {START_HINT}") from None
        except requests.exceptions.RequestException as exc:
            raise Unreachable(f"{failed}: {exc}") from None

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params={k: v for k, v in params.items() if v is not None} or None)

    def post(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.call("POST", path, json=body, **kwargs)

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)


def _reason(exc: requests.exceptions.ConnectionError) -> str:
    text = str(exc)
    for needle, reason in (
        ("Connection refused", "connection refused"),
        ("No such file or directory", "no socket there"),
        ("Permission denied", "permission denied"),
        ("Name or service not known", "unknown host"),
        ("nodename nor servname", "unknown host"),
        ("Temporary failure in name resolution", "unknown host"),
        ("No route to host", "no route to host"),
        ("Network is unreachable", "network unreachable"),
        ("timed out", "connection timed out"),
    ):
        if needle in text:
            return reason
    return "no connection"
