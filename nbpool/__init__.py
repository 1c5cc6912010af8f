"""nbpool: a pool of pre-started worker kernels for notebooks.

``%load_ext nbpool`` in a notebook, or ``nbpool.Pool`` from Python. See the
README for the magics, and :mod:`nbpool.core.coordinator` for the lease contract.

Besides ``__all__``, two modules are public: :mod:`nbpool.interfaces` (what
a worker kernel and a backend must offer, as Protocols) and
:mod:`nbpool.testing` (``FakeBackend``: a pool without processes, for tests
of code that drives a pool, as ``Pool(backend=FakeBackend())``).
"""

from .core.lease import Lease
from .errors import (
    AttachFailed,
    ExecutionTimeout,
    InvalidConfig,
    LeaseReleased,
    LeaseTimeout,
    NbpoolError,
    PoolClosed,
    PoolInUse,
    TaskFailed,
    TransferError,
    UnknownKernel,
    WorkerDied,
    WorkerStartFailed,
    WorkerUnavailable,
)
from .pool import ExecutionFuture, Pool
from .result import ExecutionResult, RemoteError
from .status import PoolStatus

__version__ = "0.1.0"


def load_ipython_extension(shell) -> None:
    """``%load_ext nbpool``: the magics (see :mod:`nbpool.notebook.magics`)."""
    from .notebook.magics import load_ipython_extension as load

    load(shell)


def unload_ipython_extension(shell) -> None:
    """``%unload_ext nbpool``: shut the pool down and remove the magics."""
    from .notebook.magics import unload_ipython_extension as unload

    unload(shell)


__all__ = [
    "AttachFailed",
    "ExecutionFuture",
    "ExecutionResult",
    "ExecutionTimeout",
    "InvalidConfig",
    "Lease",
    "LeaseReleased",
    "LeaseTimeout",
    "NbpoolError",
    "Pool",
    "PoolClosed",
    "PoolInUse",
    "PoolStatus",
    "RemoteError",
    "TaskFailed",
    "TransferError",
    "UnknownKernel",
    "WorkerDied",
    "WorkerStartFailed",
    "WorkerUnavailable",
]
