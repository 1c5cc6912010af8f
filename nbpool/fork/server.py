"""The fork-server: fresh python workers forked from a preloaded template.

A :class:`ForkServer` keeps one *template* process per (python and its
flags, environment, working directory, preload). A template has imported
ipykernel and run the preload once, is single-threaded with no event loop,
ZMQ context or socket (it checks; see :mod:`nbpool.fork._template`), and
forks one child per worker. A child puts itself in its own session, re-seeds
``random``, NumPy's global generator and ``uuid``, takes the worker's
environment, working directory and BLAS thread counts, and starts
IPKernelApp on the connection file jupyter_client's KernelManager wrote (its
own key and CurveZMQ keys): a ready worker in about the time of one cell,
sharing the template's pages copy-on-write. What a user sees is a spawned
worker's: the preload ran as that kernel's first cell would (ipykernel's
``MPLBACKEND``: a matplotlib preload gives inline plots), ``sys.argv``,
environment and working directory are the kernel's own.

It plugs into jupyter_client as a kernel provisioner,
:class:`~nbpool.fork.provisioner.ForkingProvisioner` (a LocalProvisioner whose ``launch_kernel`` asks
the template to fork instead of calling Popen). KernelManager keeps doing
everything else: ports, connection file, keys, restart, shutdown; ``poll``,
``wait``, ``send_signal`` and ``kill`` work on the forked pid through
:class:`ForkedProcess`, a Popen look-alike whose exit codes the template
reports (the child is the template's, not ours) and whose signals go through
a pidfd (no pid-reuse race).

Anything that makes forking unsafe or impossible falls back to a normal
spawn with a reason: not Linux, a kernelspec that is not
``python -m ipykernel_launcher``, a preload that starts threads or opens an
event loop or socket, or uses IPython syntax, a template that died or could
not start. A preload that *raises* does not fall back: it fails the start at
once with :class:`~nbpool.errors.WorkerStartFailed` (``retry=False``) and the
worker's traceback as its ``stderr_tail``: the failure a spawned worker's
preload gives (:func:`~nbpool.kernels.kernel.preload_failed`, one message).

Lifetime: templates are children of this process, in their own process
groups registered with the reaper like workers, and so is each forked child
from the moment its template reports it (a forked kernel has no parent
poller: the reaper is what ends it if this process dies). A template exits
when its control socket closes (this process died or
:meth:`ForkServer.close`). Killing a template leaves its workers running
(they are in their own sessions); the next start makes a new template, and
a start that was waiting on the dead one spawns instead.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict

from ..errors import WorkerStartFailed
from ..kernels.kernel import preload_failed
from ..kernels.processes import memory

#: The template program, run by path with the kernelspec's Python.
TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_template.py")
_BOOT = "import sys, runpy; runpy.run_path(sys.argv[1], run_name='__nbpool_template__')"
#: Bytes kept for a connection file's path in a child's command line.
PATH_ROOM = 256
#: Kernelspec modules a template can stand in for.
KERNEL_MODULES = ("ipykernel_launcher", "ipykernel")
#: Thread-pool variables pinned to 1 in templates (each child restores its own).
THREAD_VARS = (
    "OPENBLAS_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
)
#: Variables that differ per launch and must not pick a template.
PER_LAUNCH_VARS = ("JPY_PARENT_PID",)
#: Bytes of a template's log quoted when it fails.
LOG_TAIL = 2000
#: Largest control message (the environment is the big part).
MAX_MESSAGE = 1 << 20
#: ``returncode`` of a forked worker that ended after its template died (unknowable).
UNKNOWN_EXIT = 255


class ForkUnavailable(Exception):
    """This worker cannot be forked; ``str(exc)`` says why (it is spawned instead)."""


# ----------------------------------------------------------------------
# what can be forked
# ----------------------------------------------------------------------


def fork_unsupported(argv: list[str]) -> str | None:
    """Why a kernel with this (formatted) argv cannot be forked here, or None."""
    if not sys.platform.startswith("linux"):
        return f"the fork server needs Linux (this is {sys.platform})"
    if not hasattr(os, "pidfd_open"):
        return "the fork server needs os.pidfd_open (Linux 5.3, Python 3.9)"
    if "-m" not in argv or argv.index("-m") + 1 >= len(argv):
        return f"the kernelspec does not run `python -m ipykernel_launcher` ({_short(argv)})"
    if argv[argv.index("-m") + 1] not in KERNEL_MODULES:
        return f"the kernelspec is not an ipykernel kernel ({_short(argv)})"
    if not os.path.basename(argv[0]).startswith("python"):
        return f"the kernelspec does not start a python executable ({_short(argv)})"
    return None


def _connection_file(args: list[str]) -> tuple[str, list[str]]:
    """The connection file in a kernel's arguments, and the other arguments."""
    for i, arg in enumerate(args):
        if arg in ("-f", "--f", "--IPKernelApp.connection_file") and i + 1 < len(args):
            return args[i + 1], args[:i] + args[i + 2 :]
        for prefix in ("-f=", "--f=", "--IPKernelApp.connection_file="):
            if arg.startswith(prefix):
                return arg[len(prefix) :], args[:i] + args[i + 1 :]
    raise ForkUnavailable("the kernel's command line names no connection file (-f)")


def _short(argv: list[str]) -> str:
    return " ".join(argv[:4]) + (" ..." if len(argv) > 4 else "")


# ----------------------------------------------------------------------
# a forked worker seen from the pool
# ----------------------------------------------------------------------


class ForkedProcess:
    """A forked kernel process with the part of :class:`subprocess.Popen` kernels use.

    The child is its template's, not this process's: ``returncode`` (negative:
    killed by that signal, as Popen's) is what the template reports
    (:meth:`report_exit`); once the template is gone (:meth:`orphan`) the end is
    seen through a pidfd and the code is :data:`UNKNOWN_EXIT`. Signals go
    through the pidfd, which names this process and no later one with its pid.

    Parameters
    ----------
    pid : int
        The child's pid, as its template reported it.
    args : list of str
        Its command line (Popen's ``args``).
    bound_fd : int, optional
        The read end of the pipe the child writes ``1`` to once its sockets are
        bound (see :meth:`wait_bound`); the process owns and closes it.
    """

    stdin = stdout = stderr = None

    def __init__(self, pid: int, args: list[str], bound_fd: int | None = None) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None
        self._bound_fd = bound_fd
        self._done = threading.Event()
        self._orphaned = False
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except OSError:  # already ended; the template's report follows
            self._pidfd = None

    def report_exit(self, code: int) -> None:
        """Its template saw it end with ``code`` (Popen's ``returncode``)."""
        if self.returncode is None:
            self.returncode = code
        self._done.set()

    def orphan(self) -> None:
        """Its template died: from now on only the pidfd can tell the end."""
        self._orphaned = True
        self._done.set()  # wake waiters to switch to the pidfd

    def _gone(self, timeout: float) -> bool:
        if self._pidfd is None:
            return True
        return bool(select.select([self._pidfd], [], [], timeout)[0])

    def wait_bound(self, timeout: float) -> bool:
        """Wait until the kernel's sockets are bound; False if it died first or on timeout.

        Connecting after the bind saves the client ZMQ's reconnect interval
        (100 ms) that a connect to a not yet bound port costs. Once only: the
        pipe is closed after.
        """
        fd, self._bound_fd = self._bound_fd, None
        if fd is None:
            return False
        try:
            return bool(select.select([fd], [], [], timeout)[0]) and os.read(fd, 1) == b"1"
        finally:
            os.close(fd)

    def poll(self) -> int | None:
        if self.returncode is None and self._orphaned and self._gone(0):
            self.report_exit(UNKNOWN_EXIT)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            if self._orphaned:
                self._gone(left)
            else:
                self._done.wait(left)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None:
            return
        if self._pidfd is None:  # it had ended before we could hold it
            return
        try:
            signal.pidfd_send_signal(self._pidfd, sig)
        except ProcessLookupError:
            pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __del__(self) -> None:
        for name in ("_pidfd", "_bound_fd"):
            fd = getattr(self, name, None)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)

    def __repr__(self) -> str:
        return f"<ForkedProcess pid={self.pid} returncode={self.returncode}>"


class _Request:
    """A fork request waiting for its template's answer (under :attr:`Template._lock`)."""

    def __init__(self, args: list[str], bound_fd: int) -> None:
        self.args = args  # the child's command line
        self.bound_fd = bound_fd  # the child's bound pipe; its ForkedProcess takes it
        self.done = threading.Event()
        self.answer: ForkedProcess | str | None = None  # the child, or why there is none


# ----------------------------------------------------------------------
# one template process
# ----------------------------------------------------------------------


class Template:
    """One template process and its control socket (see :mod:`nbpool.fork._template`).

    :meth:`start` runs it to ``ready``; :meth:`fork` asks it for a worker.
    A reader thread dispatches its answers and its children's exits.
    """

    def __init__(self, prefix, kernel_args, env, cwd, preload, log_path, reaper=None) -> None:
        self.prefix, self.kernel_args = list(prefix), list(kernel_args)
        self.env, self.cwd, self.preload = dict(env), cwd, preload
        self.log_path = log_path
        self.reaper = reaper
        self.proc: subprocess.Popen | None = None
        self.dead = False
        self.forks = 0
        self._sock: socket.socket | None = None
        self._start_lock = threading.Lock()
        self._started: BaseException | bool = False
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()  # guards the two dicts below and _next
        self._pending: dict[int, _Request] = {}  # id -> its request
        self._children: dict[int, ForkedProcess] = {}
        self._next = 0

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self, timeout: float) -> None:
        """Start it and wait until it is ready; once (later calls repeat the outcome).

        Raises
        ------
        WorkerStartFailed
            ``retry=False``: the preload raised (its traceback is ``stderr_tail``);
            else not ready within ``timeout``.
        ForkUnavailable
            Forking is unsafe after this preload, or the template died.
        """
        with self._start_lock:
            if self._started is False:
                try:
                    self._start(timeout)
                    self._started = True
                except BaseException as exc:
                    self._started = exc
                    self.close()
            if isinstance(self._started, BaseException):
                raise self._started

    def _start(self, timeout: float) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for end in (parent, child):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self._sock = parent
        # The log's path names the pool's runtime directory: ps and leak checks see whose it is.
        argv = [*self.prefix, "-c", _BOOT, TEMPLATE, str(child.fileno()), self.log_path]
        # Room for a child's own command line (see _fork_template._show_cmdline).
        shown = [*self.prefix, "-m", "ipykernel_launcher", "-f", "x" * PATH_ROOM, *self.kernel_args]
        room = len("\0".join(shown)) - len("\0".join(argv))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*argv, " " * max(room, 1)],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                env=self.env,
                cwd=self.cwd,
                pass_fds=[child.fileno()],
                start_new_session=True,
            )
        child.close()
        if self.reaper is not None:
            self.reaper.watch(self.proc.pid)
        try:
            self.proc.stdin.write(
                json.dumps(
                    {
                        "preload": self.preload,
                        "cwd": self.cwd,
                        "kernel_args": self.kernel_args,
                    }
                ).encode()
            )
            self.proc.stdin.close()
        except BrokenPipeError:  # it died at once; its log says why
            pass
        if not select.select([parent], [], [], timeout)[0]:
            raise WorkerStartFailed(
                f"the preload did not finish within {timeout:g} s (raise start_timeout if it "
                "is just slow)",
                self._tail(),
            )
        data = parent.recv(MAX_MESSAGE)
        first = json.loads(data) if data else {}
        if "ready" in first:
            threading.Thread(
                target=self._read, name=f"nbpool-forkserver-{self.proc.pid}", daemon=True
            ).start()
            return
        if "failed" in first:
            raise preload_failed(first["failed"], first["traceback"])
        if "unsafe" in first:
            raise ForkUnavailable(first["unsafe"])
        code = self.proc.wait()
        raise ForkUnavailable(
            f"the fork-server template exited with code {code} while starting"
            + _last_line(self._tail())
        )

    def fork(
        self,
        connection_file: str,
        env: dict,
        stdout: int,
        stderr: int,
        timeout: float = 10.0,
    ) -> ForkedProcess:
        """One forked worker (its own session and env; the template's cwd) writing to these
        descriptors."""
        args = [*self.prefix, "-m", "ipykernel_launcher", "-f", connection_file, *self.kernel_args]
        bound_r, bound_w = os.pipe2(os.O_CLOEXEC)
        request = _Request(args, bound_r)
        with self._lock:
            dead = self.dead
            if not dead:
                self._next += 1
                ident = self._next
                self._pending[ident] = request
        if dead:
            os.close(bound_r)
            os.close(bound_w)
            raise ForkUnavailable("the fork-server template died")
        msg = json.dumps(
            {"id": ident, "connection_file": connection_file, "env": env, "argv": args}
        ).encode()
        try:
            with self._send_lock:
                socket.send_fds(self._sock, [msg], [stdout, stderr, bound_w])
        except OSError as exc:
            with self._lock:
                self._pending.pop(ident, None)
            os.close(bound_r)
            raise ForkUnavailable(f"the fork-server template is unreachable ({exc})") from None
        finally:
            os.close(bound_w)
        answered = request.done.wait(timeout)
        with self._lock:
            self._pending.pop(ident)
            answer = request.answer
        if isinstance(answer, ForkedProcess):
            self.forks += 1
            return answer  # it owns bound_r now
        os.close(bound_r)
        if not answered:
            raise ForkUnavailable(f"the fork-server template did not fork within {timeout:g} s")
        raise ForkUnavailable(answer)

    def _read(self) -> None:
        """The reader thread: fork answers, children's exits, and the end."""
        try:
            self._dispatch()
        finally:
            self._ended()

    def _dispatch(self) -> None:
        while True:
            try:
                data = self._sock.recv(MAX_MESSAGE)
            except OSError:
                return
            if not data:
                return
            msg = json.loads(data)
            if self.reaper is not None and "pid" in msg:
                # At once, as a spawned kernel's parent poller would from its
                # start: until a KernelManager holds this child it is known only
                # here (a launch cancelled late, a host killed meanwhile), and it
                # has no poller and a process group of its own.
                self.reaper.watch(msg["pid"])
            elif self.reaper is not None and "exited" in msg:
                self.reaper.forget(msg["exited"])
            with self._lock:
                if "exited" in msg:
                    child = self._children.pop(msg["exited"], None)
                    if child is not None:
                        child.report_exit(msg["code"])
                    continue
                request = self._pending.get(msg["id"])
                if request is None:  # the requester gave up: nobody will use that worker
                    if "pid" in msg:
                        self._children[msg["pid"]] = child = ForkedProcess(msg["pid"], [])
                        child.kill()
                    continue
                if "pid" in msg:
                    child = ForkedProcess(msg["pid"], request.args, request.bound_fd)
                    self._children[msg["pid"]] = request.answer = child
                else:
                    request.answer = msg["error"]
                request.done.set()

    def _ended(self) -> None:
        """The template is gone: fail waiting requests; its children become orphans."""
        with self._lock:
            self.dead = True
            orphans, self._children = list(self._children.values()), {}
            for request in self._pending.values():
                if request.answer is None:
                    request.answer = "the fork-server template died"
                request.done.set()
        for child in orphans:
            child.orphan()
        if self.proc is not None:
            self.proc.wait()  # it is our child: no zombie
            if self.reaper is not None:
                self.reaper.forget(self.proc.pid)

    def _tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - LOG_TAIL))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def close(self) -> None:
        """End the template (its workers keep running); blocking, at most ~2 s."""
        with self._lock:
            self.dead = True
        if self._sock is not None:
            try:  # wakes our reader's recv; EOF makes the template exit by itself
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            if self.reaper is not None:
                self.reaper.forget(self.proc.pid)
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return f"; its stderr ends with: {lines[-1]}" if lines else ""


# ----------------------------------------------------------------------
# the templates of one pool
# ----------------------------------------------------------------------


class ForkServer:
    """The templates of one pool, made on demand, one per distinct launch.

    Parameters
    ----------
    runtime_dir : str
        Private directory (0700) for the templates' logs.
    reaper : object with ``watch(pgid)`` / ``forget(pgid)``, optional
        Registers each template's and each forked child's process group
        (nbpool's :class:`~nbpool.kernels.processes.Reaper`) from its start to its
        end, so none outlives this process.
    ready_timeout : float
        Seconds a template may take to import ipykernel and run the preload.
    fork_timeout : float
        Seconds a ready template may take to answer a fork request.
    max_templates : int
        Templates kept at once; the least recently used beyond that is ended
        (its workers keep running).

    Thread-safe; :meth:`fork` blocks (template start: seconds, once; fork:
    milliseconds) and is meant for starter threads or an executor.
    """

    def __init__(
        self,
        runtime_dir: str,
        reaper=None,
        *,
        ready_timeout: float = 120.0,
        fork_timeout: float = 10.0,
        max_templates: int = 4,
    ) -> None:
        self.runtime_dir = runtime_dir
        self.reaper = reaper
        self.ready_timeout = ready_timeout
        self.fork_timeout = fork_timeout
        self.max_templates = max_templates
        self._lock = threading.Lock()  # guards _templates, _refused, _closed, _count
        self._templates: OrderedDict[tuple, Template] = OrderedDict()
        self._refused: dict[tuple, str] = {}  # key -> why forking is unsafe (stable)
        self._closed = False
        self._count = 0

    def fork(
        self, argv: list[str], env: dict, cwd: str, preload: str, stdout: int, stderr: int
    ) -> ForkedProcess:
        """A worker forked from the template of (argv's python, env, cwd, preload).

        ``argv`` is the formatted kernel command (``python -m ipykernel_launcher
        -f CONNECTION_FILE ...``); ``env`` the worker's whole environment.

        Raises
        ------
        ForkUnavailable
            Fork unsafe or impossible: spawn instead; the message says why.
        WorkerStartFailed
            ``retry=False``: the preload raised (fail the start, do not retry);
            else the template was not ready within ``ready_timeout``.
        """
        reason = fork_unsupported(argv)
        if reason:
            raise ForkUnavailable(reason)
        prefix = argv[: argv.index("-m")]
        connection_file, kernel_args = _connection_file(argv[argv.index("-m") + 2 :])
        template_env = {k: v for k, v in env.items() if k not in PER_LAUNCH_VARS}
        key = (tuple(prefix), tuple(kernel_args), tuple(sorted(template_env.items())), cwd, preload)
        template_env.update(dict.fromkeys(THREAD_VARS, "1"))
        evicted = []
        with self._lock:
            if self._closed:
                raise ForkUnavailable("the fork server is closed")
            if key in self._refused:
                raise ForkUnavailable(self._refused[key])
            template = self._templates.get(key)
            if template is None or template.dead:
                self._count += 1
                log = os.path.join(self.runtime_dir, f"forkserver-{self._count}.log")
                template = self._templates[key] = Template(
                    prefix, kernel_args, template_env, cwd, preload, log, self.reaper
                )
                while len(self._templates) > self.max_templates:
                    evicted.append(self._templates.popitem(last=False)[1])
            self._templates.move_to_end(key)
        for old in evicted:
            old.close()
        try:
            template.start(self.ready_timeout)
        except ForkUnavailable as exc:
            with self._lock:
                if self._templates.get(key) is template:
                    del self._templates[key]
                    self._refused[key] = str(exc)  # the same launch would fail the same way
            raise
        except WorkerStartFailed:
            with self._lock:
                if self._templates.get(key) is template:
                    del self._templates[key]  # a later start tries again (slow, or fixed)
            raise
        return template.fork(connection_file, env, stdout, stderr, self.fork_timeout)

    def templates(self) -> list[dict]:
        """Live templates: pid, forks so far, unique memory (for status and tests)."""
        with self._lock:
            live = [t for t in self._templates.values() if t.pid and not t.dead]
        return [{"pid": t.pid, "forks": t.forks, "memory": memory(t.pid)} for t in live]

    def close(self) -> None:
        """End every template (their workers keep running); idempotent, blocking."""
        with self._lock:
            self._closed = True
            templates = list(self._templates.values())
            self._templates.clear()
        for template in templates:
            template.close()
