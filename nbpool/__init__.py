"""nbpool: a pool of pre-started worker kernels for notebooks.

``%load_ext nbpool`` in a notebook, or ``nbpool.Pool`` from Python. The
documentation in ``docs/`` has the user guide and the references; the lease
contract is the docstring of :mod:`nbpool.core.coordinator`.

Only the names in ``__all__`` are the API, plus two modules:
:mod:`nbpool.interfaces` (what a worker kernel and a backend must offer, as
Protocols) and :mod:`nbpool.testing` (``FakeBackend``: a pool without
processes, ``Pool(backend=FakeBackend())``, for tests of code that drives a
pool). The subpackages (``core``, ``kernels``, ``fork``, ``kept``,
``slurm``, ``mapping``, ``notebook``) and other modules are internals that
may change between releases (their ``__init__`` docstrings are the module
map, for contributors).
"""

from importlib import metadata as _metadata

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

try:
    # One source: labextension/package.json, through the wheel's metadata.
    __version__ = _metadata.version("nbpool")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"


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
