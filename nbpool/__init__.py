"""nbpool: a pool of pre-started worker kernels for notebooks.

``%load_ext nbpool`` in a notebook, or ``nbpool.Pool`` from Python. See the
README for the magics, and :mod:`nbpool.coordinator` for the lease contract.
"""

from .errors import (
    ExecutionTimeout,
    InvalidConfig,
    LeaseReleased,
    LeaseTimeout,
    NbpoolError,
    PoolClosed,
    UnknownKernel,
    WorkerDied,
    WorkerStartFailed,
    WorkerUnavailable,
)
from .lease import Lease
from .pool import ExecutionFuture, Pool
from .result import ExecutionResult, RemoteError
from .status import PoolStatus

__version__ = "0.1.0"

__all__ = [
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
    "PoolStatus",
    "RemoteError",
    "UnknownKernel",
    "WorkerDied",
    "WorkerStartFailed",
    "WorkerUnavailable",
]
