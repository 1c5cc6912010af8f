"""The exceptions nbpool raises.

Every error a user can cause or meet derives from :class:`NbpoolError` and
carries a one-line message that says what happened and what to do about it.
An exception raised by *user code* on a worker is not a pool error: it comes
back as ``ExecutionResult.ok is False`` with ``ExecutionResult.error`` filled.
"""

from __future__ import annotations


class NbpoolError(Exception):
    """Base class of every error raised by nbpool."""


class InvalidConfig(NbpoolError, ValueError):
    """A constructor argument or config value is out of range or mistyped."""


class UnknownKernel(NbpoolError, ValueError):
    """No kernelspec of that name is installed."""


class PoolClosed(NbpoolError):
    """The pool was shut down; it takes no more work."""


class LeaseTimeout(NbpoolError):
    """No worker became free within the lease timeout."""


class WorkerStartFailed(NbpoolError):
    """A worker kernel could not be started; carries the kernel's stderr tail.

    ``retry`` is False for a failure that would repeat the same way (a
    preload that raises): the pool then does not retry the start.
    """

    def __init__(self, message: str, stderr_tail: str = "", *, retry: bool = True) -> None:
        super().__init__(message)
        self.stderr_tail = stderr_tail
        self.retry = retry


class AttachFailed(WorkerStartFailed):
    """A running kernel could not be attached (bad connection file, no answer)."""


class WorkerDied(NbpoolError):
    """The worker was lost during the lease; the session's state is gone.

    ``outputs`` holds what the worker produced before it died.
    """

    def __init__(self, message: str, outputs: list | None = None) -> None:
        super().__init__(message)
        self.outputs = outputs or []


class ExecutionTimeout(NbpoolError):
    """The code ran past its timeout and was interrupted; the session survives."""

    def __init__(self, message: str, outputs: list | None = None) -> None:
        super().__init__(message)
        self.outputs = outputs or []


class PoolInUse(NbpoolError):
    """Another live pool is attached to the kept sessions of this pool name."""


class LeaseReleased(NbpoolError):
    """A lease was used after it had been released."""


class WorkerUnavailable(NbpoolError, LookupError):
    """No worker of that id can take the action: unknown, starting, or already replaced."""


class TransferError(NbpoolError, ValueError):
    """A variable could not be moved to or from a session; the message names it."""


class TaskFailed(NbpoolError):
    """A task of ``pool.map`` raised; ``index`` is its item's, ``error`` the worker's exception.

    ``error`` has ``.ename``, ``.evalue`` and ``.traceback`` (the worker's
    lines); the rest of the map was cancelled.
    """

    def __init__(self, message: str, index: int, error) -> None:
        super().__init__(message)
        self.index = index
        self.error = error
