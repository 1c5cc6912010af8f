"""The public entry point: :class:`Pool`.

``Pool`` is a traitlets ``Configurable``: every constructor argument is also a
config trait (``c.Pool.size = 8`` in ``ipython_config.py``). It validates its
settings, owns a :class:`~nbpool.launcher.Launcher` (where kernels come
from), a :class:`~nbpool.core.coordinator.Coordinator` (who holds which) and,
with ``keep_sessions``, a :class:`~nbpool.kept.adoption.Keeping` (its
kept-session methods delegate there), and offers the blocking, background
and lease-based ways to run code.

Constructing a pool acquires nothing: no thread, process, temp dir or
socket. :meth:`Pool.start`, or the first call that needs a worker (a lazy
start, or ``attach``), opens it.
"""

from __future__ import annotations

import atexit
import contextvars
import functools
import os
import threading
import weakref
from concurrent.futures import (
    CancelledError,
    Executor,
    Future,
    InvalidStateError,
    ThreadPoolExecutor,
)
from typing import Callable

from traitlets import (
    Bool,
    CaselessStrEnum,
    Dict,
    Float,
    Int,
    List,
    TraitError,
    Unicode,
    default,
)
from traitlets.config import LoggingConfigurable

from . import checks
from .core.coordinator import Coordinator
from .core.lease import Lease
from .core.records import Settings, Waiter
from .errors import InvalidConfig, PoolClosed
from .interfaces import Backend
from .kept.adoption import Keeping
from .kernels.execution import OutputHook, StdinHandler
from .kernels.ssh import check_server
from .launcher import Launcher, LaunchSettings, check_kernel_name
from .mapping import progress as nbprogress
from .mapping.run import MapRun
from .result import ExecutionResult
from .status import PoolStatus

#: ``max_size`` when none is set: people open sessions freely, and ``size``
#: is how many workers are kept warm, not a cap.
DEFAULT_MAX_SIZE = 8

#: ``size_limit`` when none is set: this many workers per CPU, at least
#: :data:`SIZE_LIMIT_FLOOR`. Well above any pool a machine runs well, far
#: below a typo's extra zeros.
SIZE_LIMIT_PER_CPU, SIZE_LIMIT_FLOOR = 8, 16


class Pool(LoggingConfigurable):
    """A pool of pre-started worker kernels with session affinity.

    Every trait below is also a constructor argument. ``backend`` (not a
    trait) is where kernels come from, a :class:`~nbpool.interfaces.Backend`:
    by default a :class:`~nbpool.launcher.Launcher` (jupyter_client kernels,
    with a reaper process); tests pass :class:`nbpool.testing.FakeBackend`
    (as httpcore injects a network backend). Constructing acquires nothing:
    the backend is opened by the first start or attach.

    Examples
    --------
    >>> with nbpool.Pool(size=2) as pool:
    ...     pool.execute("x = 21", session="etl")
    ...     pool.execute("x * 2", session="etl").result
    '42'
    """

    size = Int(2, help="Workers started by start() and kept warm.").tag(config=True)
    min_size = Int(
        None, allow_none=True, help="Fewest workers kept when idle ones are culled (default: size)."
    ).tag(config=True)
    max_size = Int(
        None,
        allow_none=True,
        help="Most workers the pool grows to for new sessions (default: max(size, 8)).",
    ).tag(config=True)
    size_limit = Int(
        help="Upper bound of size, min_size and max_size (also of resize() and the Lab panel): "
        "a larger one is refused at once as a likely typo. Default: 8 per CPU, at least 16.",
    ).tag(config=True)
    kernel_name = Unicode("python3", help="Kernelspec of the workers.").tag(config=True)
    lease_timeout = Float(30.0, help="Seconds to wait for a free worker.").tag(config=True)
    exec_timeout = Float(
        None, allow_none=True, help="Default seconds one execution may run (None: no limit)."
    ).tag(config=True)
    start_timeout = Float(60.0, help="Seconds a kernel may take to become ready.").tag(config=True)
    interrupt_grace = Float(
        5.0, help="Seconds an interrupted execution may take to stop before a restart."
    ).tag(config=True)
    heartbeat_interval = Float(1.0, help="Seconds between heartbeat pings.").tag(config=True)
    heartbeat_timeout = Float(
        3.0, help="Seconds without a heartbeat answer before a worker counts as dead."
    ).tag(config=True)
    max_executions = Int(0, help="Recycle a worker after this many executions (0: never).").tag(
        config=True
    )
    idle_timeout = Float(0.0, help="Recycle a worker idle this many seconds (0: never).").tag(
        config=True
    )
    evict_idle_sessions = Bool(
        False, help="When full, end the least recently used idle session for a new one."
    ).tag(config=True)
    transport = CaselessStrEnum(["tcp", "ipc"], "tcp", help="ZMQ transport of local workers.").tag(
        config=True
    )
    transport_encryption = CaselessStrEnum(
        ["auto", "required", "disabled"],
        "auto",
        help="CurveZMQ encryption (jupyter_client): auto encrypts kernels that support it.",
    ).tag(config=True)
    allow_insecure_transport = Bool(
        False,
        help="Allow attaching non-loopback kernels without CurveZMQ (plain text; warns once).",
    ).tag(config=True)
    attach_timeout = Float(10.0, help="Seconds an attached kernel has to answer.").tag(config=True)
    connection_files = Dict(
        Unicode(),
        help="Running kernels to attach at start(): {session name: connection file path}.",
    ).tag(config=True)
    sshserver = Unicode(
        "",
        help="SSH server ([user@]host[:port]) through which the connection_files kernels "
        "are reached (as jupyter console's --ssh); empty: connect directly.",
    ).tag(config=True)
    sshkey = Unicode(
        "", help="SSH private key file for sshserver; empty: ssh's own configuration."
    ).tag(config=True)
    preload = Unicode(
        "",
        help="Code run on every new python worker before it counts as ready (e.g. imports); "
        "its output is not shown. A preload that raises fails the start (not retried).",
    ).tag(config=True)
    env = Dict(Unicode(), help="Extra environment variables of the workers.").tag(config=True)
    cwd = Unicode(
        None, allow_none=True, help="Working directory of the workers (default: this process's)."
    ).tag(config=True)
    fork_server = CaselessStrEnum(
        ["auto", "never"],
        "auto",
        help="auto: fork python workers on Linux from a template that ran the preload once; "
        "never: always spawn.",
    ).tag(config=True)
    name = Unicode(
        help="The pool's name: a later pool of the same name re-adopts its kept sessions "
        "(default: the notebook's path when Jupyter says it, else 'default')."
    ).tag(config=True)
    keep_sessions = Bool(
        False,
        help="Leave the sessions' workers running when this process ends without shutdown() "
        "(kernel restart, exit, crash), for a later pool of the same name to re-adopt.",
    ).tag(config=True)
    keep_for = Float(
        3600.0, help="Seconds a kept session may sit with no pool attached before it is stopped."
    ).tag(config=True)
    ipykernel_args = List(
        Unicode(),
        # The history database costs ~0.7 ms a run. ipykernel sleeps 0.5 ms
        # before each reply so outputs beat it to the frontend; nbpool waits
        # for the iopub idle status, which comes after every output, so the
        # sleep only costs time (~0.9 ms a run here).
        ["--HistoryManager.enabled=False", "--Kernel._execute_sleep=0"],
        help="Extra arguments for ipykernel workers (tuning: see the design notes in docs/).",
    ).tag(config=True)

    @default("size_limit")
    def _default_size_limit(self) -> int:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(SIZE_LIMIT_FLOOR, SIZE_LIMIT_PER_CPU * (cpus or 1))

    @default("name")
    def _default_name(self) -> str:
        # Jupyter Server tells a notebook's kernel which notebook it runs.
        return os.environ.get("JPY_SESSION_NAME") or "default"

    def __init__(
        self, size: int | None = None, kernel_name: str | None = None, *, backend=None, **kwargs
    ) -> None:
        if size is not None:
            kwargs["size"] = size
        if kernel_name is not None:
            kwargs["kernel_name"] = kernel_name
        try:
            super().__init__(**kwargs)
        except TraitError as exc:
            raise InvalidConfig(f"invalid Pool setting: {_first_line(exc)}") from None
        settings = self._validated()
        check_kernel_name(self.kernel_name)
        # Nothing here starts a thread or process or opens a file or socket
        # (keep_sessions only makes sure the kept-sessions directory exists): _open() does.
        # The launcher's settings come from the same traits, now: neither changes
        # in place (a resize hands the coordinator new Settings).
        self._launcher: Backend = (
            backend if backend is not None else Launcher(LaunchSettings.of(self))
        )
        self._coordinator = Coordinator(settings, self._launcher.start)
        self._keeping = (
            Keeping(self.name, self.keep_for, self._coordinator) if self.keep_sessions else None
        )
        self._jobs: ThreadPoolExecutor | None = None  # made by _open()
        self._opened = False
        self._shutdown = False
        self._open_lock = threading.Lock()  # guards _opened and _shutdown: open against close
        self._started = False
        self._start_lock = threading.Lock()
        ref = weakref.ref(self)
        # Registered by _open(): at interpreter exit (a kernel restart or exit)
        # an open pool shuts down, and a keeping one detaches.
        self._atexit = lambda: (p := ref()) is not None and p._at_exit()

    def _validated(self) -> Settings:
        """The traits checked, as the one frozen Settings the coordinator acts on."""
        s = self
        limit = checks.size(s.size_limit, "size_limit", minimum=1)
        checks.size(s.size, "size", limit=limit)
        for name in ("min_size", "max_size"):  # their lower bounds: the relations below
            if getattr(s, name) is not None:
                checks.within_limit(getattr(s, name), name, limit)
        for name in ("lease_timeout", "start_timeout", "interrupt_grace", "heartbeat_interval"):
            checks.timeout(getattr(s, name), name, allow_none=False)
        checks.timeout(s.exec_timeout, "exec_timeout")
        checks.size(s.max_executions, "max_executions")
        min_size = s.size if s.min_size is None else s.min_size
        default_max = max(s.size, min(DEFAULT_MAX_SIZE, limit))
        max_size = default_max if s.max_size is None else s.max_size
        relations = [
            (
                0 <= min_size <= s.size,
                f"min_size must be between 0 and size ({s.size}), got {min_size}",
            ),
            (max_size >= s.size, f"max_size must be >= size ({s.size}), got {max_size}"),
            (
                s.heartbeat_timeout > s.heartbeat_interval,
                f"heartbeat_timeout must exceed heartbeat_interval ({s.heartbeat_interval}), "
                f"got {s.heartbeat_timeout}",
            ),
            (s.idle_timeout >= 0, f"idle_timeout must be >= 0 seconds, got {s.idle_timeout}"),
            (not s.sshkey or s.sshserver, "sshkey is for the SSH login: set sshserver too"),
            (s.keep_for > 0, f"keep_for must be > 0 seconds, got {s.keep_for}"),
        ]
        for ok, message in relations:
            if not ok:
                raise InvalidConfig(message)
        if s.sshserver:
            check_server(s.sshserver)
        checks.pool_name(s.name)
        return Settings.of(self, min_size=min_size, max_size=max_size)

    # -- lifecycle ---------------------------------------------------------

    def start(self, wait: bool = True) -> "Pool":
        """Start ``size`` workers; with ``wait``, block until they are ready.

        With ``keep_sessions``, the kept sessions of this pool's ``name`` are
        re-adopted first (state intact; :attr:`readopted` says which), and
        only the rest of ``size`` is started.

        Raises
        ------
        WorkerStartFailed
            A worker failed to start (the pool keeps retrying in the background).
        PoolInUse
            With ``keep_sessions``: another live pool holds this name's sessions.
        """
        self._check_open()
        with self._start_lock:  # a lazy start from several threads starts once
            if not self._started:
                self._open()
                adopted = 0
                if self._keeping is not None:
                    adopted = self._keeping.adopt(
                        self.attach_timeout, self._launcher.runtime.context
                    )
                size = self._coordinator.settings.size
                self._initial = self._coordinator.start(max(0, size - adopted))
                self._started = True
            for session, path in self.connection_files.items():
                self.attach(
                    path,
                    session=session,
                    sshserver=self.sshserver or None,
                    sshkey=self.sshkey or None,
                )
        if wait:
            self._coordinator.wait_started(self._initial, self.start_timeout + 5)
        return self

    def shutdown(self) -> None:
        """Stop every worker (kept sessions' too) and remove the pool's files; idempotent.

        A pool that was never started has nothing to stop: it is only closed.
        """
        self._close(keep=False)

    def detach(self) -> None:
        """Close this pool and leave its sessions' workers running, for a later pool.

        A later ``Pool(name=..., keep_sessions=True).start()`` (in this or
        any process of this user) re-adopts them with their state; what
        they print meanwhile (a ``--bg`` cell still running keeps running)
        is journaled for :meth:`replay`. Workers bound to no session are
        stopped. A kept session unattached for ``keep_for`` seconds is
        stopped.

        Raises
        ------
        InvalidConfig
            The pool does not keep sessions (``keep_sessions=False``).
        """
        if self._keeping is None:
            raise InvalidConfig(
                "this pool does not keep sessions: create it with keep_sessions=True "
                "(%pool start --keep) to detach; shutdown() stops it"
            )
        self._close(keep=True)

    def _open(self) -> None:
        """Acquire what running code needs, once: the backend (files, reaper,
        sockets), the job executor, the exit hook. The coordinator's threads
        start with its first use."""
        with self._open_lock:
            self._check_open()
            if self._opened:
                return
            self._launcher.open()
            # Jobs run only once granted a worker, so one thread per worker suffices;
            # threads are made lazily, and resize() may raise max_size later.
            self._jobs = ThreadPoolExecutor(max_workers=64, thread_name_prefix="nbpool-job")
            atexit.register(self._atexit)
            self._opened = True

    def _close(self, keep: bool) -> None:
        """The close sequence of :meth:`shutdown` and, with ``keep``, of :meth:`detach`.

        With ``keep`` the coordinator leaves the live local workers bound to
        sessions running, and :class:`Keeping` records them for a later pool
        (see :meth:`Keeping.detach <nbpool.kept.adoption.Keeping.detach>`);
        without it every worker is stopped and the kept records are removed.
        """
        with self._open_lock:
            if self._shutdown:
                return
            self._shutdown = True
        atexit.unregister(self._atexit)
        self._launcher.closing.set()
        if keep:
            self._keeping.detach(functools.partial(self._coordinator.close, keep=True))
        else:
            self._coordinator.close()
            if self._keeping is not None:
                self._keeping.shutdown()
        if self._jobs is not None:
            self._jobs.shutdown(wait=False)  # queued jobs fail fast: the pool is closed
        self._launcher.close()

    def _at_exit(self) -> None:
        # A keeping pool that holds its sessions' lock detaches; any other shuts down.
        self._close(keep=self._keeping is not None and self._keeping.store.locked)

    @property
    def closed(self) -> bool:
        """Whether the pool was shut down or detached."""
        return self._shutdown

    def __enter__(self) -> "Pool":
        try:
            return self.start()
        except BaseException:
            self.shutdown()  # __exit__ will not run
            raise

    def __exit__(self, *exc_info) -> None:
        self.shutdown()

    # -- kept sessions (keep_sessions=True; see nbpool.kept.adoption) --------

    @property
    def readopted(self) -> list[dict]:
        """The kept sessions ``start()`` found: ``session``, ``intact`` (its state is
        there), ``waiting`` / ``bytes`` (output journaled meanwhile), ``reason`` (why
        its state was lost)."""
        return list(self._keeping.readopted) if self._keeping is not None else []

    def replay(self, session: str | None = None) -> list[dict]:
        """The outputs of ``session`` no cell showed (nbformat dicts): printed while
        no pool was attached, or by a ``--bg`` cell an earlier pool started.

        They are taken out of the journal (a second call returns only what
        came since). At most the last 10 MB per session are kept; dropped
        output is said first, as a stderr stream.
        """
        self._check_open()
        if self._keeping is None:
            raise InvalidConfig("replay is for kept sessions: this pool has keep_sessions=False")
        if not self._started:
            self.start(wait=False)
        return self._keeping.replay(checks.session_name(session))

    def waiting_output(self, session: str | None = None) -> tuple[int, int]:
        """(outputs, bytes) journaled for ``session`` and not yet replayed."""
        if self._keeping is None or not self._started:
            return 0, 0
        return self._keeping.waiting(checks.session_name(session))

    # -- running code ------------------------------------------------------

    def lease(
        self, session: str | None = None, timeout: float | None = None, *, kernel: str | None = None
    ) -> Lease:
        """Take a worker for ``session`` (blocking up to ``timeout``, the lease timeout).

        Use it as a context manager; the lease is released on every path.

        Raises
        ------
        LeaseTimeout, WorkerStartFailed, PoolClosed
        """
        session, kernel = self._request_args(session, kernel, timeout)
        waiter = self._coordinator.request(session, kernel)
        lease = self._coordinator.wait(waiter, self.lease_timeout if timeout is None else timeout)
        self._leased(lease)
        return lease

    def _leased(self, lease: Lease) -> None:
        if self._keeping is not None:
            try:
                self._keeping.on_lease(lease)  # the session is kept before it runs anything
            except BaseException:
                lease.release()
                raise

    def execute(
        self,
        code: str,
        session: str | None = None,
        timeout: float | None = None,
        *,
        lease_timeout: float | None = None,
        kernel: str | None = None,
        on_output: OutputHook | None = None,
        stdin: StdinHandler | None = None,
        output_limit: int | None = None,
    ) -> ExecutionResult:
        """Run ``code`` in ``session`` and wait for the result.

        ``timeout`` is the exec timeout (default ``exec_timeout``);
        ``lease_timeout`` covers only the wait for a worker.

        Parameters
        ----------
        output_limit : int, optional
            Characters of stream text the result keeps (``stdout``,
            ``stderr`` and the stream outputs); the oldest text is dropped
            first, and the result starts with a line saying how much went.
            None (the default) keeps everything; ``on_output`` gets every
            output either way. See :meth:`~nbpool.core.lease.Lease.execute`.
        """
        _check_code(code)
        with self.lease(session, lease_timeout, kernel=kernel) as lease:
            return lease.execute(
                code,
                self._exec_timeout(timeout),
                on_output=on_output,
                stdin=stdin,
                output_limit=output_limit,
            )

    def submit(
        self,
        code: str,
        session: str | None = None,
        timeout: float | None = None,
        *,
        lease_timeout: float | None = None,
        kernel: str | None = None,
        on_output: OutputHook | None = None,
        output_limit: int | None = None,
    ) -> "ExecutionFuture":
        """Queue ``code`` for ``session`` and return a Future of its result.

        The request takes its place in the session's queue now, so futures of
        one session run in submission order. No thread blocks while it
        queues; it runs (in a copy of the caller's context, so output routing
        by context variables keeps working) once a worker is granted.
        ``lease_timeout`` (default: the pool's) bounds only the wait of a
        session that has no worker yet; queueing behind earlier work of the
        same session is never cut short. ``output_limit`` bounds the stream
        text the result keeps, as for :meth:`execute`.
        """
        _check_code(code)
        session, kernel = self._request_args(session, kernel, lease_timeout)
        timeout = self._exec_timeout(timeout)
        if output_limit is not None:  # a bad one fails here, not in the future
            output_limit = checks.size(output_limit, "output_limit")

        def run(lease: Lease) -> ExecutionResult:
            self._leased(lease)
            return lease.execute(code, timeout, on_output=on_output, output_limit=output_limit)

        return ExecutionFuture(
            functools.partial(
                self._coordinator.request,
                session,
                kernel,
                timeout=self.lease_timeout if lease_timeout is None else lease_timeout,
            ),
            run,
            self._jobs,
            self._coordinator.withdraw,
        )

    def map(
        self,
        fn,
        iterable,
        chunksize: int | None = None,
        timeout: float | None = None,
        *,
        progress: bool | None = None,
    ) -> list:
        """``[fn(x) for x in iterable]``, computed on the pool's session-free workers.

        ``fn`` and the items travel with cloudpickle (lambdas and closures
        too), the results come back the same way, large NumPy buffers out of
        band. No session's state is touched; the workers stay warm. Up to
        ``size`` workers are used (started up to ``max_size`` when sessions
        hold the others). ``chunksize`` (default: about four chunks per
        worker) items go in one execution. ``timeout`` covers the whole call.
        ``progress``: a progress bar (default: in a notebook only). See
        :mod:`nbpool.mapping.run`.

        Raises
        ------
        TaskFailed
            A task raised: ``.index`` is its item's, ``.error`` the worker's
            exception; the rest was cancelled.
        WorkerDied
            A chunk lost its worker twice (each loss is retried once).
        ExecutionTimeout
            ``timeout`` passed; the workers were interrupted.
        LeaseTimeout
            No worker free of sessions exists or can be started.
        """
        run = self._map(fn, iterable, chunksize, timeout, progress, "pool.map")
        return [value for chunk in run.chunks() for value in chunk]

    def imap(
        self,
        fn,
        iterable,
        chunksize: int | None = None,
        timeout: float | None = None,
        *,
        progress: bool | None = None,
    ):
        """Like :meth:`map`, but an iterator that yields results in order as they arrive.

        The work starts at once (the iterable is read at once); leaving the
        loop early cancels the rest.
        """
        run = self._map(fn, iterable, chunksize, timeout, progress, "pool.imap")
        return (value for chunk in run.chunks() for value in chunk)

    def _map(self, fn, iterable, chunksize, timeout, progress, label: str) -> MapRun:
        self._check_open()
        items = list(iterable)
        if not self._started and items:
            self.start(wait=False)
        display = functools.partial(nbprogress.make, progress, len(items), label)
        return MapRun(
            self._coordinator,
            self._jobs,  # None only for no items: then no job runs
            fn,
            items,
            chunksize,
            timeout,
            display,
            kernel_name=self.kernel_name,
            interrupt_grace=self.interrupt_grace,
            workers=self.size,
        )

    def attach(
        self,
        connection_file: str,
        session: str,
        *,
        sshserver: str | None = None,
        sshkey: str | None = None,
    ) -> str:
        """Adopt a running kernel (another machine, a batch job) for ``session``.

        nbpool never stops or signals a kernel it did not start: shutdown and
        end_session only disconnect. If it dies, its session gets
        :class:`WorkerDied` and is not restarted. Kernels off this machine
        must use CurveZMQ unless ``allow_insecure_transport`` is set, or be
        reached through ``sshserver`` (``[user@]host[:port]``, with an
        optional private key file ``sshkey``): an SSH tunnel
        (:mod:`nbpool.kernels.ssh`) then forwards its ports here, and the login must
        work without prompts.

        Returns the new worker's id.

        Raises
        ------
        AttachFailed
            The file is missing, unreadable, not JSON, plaintext over a
            network, the SSH login or tunnel failed, or its kernel does not
            answer (dead, wrong key).
        """
        self._check_open()
        if session is None:
            raise InvalidConfig("attach needs a session name for the kernel")
        session = checks.session_name(session)
        if sshserver is not None:
            check_server(sshserver)
        if sshkey is not None and (not isinstance(sshkey, str) or not sshkey.strip()):
            raise InvalidConfig(f"sshkey must be a key file path or None, got {sshkey!r}")
        if sshkey is not None and sshserver is None:
            raise InvalidConfig("sshkey is for the SSH login: pass sshserver too")
        self._open()  # the kernel's sockets and an SSH tunnel need the launcher's runtime
        worker = self._coordinator.attach(
            lambda wid: self._launcher.attach(
                wid,
                connection_file,
                self.attach_timeout,
                self.allow_insecure_transport,
                sshserver,
                sshkey,
            ),
            session,
        )
        return worker.id

    def end_session(self, session: str | None) -> bool:
        """Unbind ``session``; its worker is replaced, never reused dirty.

        Returns False when no such session exists.
        """
        self._check_open()
        ended = self._coordinator.end_session(checks.session_name(session))
        if ended and self._keeping is not None:
            self._keeping.record()
        return ended

    def interrupt(self, worker_id: str) -> bool:
        """Interrupt what worker ``worker_id`` is running (e.g. from a UI).

        Returns False when the worker was idle (nothing to interrupt).

        Raises
        ------
        WorkerUnavailable
            No such worker, or it is dead or being replaced.
        """
        self._check_open()
        return self._coordinator.interrupt(worker_id)

    def restart_worker(self, worker_id: str) -> None:
        """Replace worker ``worker_id`` by a fresh kernel (e.g. from a UI).

        The session bound to it loses its state and is told so on its next
        execution. A worker running code is stopped at once: its caller gets
        :class:`~nbpool.errors.WorkerDied`. A failed worker retries its start now.

        Raises
        ------
        WorkerUnavailable
            No such worker, or it is starting or already being replaced.
        PoolClosed
        """
        self._check_open()
        self._coordinator.restart_worker(worker_id)

    def resize(self, size: int) -> None:
        """Keep ``size`` workers warm from now on.

        Growing starts workers at once (``max_size`` rises with ``size``).
        Shrinking stops free workers at once; workers bound to sessions stay
        until their sessions end. ``min_size`` follows ``size`` unless it was
        configured lower.

        Raises
        ------
        InvalidConfig
            ``size`` is not a whole number between 1 and ``size_limit`` (the pool
            is left unchanged).
        PoolClosed
        """
        self._check_open()
        s = self._coordinator.settings
        try:
            size = checks.size(size, "pool size", minimum=1, limit=s.size_limit)
        except InvalidConfig as exc:
            hint = "; use pool.shutdown() to stop the pool" if size == 0 else ""
            raise InvalidConfig(f"{exc}{hint}") from None
        min_size = size if s.min_size == s.size else min(s.min_size, size)
        self._coordinator.resize(size, min_size, max(s.max_size, size), start=self._started)
        self.size = size  # the trait tells the truth too

    # -- reporting ---------------------------------------------------------

    def status(self) -> PoolStatus:
        """A snapshot of workers, sessions, queue and counters (no secrets)."""
        s = self._coordinator.settings
        return PoolStatus.from_snapshot(
            self._coordinator.snapshot(),
            pending_reason=self._launcher.pending_reason,
            kept=self._keeping.kept if self._keeping is not None else frozenset(),
            keep_sessions=self.keep_sessions,
            kernel_name=self.kernel_name,
            size=s.size,
            min_size=s.min_size,
            max_size=s.max_size,
        )

    def _connection_for(self, session: str) -> dict | None:
        """The connection info of ``session``'s worker while it is ready and alive, else None.

        For :mod:`nbpool.notebook.completion`, which opens sockets of its own on
        that worker (never the lease holder's). No I/O and never raises: a
        session without a worker, a starting, dead or closed one is None.
        """
        if self._shutdown:
            return None
        info = self._coordinator.sessions.get(session)  # lock-free read
        if info is None or info.worker_id is None:
            return None
        kernel = self._coordinator.ready_kernels().get(info.worker_id)
        if kernel is None or kernel.poll():
            return None
        return kernel.connection_info()

    def widget(self, interval: float = 0.25):
        """A live ipywidgets view of :meth:`status`, updated every ``interval`` s.

        See :mod:`nbpool.notebook.widget` (imported here so that ipywidgets loads only
        when a widget is asked for).
        """
        from .notebook.widget import PoolWidget

        return PoolWidget(self, interval=interval)

    def __repr__(self) -> str:
        if self._shutdown:
            return "<nbpool.Pool closed>"
        return f"<nbpool.Pool {self.status().summary()}>"

    # -- helpers -----------------------------------------------------------

    def _check_open(self) -> None:
        if self._shutdown:
            raise PoolClosed("the pool was shut down; create a new nbpool.Pool to run more code")

    def _request_args(self, session, kernel, timeout) -> tuple[str, str]:
        self._check_open()
        session = checks.session_name(session)
        checks.timeout(timeout, "lease timeout")
        if kernel is not None:
            check_kernel_name(kernel)
            info = self._coordinator.sessions.get(session)  # lock-free read
            if info is not None and info.worker_id is not None and info.kernel_name != kernel:
                raise InvalidConfig(
                    f"session {session!r} runs kernel {info.kernel_name!r}; end it first "
                    f"(pool.end_session or %pool end {session}) to run it on {kernel!r}"
                )
        if not self._started:
            self.start(wait=False)
        return session, (kernel or self.kernel_name)

    def _exec_timeout(self, timeout: float | None) -> float | None:
        return checks.timeout(self.exec_timeout if timeout is None else timeout)


class ExecutionFuture(Future):
    """A :class:`~concurrent.futures.Future` of an :class:`ExecutionResult`.

    ``cancel()`` works while queued (the request leaves the queue) *and*
    while running (the worker is interrupted; ``result()`` then raises
    :class:`~concurrent.futures.CancelledError`).

    Made by :meth:`Pool.submit`, which passes what it needs; constructing
    it queues the request.

    Parameters
    ----------
    request : callable
        ``request(on_settled) -> Waiter``: queues the lease request (the
        coordinator's ``request``, session and kernel bound in).
    run : callable
        ``run(lease) -> ExecutionResult``: the execution, on a job thread,
        in a copy of the caller's context (output routing by context
        variables keeps working).
    jobs : concurrent.futures.Executor
        Where ``run`` goes once a worker is granted.
    withdraw : callable
        ``withdraw(waiter, error)``: takes a queued request back (the
        coordinator's).
    """

    def __init__(
        self,
        request: Callable[[Callable[[Waiter], None]], Waiter],
        run: Callable[[Lease], ExecutionResult],
        jobs: Executor,
        withdraw: Callable[[Waiter, BaseException], None],
    ) -> None:
        super().__init__()
        self._run, self._jobs, self._withdraw = run, jobs, withdraw
        self._context = contextvars.copy_context()
        self._lease: Lease | None = None
        self._cancel_requested = False
        self._waiter = request(self._settled)

    @property
    def session_reset(self) -> str | None:
        """Why the session's state was reset before this ran, or None when it
        was not (or no worker was granted yet)."""
        lease = self._lease
        return lease.session_reset if lease is not None else None

    def cancel(self) -> bool:
        if self.done():
            return False
        self._cancel_requested = True
        if super().cancel():  # still queued: the settle callback sees it
            self._withdraw(self._waiter, CancelledError())
            self.set_running_or_notify_cancel()  # wakes wait() and as_completed()
            return True
        lease = self._lease
        if lease is not None and not lease.released:
            lease.interrupt()
        return True

    def _settled(self, waiter: Waiter) -> None:
        # cancel() may win the race at any point here: never raise into
        # the thread that settled the request (a releaser, the coordinator).
        try:
            if waiter.error is not None:
                self.set_exception(waiter.error)
                return
            running = self.set_running_or_notify_cancel()
        except (RuntimeError, InvalidStateError):  # cancelled meanwhile
            running = False
        if running:
            self._jobs.submit(self._context.run, self._execute, waiter.lease)
        elif waiter.lease is not None:
            waiter.lease.release()

    def _execute(self, lease: Lease) -> None:
        self._lease = lease
        res = error = None
        with lease:  # released before the future completes: callbacks may lease it
            if self._cancel_requested:
                error = CancelledError()
            else:
                try:
                    res = self._run(lease)
                except BaseException as exc:  # delivered through the future
                    error = exc
        if error is None and self._cancel_requested:
            error = CancelledError()
        if error is not None:
            self.set_exception(error)
        else:
            self.set_result(res)


def _check_code(code: object) -> None:
    if not isinstance(code, str):
        raise TypeError(f"code must be a str, not {type(code).__name__}")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0]
