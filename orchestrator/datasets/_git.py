"""Running git safely: hardened environment, master URL checks, error translation.

Every git process of this package goes through :func:`run_git`: an argument list (never a shell, never a
command string), a fixed environment that cannot prompt or run remote helpers, a time limit for network
operations, and git's failures turned into :class:`orchestrator.errors.GitError` with a short message.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence

import git
from git.exc import GitCommandNotFound

from orchestrator.errors import GitError
from orchestrator.phases import phase

# Transports git may use. GIT_ALLOW_PROTOCOL overrides any protocol.*.allow configuration, so neither
# `ext::` (runs arbitrary commands), `fd::` nor a `git-remote-<scheme>` helper can ever be started, while
# local paths ("file") keep working although GIT_PROTOCOL_FROM_USER=0.
ALLOWED_PROTOCOLS = ("file", "git", "http", "https", "ssh")

# Config applied to every git command through GIT_CONFIG_COUNT (the environment form of `git -c`).
_CONFIG: tuple[tuple[str, str], ...] = (
    ("protocol.ext.allow", "never"),  # belt and braces next to GIT_ALLOW_PROTOCOL
    ("core.hooksPath", os.devnull),  # no hook of the operator's global config runs on our pushes
    ("core.autocrlf", "false"),  # tool output is stored byte for byte
    ("commit.gpgSign", "false"),  # a global signing setup must not block or prompt
    ("core.fsmonitor", "false"),
    # gc runs on our schedule, under the dataset's lock (Datasets.collect_garbage); an automatic one
    # that git starts after a fetch or a receive must not detach and outlive the orchestrator.
    ("gc.autoDetach", "false"),
    ("maintenance.autoDetach", "false"),
    # No reflog is started, whatever the operator's global or system config says (a bare repository's
    # default): a branch moved by writing its ref file (ref_files.write_ref) is then moved as git moves
    # it. A reflog already there is appended to (by git: write_ref leaves it to git).
    ("core.logAllRefUpdates", "false"),
    # The index `git add` writes is read by libgit2 (objects.tree_of_index): no split index, no index
    # without its checksum (formats libgit2 may not read), whatever the operator's config says.
    ("core.splitIndex", "false"),
    ("index.skipHash", "false"),
    # Commit messages are UTF-8 (str from Python), and a commit made in process carries no encoding
    # header: git makes the same object (objects.commit), whatever i18n.commitEncoding says elsewhere.
    ("i18n.commitEncoding", "UTF-8"),
)

# The credential-store file (MAO_GIT_CREDENTIALS) git reads remotes' passwords from; set once at start.
_credentials_file: list[str] = []


def use_credentials_file(path: str | None) -> None:
    """Make every later git process read HTTP credentials from ``path`` (git credential-store format)
    and from nowhere else: credentials never sit in a master URL, in etcd or in a repository's config."""
    _credentials_file[:] = [path] if path else []


_CREDENTIALS_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")

# Phrases in git's stderr that mean the remote itself could not be used.
_UNREACHABLE = (
    "does not appear to be a git repository",
    "could not read from remote repository",
    "unable to access",
    "could not resolve",
    "connection refused",
    "connection timed out",
    "timed out",
    "no route to host",
    "network is unreachable",
    "repository not found",
    "not found",
    "authentication failed",
    "permission denied",
    "host key verification failed",
    "not allowed",
    "timeout:",
)
# Lines that carry no information of their own.
_NOISE = ("hint:", "Please make sure you have the correct access rights", "and the repository exists.")
_REJECTED = ("[rejected]", "[remote rejected]", "atomic push failed", "failed to push some refs")


def redact(text: str) -> str:
    """Hide credentials embedded in URLs (``https://user:token@host`` -> ``https://***@host``)."""
    return _CREDENTIALS_RE.sub(r"\1***@", text)


def summarize(stderr: str, max_lines: int = 4, max_chars: int = 300) -> str:
    """git's stderr cut to its last few meaningful lines, credentials redacted, on one line."""
    lines = [line.strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line and not line.startswith(_NOISE)]
    shown = [line if len(line) <= max_chars else line[: max_chars - 3] + "..." for line in lines[-max_lines:]]
    return redact(" | ".join(shown)) or "no error output"


def looks_unreachable(stderr: str) -> bool:
    low = stderr.lower()
    return any(phrase in low for phrase in _UNREACHABLE)


def looks_rejected(stderr: str) -> bool:
    return any(phrase in stderr for phrase in _REJECTED)


def looks_disk_full(stderr: str) -> bool:
    return any(phrase in stderr for phrase in ("No space left on device", "Disk quota exceeded"))


MOVED = "it changed meanwhile"


def rejection_cause(stderr: str) -> str:
    """Why the master rejected a push, in the words an operator acts on: the master itself refused
    it (a hook, a protected branch: ``[remote rejected] ... (<its reason>)``), or the branch moved
    there since this instance fetched (``non-fast-forward``, ``fetch first``, ``stale info``)."""
    refused = re.search(r"\[remote rejected\][^(\n]*\(([^)\n]*)\)", stderr)
    if refused:
        return f"the master refused it: {refused.group(1)}"
    if "[remote rejected]" in stderr:
        return "the master refused it"
    return MOVED


def hardened_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment additions for one git process.

    GitPython starts from os.environ and lets us add or override variables but not remove them, so
    prompts are disabled by empty values rather than by unsetting (git treats an empty GIT_ASKPASS as
    "no helper"). GIT_SSH_COMMAND / GIT_SSH from the environment are honoured: operators configure their
    SSH key that way; otherwise ssh runs in batch mode so it fails instead of waiting for a password.
    """
    config = list(_CONFIG)
    if _credentials_file:
        # An empty helper first resets any helper of the operator's global config.
        quoted = _credentials_file[0].replace("\\", "\\\\").replace('"', '\\"')
        config += [("credential.helper", ""), ("credential.helper", f'store --file "{quoted}"')]
    env = {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_PROTOCOL_FROM_USER": "0",
        "GIT_ALLOW_PROTOCOL": ":".join(ALLOWED_PROTOCOLS),
        "GIT_ASKPASS": "",
        "SSH_ASKPASS": "",
        "LC_ALL": "C",
        "LANGUAGE": "C",
        "GIT_CONFIG_COUNT": str(len(config)),
    }
    for i, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    if not os.environ.get("GIT_SSH_COMMAND") and not os.environ.get("GIT_SSH"):
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
    if extra:
        env.update(extra)
    return env


def run_git(
    runner: git.Git,
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    what: str,
    timeout: float | None = None,
    ok: Sequence[int] = (0,),
    prefix: str = "",
    abort: threading.Event | None = None,
) -> tuple[int, str, str]:
    """Run ``git <args>`` and return (status, stdout, stderr); a status outside ``ok`` raises GitError.

    ``what`` describes the operation for the error message: "<prefix>could not <what>: <stderr summary>".
    With ``abort``, the process is killed as soon as that event is set (see _execute_abortable).
    """
    status, out, err = _execute(runner, args, env, what, timeout, ok, prefix, binary=False, abort=abort)
    text = out if isinstance(out, str) else (out or b"").decode("utf-8", "surrogateescape")
    return status, text, err


def run_git_bytes(
    runner: git.Git, args: Sequence[str], *, env: Mapping[str, str], what: str, prefix: str = ""
) -> bytes:
    """``run_git`` for output that must stay byte for byte (file contents): not decoded, and the
    trailing newline GitPython strips by default is kept."""
    _, out, _ = _execute(runner, args, env, what, None, (0,), prefix, binary=True)
    return out if isinstance(out, bytes) else (out or "").encode("utf-8", "surrogateescape")


_LOCK_EXISTS_RE = re.compile(r"Unable to create '([^']+\.lock)': File exists")


def _find_setpriv() -> str | None:
    if not sys.platform.startswith("linux"):
        return None
    return shutil.which("setpriv") or next(
        (p for p in ("/usr/bin/setpriv", "/bin/setpriv") if os.access(p, os.X_OK)), None
    )


_SETPRIV = _find_setpriv()


def die_with_parent() -> list[str]:
    """The prefix that makes a git child receive SIGKILL when the thread that started it dies.

    A SIGKILLed orchestrator must not leave a git push running that lands after its lock's lease is
    gone, nor a ``git add`` that keeps writing. ``setpriv --pdeathsig KILL`` (util-linux, present on
    every Debian) sets PR_SET_PDEATHSIG and execs git, which keeps it; the child stays in the
    orchestrator's process group. A ``preexec_fn`` doing the prctl is not an option: Python callbacks
    between fork and exec crash in a process that runs gRPC (etcd's client). Git's own children (ssh,
    receive-pack) are not covered: they end when the killed git closes their pipes.
    """
    return [_SETPRIV, "--pdeathsig", "KILL", "--"] if _SETPRIV else []


def lock_file_problem(stderr: str) -> str | None:
    """git's "Unable to create '<x>.lock': File exists" as a message naming the file, or None."""
    match = _LOCK_EXISTS_RE.search(stderr)
    if match is None:
        return None
    return (
        f"the lock file {match.group(1)} exists: a git process was killed while holding it. "
        "The orchestrator removes such files when it starts; with no git process running, it can be "
        "deleted by hand"
    )


def _execute(
    runner: git.Git,
    args: Sequence[str],
    env: Mapping[str, str],
    what: str,
    timeout: float | None,
    ok: Sequence[int],
    prefix: str,
    binary: bool,
    abort: threading.Event | None = None,
) -> tuple[int, str | bytes, str]:
    command = [*die_with_parent(), runner.GIT_PYTHON_GIT_EXECUTABLE, *args]
    out: str | bytes | None
    # One span per git process (MAO_PHASE_TIMINGS, orchestrator/phases.py; nothing when off).
    try:
        with phase(f"git {args[0] if args else ''}"):
            if abort is not None:
                status, out, err = _execute_abortable([str(c) for c in command], env, timeout, abort)
            else:
                status, out, err = runner.execute(
                    command,
                    with_extended_output=True,
                    with_exceptions=False,
                    env=dict(env),
                    kill_after_timeout=timeout,
                    stdout_as_string=not binary,
                    strip_newline_in_stdout=not binary,
                )
    except GitCommandNotFound as exc:
        raise GitError(f"{prefix}could not {what}: git is not installed or not on PATH") from exc
    except OSError as exc:
        raise GitError(f"{prefix}could not {what}: {exc}") from exc
    if status == 127 and "failed to execute" in err:  # setpriv could not exec git
        raise GitError(f"{prefix}could not {what}: git is not installed or not on PATH")
    if status not in ok:
        raise GitCommandFailed(what, status, err, prefix)
    return status, out if out is not None else (b"" if binary else ""), err


def _execute_abortable(
    command: list[str], env: Mapping[str, str], timeout: float | None, abort: threading.Event
) -> tuple[int, str, str]:
    """Run ``command`` and kill it (and its direct children) as soon as ``abort`` is set, or after
    ``timeout`` s. For a push under a lock: once the lock's lease is lost, the push must not land."""
    full_env = {**os.environ, **env}
    proc = subprocess.Popen(  # noqa: S603 - an argument list, never a shell
        command,
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    finished = threading.Event()
    aborted = threading.Event()

    def watch() -> None:
        # Waits on ``finished`` (set the moment git exits, so the join below costs nothing) and looks
        # at ``abort`` every 10 ms: a lost lease stops the push within that.
        while not finished.wait(0.01):
            if abort.is_set():
                aborted.set()
                _kill_tree(proc.pid)
                return

    watcher = threading.Thread(target=watch, name="git-abort-watch", daemon=True)
    watcher.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc.pid)
        out, err = proc.communicate()
        err = b"Timeout: " + err
    finally:
        finished.set()
        watcher.join()
    text_err = err.decode("utf-8", "replace")
    if aborted.is_set():
        text_err = "aborted: the lock it ran under was lost\n" + text_err
    return proc.returncode, out.decode("utf-8", "surrogateescape").rstrip("\n"), text_err


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid``'s direct children (ssh, receive-pack, a remote helper), then ``pid``."""
    children = []
    try:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat", "rb") as handle:
                        fields = handle.read().rsplit(b")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == pid:
                    children.append(int(entry))
    except OSError:
        pass
    for target in [*children, pid]:
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass


class GitCommandFailed(GitError):
    """A git process exited with an unexpected status; ``stderr`` is kept for classification."""

    def __init__(self, what: str, status: int, stderr: str, prefix: str = "") -> None:
        self.aborted = stderr.startswith("aborted:")
        self.timed_out = not self.aborted and (stderr.startswith("Timeout:") or status < 0)
        if self.aborted:
            self.detail = "stopped because the lock it ran under was lost"
        elif self.timed_out:
            self.detail = "timed out"
        elif looks_disk_full(stderr):
            self.detail = f"the disk is full ({summarize(stderr)})"
        else:
            self.detail = lock_file_problem(stderr) or summarize(stderr)
        super().__init__(f"{prefix}could not {what}: {self.detail}")
        self.what = what
        # Not ``status``: that is the HTTP status of every MaoError, and a git exit code is not one.
        self.exit_status = status
        self.stderr = stderr
