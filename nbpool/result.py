"""What one execution on a worker produced."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class RemoteError:
    """An exception raised by user code on the worker."""

    ename: str
    evalue: str
    traceback: list[str]

    def __str__(self) -> str:
        return f"{self.ename}: {self.evalue}"

    def text(self) -> str:
        """The worker's traceback as plain text (terminal colours removed)."""
        return _ANSI.sub("", "\n".join(self.traceback))


@dataclass
class ExecutionResult:
    """The outcome of one ``execute_request`` on a worker.

    Attributes
    ----------
    status : str
        ``"ok"``, ``"error"`` (user code raised) or ``"aborted"``.
    outputs : list of dict
        nbformat-style output dicts, in the order the worker sent them, with
        ``clear_output`` and ``update_display_data`` already applied.
    stdout, stderr : str
        Everything the code printed to each stream (also what a later
        ``clear_output`` removed from ``outputs``).
    result : str or None
        ``text/plain`` of the ``execute_result``, if the code produced one.
    error : RemoteError or None
        The user-code exception, when ``status == "error"``.
    session_reset : str or None
        Set when this session's earlier state was lost before this execution
        (worker died, was recycled, or the session was evicted): says why.
    """

    status: str
    outputs: list[dict] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""
    result: str | None = None
    error: RemoteError | None = None
    worker_id: str = ""
    session: str | None = None
    execution_count: int | None = None
    duration: float = 0.0
    session_reset: str | None = None

    @property
    def ok(self) -> bool:
        """True when the code ran to completion without raising."""
        return self.status == "ok"

    def __repr__(self) -> str:
        detail = f" error={self.error}" if self.error else ""
        return (
            f"<ExecutionResult {self.status} worker={self.worker_id} "
            f"session={self.session!r} [{self.execution_count}] "
            f"{self.duration * 1000:.1f} ms{detail}>"
        )
