"""An in-memory seam ``Backend`` (orchestrator/executors/seam.py) for the engine's unit tests: objects
are scripts of output and an end, driven by the test; its log streams can be cut at chosen bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from orchestrator.executors.seam import (
    BackendUnavailable,
    Capabilities,
    ContainerSpec,
    DataMode,
    End,
    EndKind,
    Handle,
    Health,
    Managed,
)


@dataclass
class Thing:
    """One object: its output so far, whether it started, and its end once it has one."""

    spec: ContainerSpec
    output: bytearray = field(default_factory=bytearray)
    started: bool = False
    end: End | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def poke(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class MemoryBackend:
    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.things: dict[str, Thing] = {}
        self.submits: list[str] = []
        self.cancels: list[str] = []
        self.cuts: list[int] = []  # absolute byte offsets at which a follow stream breaks off (once each)
        self.down = False

    # -- what the test does ---------------------------------------------------------------------
    def start_it(self, name: str) -> None:
        thing = self.things[name]
        thing.started = True
        thing.poke()

    def write(self, name: str, data: bytes) -> None:
        thing = self.things[name]
        thing.output += data
        thing.poke()

    def go_down(self) -> None:
        self.down = True
        for thing in self.things.values():
            thing.poke()

    def finish(self, name: str, kind: EndKind = EndKind.COMPLETED, exit_code: int | None = 0) -> None:
        thing = self.things[name]
        thing.end = End(kind=kind, exit_code=exit_code, node="memory-node", engine_id=f"id-{name}")
        thing.poke()

    # -- the seam -------------------------------------------------------------------------------
    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def capabilities(self) -> Capabilities:
        return Capabilities(kind="memory", data_modes=frozenset({DataMode.LOCAL}), enforces=frozenset({"memory"}))

    async def health(self) -> Health:
        return Health(ok=not self.down, message="ok" if not self.down else "down")

    async def resolve_image(self, image: str) -> str | None:
        return f"sha256:{image}"

    async def validate(self, spec: ContainerSpec) -> None:
        return None

    async def submit(self, spec: ContainerSpec) -> Handle:
        if self.down:
            raise BackendUnavailable("down")
        self.submits.append(spec.name)
        self.things.setdefault(spec.name, Thing(spec))
        return Handle(backend=self.name, name=spec.name, engine_id=f"id-{spec.name}")

    async def wait(self, handle: Handle, spec: ContainerSpec) -> End:
        while True:
            if self.down:
                raise BackendUnavailable("down")
            thing = self.things.get(handle.name)
            if thing is None:
                return End(kind=EndKind.NODE_LOST, message="gone")
            if thing.end is not None:
                return thing.end
            await thing.changed.wait()

    async def logs(self, handle: Handle, follow: bool = False, since: int = 0) -> AsyncIterator[bytes]:
        if self.down:
            raise BackendUnavailable("down")
        thing = self.things.get(handle.name)
        if thing is None:
            return
        while follow and not thing.started and thing.end is None:
            await thing.changed.wait()
        if follow:
            yield b""
        offset = since
        while True:
            if self.down:  # a backend that goes away cuts its streams
                raise BackendUnavailable("down")
            if offset < len(thing.output):
                data = bytes(thing.output[offset:])
                cut = next((c for c in sorted(self.cuts) if offset < c <= offset + len(data)), None)
                if cut is not None and follow:
                    self.cuts.remove(cut)
                    if cut > offset:
                        yield data[: cut - offset]
                    raise BackendUnavailable(f"cut at byte {cut}")
                offset += len(data)
                yield data
                continue
            if not follow or thing.end is not None or handle.name not in self.things:
                return
            await thing.changed.wait()

    async def cancel(self, handle: Handle) -> None:
        self.cancels.append(handle.name)
        thing = self.things.pop(handle.name, None)
        if thing is not None:
            thing.end = thing.end or End(kind=EndKind.CANCELLED)
            thing.poke()

    async def list_managed(self, instance: str) -> list[Managed]:
        return [
            Managed(
                handle=Handle(backend=self.name, name=name, engine_id=f"id-{name}"),
                labels=thing.spec.all_labels(),
                running=thing.end is None,
            )
            for name, thing in self.things.items()
            if thing.spec.identity.instance == instance
        ]
