"""The Docker engine (started when no daemon answers) and the offline busybox image."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .process import ManagedProcess, ServerStartError, _run, is_root

# ---------------------------------------------------------------------------------------------
# Docker
# ---------------------------------------------------------------------------------------------


def _docker_client(timeout: int = 10):
    import docker  # local import: keeps ``import tests.servers`` light

    return docker.from_env(timeout=timeout)


def docker_ping() -> bool:
    """True when the Docker engine answers (via the SDK, whatever DOCKER_HOST says)."""
    try:
        client = _docker_client(timeout=5)
    except Exception:  # noqa: BLE001 - docker.errors.DockerException and socket errors
        return False
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001
        return False
    finally:
        client.close()


def ensure_docker(
    log_dir: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
    extra_args: Sequence[str] = (),
) -> tuple[bool, ManagedProcess | None]:
    """Make sure a Docker engine answers.

    Returns ``(started, handle)``: ``started`` is True when we launched ``dockerd`` ourselves
    (``dockerd --iptables=false --bridge=none``), and ``handle`` is its ManagedProcess, to be
    passed to :func:`stop_docker` at the end. When an engine already answered: ``(False, None)``.
    ``extra_args`` are appended to the dockerd command (e.g. ``-H``/``--data-root`` for a
    private daemon; the SDK client then needs a matching DOCKER_HOST).
    """
    if docker_ping():
        return False, None
    dockerd = shutil.which("dockerd") or (
        "/usr/sbin/dockerd" if os.path.exists("/usr/sbin/dockerd") else None
    )
    if not dockerd:
        raise ServerStartError(
            "Docker engine not reachable and dockerd not found (install Debian package docker.io)"
        )
    if not is_root():
        raise ServerStartError("Docker engine not reachable, and starting dockerd needs root")
    log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="mao-dockerd-"))
    env = dict(os.environ)
    # dockerd needs the sbin directories for its helpers (containerd, runc, ...)
    path = env.get("PATH", "")
    for extra in ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"):
        if extra not in path.split(":"):
            path = f"{path}:{extra}" if path else extra
    env["PATH"] = path
    proc = ManagedProcess(
        [dockerd, "--iptables=false", "--bridge=none", *extra_args],
        log_dir / "dockerd.log",
        env=env,
        name="dockerd",
    )

    try:
        _wait_for_dockerd(proc, quiet_timeout=timeout)
    except ServerStartError:
        proc.kill()
        raise
    except TimeoutError as exc:
        proc.stop(timeout=20)
        raise ServerStartError(f"{exc}{proc.log_tail_block()}") from exc
    return True, proc


# A daemon left with many dead containers (a previous dockerd killed rather than stopped) spends
# minutes "Removing stale sandbox" one by one before it answers: that is progress, not a hang.
# So the timeout counts only time in which the daemon neither answers nor writes to its log, and
# an overall cap stops a daemon that logs forever without ever answering.
DOCKERD_START_CAP = 900.0


def _wait_for_dockerd(proc: ManagedProcess, quiet_timeout: float) -> None:
    started = time.monotonic()
    last_size = -1
    last_progress = started
    while True:
        if not proc.alive:
            raise ServerStartError(f"dockerd exited with code {proc.returncode}{proc.log_tail_block()}")
        if docker_ping():
            return
        now = time.monotonic()
        try:
            size = proc.log_path.stat().st_size
        except OSError:
            size = last_size
        if size != last_size:
            last_size, last_progress = size, now
        if now - last_progress >= quiet_timeout:
            raise TimeoutError(
                f"timed out: dockerd neither answered nor logged anything for {quiet_timeout:g}s"
            )
        if now - started >= DOCKERD_START_CAP:
            raise TimeoutError(f"timed out after {DOCKERD_START_CAP:g}s waiting for dockerd to answer")
        time.sleep(0.25)


def stop_docker(handle: ManagedProcess | None, timeout: float = 30.0) -> None:
    """Stop a dockerd that :func:`ensure_docker` started (no-op for None)."""
    if handle is not None:
        handle.stop(timeout)


def _busybox_tar(busybox_path: str) -> bytes:
    listing = _run([busybox_path, "--list"], "busybox --list", timeout=30).stdout
    applets = sorted({a.strip() for a in listing.split() if a.strip() and "/" not in a})
    buf = io.BytesIO()
    now = int(time.time())

    def add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = mode
        info.mtime = now
        tar.addfile(info)

    def add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        info.mtime = now
        tar.addfile(info, io.BytesIO(data))

    def add_symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.SYMTYPE
        info.linkname = target
        info.mode = 0o777
        info.mtime = now
        tar.addfile(info)

    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "etc", "usr", "usr/bin", "usr/src", "usr/src/app", "root", "proc", "sys", "dev"):
            add_dir(tar, d, 0o700 if d == "root" else 0o755)
        add_dir(tar, "tmp", 0o1777)
        add_file(tar, "bin/busybox", Path(busybox_path).read_bytes(), 0o755)
        for applet in applets:
            if applet != "busybox":
                add_symlink(tar, f"bin/{applet}", "busybox")
        add_symlink(tar, "usr/bin/env", "/bin/busybox")
        add_file(
            tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        )
        add_file(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()


BUSYBOX_LABEL = "org.mao.harness.busybox"
BUSYBOX_LABEL_VERSION = "1"


def build_busybox_image(
    tag: str = "busybox:latest",
    busybox_path: str = "/usr/bin/busybox",
    client=None,
    rebuild: bool = False,
) -> str:
    """Return the id of image ``tag``, building it offline from the host's static busybox if needed.

    An existing image is reused when it carries this harness's label; a missing one, or an
    image of that tag made some other way (e.g. without /tmp or /usr/src/app), is (re)built
    and the tag moved to the new image. ``rebuild=True`` always builds.
    """
    import docker

    own_client = client is None
    client = client or _docker_client(timeout=120)
    try:
        if not rebuild:
            try:
                image = client.images.get(tag)
            except docker.errors.ImageNotFound:
                image = None
            if image is not None and (image.labels or {}).get(BUSYBOX_LABEL) == BUSYBOX_LABEL_VERSION:
                return image.id
        if not os.path.exists(busybox_path):
            raise ServerStartError(f"{busybox_path} not found (install Debian package busybox-static)")
        last = tag.rsplit("/", 1)[-1]
        repository, image_tag = tag.rsplit(":", 1) if ":" in last else (tag, "latest")
        client.api.import_image_from_data(
            _busybox_tar(busybox_path),
            repository=repository,
            tag=image_tag,
            changes=[
                "ENV PATH=/bin:/usr/bin",
                f"LABEL {BUSYBOX_LABEL}={BUSYBOX_LABEL_VERSION}",
                'CMD ["sh"]',
            ],
        )
        return client.images.get(tag).id
    finally:
        if own_client:
            client.close()
