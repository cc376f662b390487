"""How an attempt ended without success, as the step sees it: ``StepFailed`` (passable or not, the
attempt's and the step's status), from a library error (``classify``) or from its object's end
(``check_end``). The engine retries what can pass and records the rest (``steps.py``)."""

from __future__ import annotations

from ..domain.pipeline import Step
from ..domain.states import AttemptStatus, StepStatus
from ..errors import Conflict, GitError, MaoError, NotFound, Unavailable
from ..executors.seam import BackendRejected, ContainerSpec, End, EndKind


class StepFailed(Exception):
    """An attempt ended without success. ``passable``: the same attempt again may succeed (non-zero
    exit, timeout, stall, an engine's end such as a lost node, a backend or git remote away); a
    conflict, a missing tool or dataset, or a step its backend refuses will not pass by retrying."""

    def __init__(
        self,
        message: str,
        *,
        status: StepStatus = StepStatus.FAILED,
        attempt_status: AttemptStatus = AttemptStatus.FAILED,
        passable: bool = False,
        exit_code: int | None = None,
        image_id: str | None = None,
        end: End | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.attempt_status = attempt_status
        self.passable = passable
        self.exit_code = exit_code
        self.image_id = image_id
        self.end = end  # how its object ended, when it had one


def classify(exc: MaoError | BackendRejected) -> StepFailed:
    """A library-level error met during an attempt, as the step failure it means."""
    if isinstance(exc, BackendRejected):  # the backend will not run it as asked: no retry helps
        return StepFailed(f"backend {exc.backend} refused the step ({exc.field}): {exc.message}")
    passable = isinstance(exc, Unavailable | GitError | Conflict) and not isinstance(exc, NotFound)
    return StepFailed(exc.message, passable=passable)



def check_end(step: Step, end: End, spec: ContainerSpec) -> None:
    """StepFailed unless the object completed; every end but a cancel can pass (``End.retryable``:
    the tool's exit, timeout, stall and OOM, and the engine's node loss, missing image,
    unschedulable work and lost objects)."""
    if end.kind is EndKind.COMPLETED:
        return
    status, message = _ENDS[end.kind]
    detail = {
        EndKind.FAILED: f"exited with code {end.exit_code}",
        EndKind.TIMED_OUT: f"timed out after {spec.timeout:g} s",
        EndKind.STALLED: f"stalled: no output for {spec.stall_timeout or 0:g} s",
        EndKind.OOM_KILLED: "was killed at its memory limit"
        + (f" of {spec.limits.memory // 2**20} MiB" if spec.limits.memory else "")
        + " (out of memory)",
    }.get(end.kind, message)
    extra = f" ({end.message})" if end.message and end.kind is not EndKind.CANCELLED and end.message != detail else ""
    raise StepFailed(
        f"step {step.name} {detail}{extra}",
        attempt_status=status,
        passable=end.retryable,
        exit_code=end.exit_code,
        image_id=end.image_id,
        end=end,
    )


_ENDS: dict[EndKind, tuple[AttemptStatus, str]] = {
    EndKind.FAILED: (AttemptStatus.FAILED, AttemptStatus.FAILED.value),
    EndKind.OOM_KILLED: (AttemptStatus.OOM_KILLED, "was killed out of memory"),
    EndKind.TIMED_OUT: (AttemptStatus.TIMED_OUT, "timed out"),
    EndKind.STALLED: (AttemptStatus.STALLED, AttemptStatus.STALLED.value),
    EndKind.CANCELLED: (AttemptStatus.CANCELLED, "was cancelled"),
    EndKind.NODE_LOST: (AttemptStatus.NODE_LOST, "lost its node"),
    EndKind.IMAGE_UNAVAILABLE: (AttemptStatus.IMAGE_UNAVAILABLE, "could not get its image"),
    EndKind.UNSCHEDULABLE: (AttemptStatus.UNSCHEDULABLE, "was not scheduled in time"),
    EndKind.LOST: (AttemptStatus.LOST, "was lost by its backend"),
}
