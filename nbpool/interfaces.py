"""What the pool needs of a worker kernel and of a backend, written down.

Two :class:`typing.Protocol`\\ s, as httpcore writes down its connection and
network-backend interfaces (``_sync/interfaces.py``, ``_backends/base.py``):

- :class:`WorkerKernel`: one running kernel, as the coordinator, a lease,
  the heartbeats, the status and the kept sessions use it. Implemented by
  :class:`~nbpool.kernels.kernel.LocalKernel` (nbpool started it, also on
  Slurm), :class:`~nbpool.kernels.kernel.AttachedKernel` (someone else
  did), :class:`~nbpool.kept.kernel.KeptKernel` (an earlier pool did) and
  the test double :class:`~nbpool.testing.FakeKernel`.
- :class:`Backend`: where kernels come from (``Pool(backend=...)``).
  Implemented by :class:`~nbpool.launcher.Launcher` (jupyter_client
  kernels) and :class:`~nbpool.testing.FakeBackend`.

Every implementation has every member: the pool never probes for an
optional one. ``tests/unit/test_interfaces.py`` checks that the classes
above match these protocols, signatures included.

May import :mod:`nbpool.kernels.execution` (the sockets' type); nothing of the pool.
"""

from __future__ import annotations

import threading
from typing import Protocol

import zmq

from .kernels.execution import Channels


class WorkerKernel(Protocol):
    """One worker's kernel: what the pool reads of it and asks of it.

    Attributes
    ----------
    worker_id : str
        The pool's id of the worker it serves (re-set when a kept kernel is adopted).
    kernel_name : str
        Its kernelspec (or, attached, a label naming its connection file).
    pid : int or None
        Its process id on this machine; None when it has none here (attached,
        or run by a remote provisioner).
    attached : bool
        Someone else started it: nbpool never restarts, recycles or stops it.
    encrypted : bool
        Its sockets use CurveZMQ.
    started : str or None
        How its process began: ``"fork"``, ``"spawn"``, or None (not nbpool's).
    spawn_reason : str or None
        Why a fork server did not fork it, when one was asked to.
    channels : Channels
        Its shell, iopub and stdin sockets; they belong to the lease holder.
    """

    worker_id: str
    kernel_name: str
    pid: int | None
    attached: bool
    encrypted: bool
    started: str | None
    spawn_reason: str | None
    channels: Channels

    def poll(self) -> str | None:
        """Why the kernel is known gone (``"exited with code 1"``), or None.

        Called under the coordinator's lock: it must not block.
        """

    def interrupt(self) -> None:
        """Interrupt the code it runs (any thread)."""

    def shutdown(self, now: bool = False, close_channels: bool = True) -> None:
        """Stop it (an attached one: only disconnect); blocking.

        ``close_channels`` False leaves the sockets to a holder that never let go.
        """

    def connect_hb(self) -> zmq.Socket | None:
        """A heartbeat socket for the coordinator thread (called there), or None
        when the kernel has no heartbeat to ping (its :meth:`poll` is its health)."""

    def keep_record(self) -> dict | None:
        """What a later process needs to re-adopt it (None: it cannot be kept)."""

    def keep(self) -> None:
        """Its session is kept: nothing of this process stops it with this process."""

    def let_go(self) -> None:
        """Close our sockets and leave it running (its session is kept)."""

    def connection_info(self) -> dict | None:
        """Its ports, transport, HMAC and CurveZMQ keys, for sockets of another
        owner than the lease holder (completion from a session cell), or None
        when it has no sockets to connect to."""


class Backend(Protocol):
    """Where a pool's kernels come from (``Pool(backend=...)``).

    Attributes
    ----------
    closing : threading.Event
        Set when the pool starts closing: starts in flight give up.
    """

    closing: threading.Event

    def open(self) -> None:
        """Acquire what starts and attaches need (files, processes, sockets);
        called before the first of them, idempotent. Constructing a backend
        acquires nothing. Raises :class:`~nbpool.errors.PoolClosed` once closing."""

    def start(self, worker_id: str, kernel_name: str, start_timeout: float) -> WorkerKernel:
        """Start a kernel and wait until it is ready; blocking, any thread.

        Raises :class:`~nbpool.errors.WorkerStartFailed` (with the kernel's
        stderr) when it cannot, within ``start_timeout`` for the whole start,
        and, starting nothing, once ``closing`` is set. A start in flight
        when ``closing`` is set ends what it started before it raises.
        """

    def attach(
        self,
        worker_id: str,
        path: str,
        timeout: float,
        allow_insecure: bool,
        sshserver: str | None = None,
        sshkey: str | None = None,
    ) -> WorkerKernel:
        """Connect to a running kernel through its connection file; blocking.

        Raises :class:`~nbpool.errors.AttachFailed` when it cannot.
        """

    def pending_reason(self, worker_id: str) -> str | None:
        """Why a kernel being started is not running yet (a batch queue's word), or None."""

    def close(self) -> None:
        """Free what the backend owns, once the starts in flight ended; every kernel
        was stopped before."""
