"""The fork-server template: imports ipykernel, runs the preload once, forks kernels.

Run by :class:`nbpool.fork.server.Template` with the kernelspec's own Python,
by path (that Python may not have nbpool installed), so this file uses only
the standard library until it imports ipykernel::

    python [interpreter flags] -c BOOT THIS_FILE CONTROL_FD LOG_PATH PADDING

Its stdin carries one JSON object, ``{"preload", "cwd", "kernel_args"}``
(code stays out of argv and files; ``kernel_args`` is the kernel's command
line without its connection file, the same for every child); its stdout
and stderr go to a log, so nothing the preload prints ever reaches a cell.
``CONTROL_FD`` is one end of an ``AF_UNIX`` ``SOCK_SEQPACKET`` pair: one JSON
object per message, both ways.

Template to parent::

    {"ready": PID}                  preloaded, single-threaded: forks on request
    {"unsafe": REASON}              forking is unsafe (threads, event loop, ...); exits
    {"failed": "ENAME: EVALUE", "traceback": TB}   the preload raised; exits
    {"id": N, "pid": PID}           forked; the child is in its own session
    {"id": N, "error": TEXT}        the child could not set itself up
    {"exited": PID, "code": CODE}   a child ended (Popen's returncode convention)

Parent to template: ``{"id": N, "connection_file": PATH, "env": {...}, "argv": [...]}``
(``argv``: the command line the child shows in ``ps``, in the room
``PADDING`` leaves; the child works in the template's directory)
with three descriptors attached (``SCM_RIGHTS``): the kernel's stdout and
stderr, and a pipe on which the child writes one byte once its kernel's
sockets are bound and it has rewritten its connection file (the parent's
KernelManager reads that file next, and clients that connect only then
save ZMQ's 100 ms reconnect wait).
At end of file (the parent is gone) the template exits; its children keep
running: they are in their own sessions and the parent's reaper owns them.

Why it is safe to fork here (sagecell's ForkingKernelManager, forsake: fork
after imports, before threads): after the preload the template checks that it
is one thread (``threading.active_count()`` *and* ``/proc/self/task``, which
also sees native threads), holds no event loop, ZMQ context or socket
(``/proc/self/fd``), and only then says ``ready``. BLAS and OpenMP pools are
kept single-threaded here by the environment the parent gives the template
(``OPENBLAS_NUM_THREADS=1`` and friends, read when those libraries load); each
child restores the thread counts its own environment asks for before its
first execution (:func:`_restore_blas_threads`), so a NumPy preload forks
cleanly and the worker still computes with all its cores.

A forked worker must look like a spawned one, in which the preload is the
first cell. So the preload runs with ipykernel's ``MPLBACKEND``, the kernel's
``sys.path`` and ``sys.argv`` (:func:`_as_in_a_kernel`); what the template's
start and the preload change in the environment, and the directory the
preload leaves it in, carry over to each child (:func:`_environment_changes`);
and a child hooks matplotlib's inline backend into its new shell if the
preload loaded it here, where no shell exists (:func:`_hook_inline_backend`).
A matplotlib preload gives forked workers inline plots, as spawned ones.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import sys
import traceback

#: Largest message either side sends (the environment is the big part).
MAX_MESSAGE = 1 << 20

#: Environment variables that size native thread pools; the parent sets them
#: to 1 for the template. Values as OpenBLAS/OpenMP/MKL read them at load.
THREAD_VARS = (
    "OPENBLAS_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
)

#: ipykernel's default matplotlib backend (``IPKernelApp.init_gui_pylab``).
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"

#: Descriptor kinds that must not be shared by forked workers: event loops'
#: epoll, ZMQ contexts' eventfds, network connections, signal/timer fds.
UNSHAREABLE = (
    "socket:",
    "anon_inode:[eventpoll]",
    "anon_inode:[eventfd]",
    "anon_inode:[signalfd]",
    "anon_inode:[timerfd]",
    "anon_inode:inotify",
)

#: Imports IPKernelApp.initialize() would otherwise do in every child
#: (measured with ipykernel 7.4: debugpy's is the biggest), and nothing a
#: spawned kernel does not import. None starts a thread; the template checks.
WARM_IMPORTS = (
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "ipykernel.comm",
    "ipykernel.debugger",
    "ipykernel.displayhook",
    "ipykernel.subshell_manager",
    "IPython.core.interactiveshell",
    "IPython.core.completer",
    "IPython.core.completerlib",
    "IPython.core.history",
    "IPython.core.debugger",
    "IPython.core.oinspect",
    "IPython.extensions.storemagic",
    "IPython.utils.wildcard",
    "debugpy",
    "debugpy.server.api",
    "pydevd",
    "jupyter_client.session",
    "tornado.gen",
    "tornado.locks",
    "tornado.queues",
    "tornado.platform.asyncio",
    "comm",
    "sqlite3",
    "pdb",
    "pydoc",
    "faulthandler",
    "psutil",
    "http.server",
    "xmlrpc.server",
)


def main() -> None:
    ctrl = socket.socket(fileno=int(sys.argv[2]))
    config = json.load(sys.stdin)
    given = dict(os.environ)
    _stdin_devnull()
    os.chdir(config["cwd"])
    # As ipykernel_launcher: the working directory is off sys.path while
    # ipykernel loads; InteractiveShellApp.init_path puts it back (as "", after
    # the standard library) before the preload runs.
    if sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    for name in WARM_IMPORTS:
        try:
            __import__(name)
        except Exception:  # optional pieces of some versions; the child imports what it needs
            pass
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    app = _prepare_app(config["kernel_args"], ns)
    _as_in_a_kernel(app, config["kernel_args"])
    verdict = _preload(config["preload"], ns)
    if verdict is None:
        reason = _unsafe(ctrl)
        verdict = {"unsafe": reason} if reason else {"ready": os.getpid()}
    sys.stdout.flush()
    sys.stderr.flush()
    _send(ctrl, verdict)
    if "ready" not in verdict:
        return
    # Objects that exist now are never collected by the cyclic GC in the
    # children: a collection would write to them and unshare their pages.
    gc.collect()
    gc.freeze()
    job = _serve(ctrl, _environment_changes(given))
    if job is not None:  # a forked child, with the template's stack unwound
        sys.exit(_run_kernel(app, job, config["kernel_args"]))


def _stdin_devnull() -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def _as_in_a_kernel(app, kernel_args: list[str]) -> None:
    """Give the preload what it would see as a spawned kernel's first cell.

    - ``MPLBACKEND``: ``IPKernelApp.init_gui_pylab`` sets it to the inline
      backend (unless the environment names one) before any cell runs, and
      matplotlib reads it once, on import. Without it a preload's ``import
      matplotlib`` settles every child on ``agg``: no plots.
    - ``sys.path``: the working directory as ``""``, after the standard
      library (``init_path``; a child's own finds it there and adds nothing).
    - ``sys.argv``: the kernel's command line, but for the connection file,
      which only each child has.
    """
    if not os.environ.get("MPLBACKEND"):
        os.environ["MPLBACKEND"] = INLINE_BACKEND
    app.init_path()
    sys.argv = [_launcher(), *kernel_args]


def _environment_changes(given: dict) -> dict:
    """What the template's start and the preload did to the environment it was given.

    ``{name: value}``, None for a name they removed. In a spawned kernel the
    same imports (debugpy sets ``PYDEVD_USE_FRAME_EVAL``), ipykernel and the
    preload change the kernel's own environment, which its cells and their
    subprocesses then see; each child applies these changes to its own.
    """
    changes: dict = {name: value for name, value in os.environ.items() if given.get(name) != value}
    changes.update(dict.fromkeys(given.keys() - os.environ.keys()))
    return changes


def _preload(code: str, ns: dict) -> dict | None:
    """Run the preload in the namespace every child's kernel starts with.

    Returns a verdict message if it failed or cannot run here, else None.
    """
    import linecache

    # Its source lines in tracebacks, as a cell's would be.
    linecache.cache["<preload>"] = (len(code), None, code.splitlines(True), "<preload>")
    try:
        compiled = compile(code, "<preload>", "exec")
    except SyntaxError:
        if _ipython_syntax(code):
            return {
                "unsafe": "the preload uses IPython syntax (magics or shell escapes), "
                "which only a running kernel can execute"
            }
        return _failure()
    try:
        exec(compiled, ns)
    except BaseException:  # SystemExit and KeyboardInterrupt fail it too
        return _failure()
    return None


def _ipython_syntax(code: str) -> bool:
    """Whether ``code`` is valid once IPython's input transformers have run."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        transformed = TransformerManager().transform_cell(code)
        compile(transformed, "<preload>", "exec")
    except Exception:
        return False
    return transformed != code


def _failure() -> dict:
    etype, value, tb = sys.exc_info()
    while tb is not None and tb.tb_frame.f_code.co_filename != "<preload>":
        tb = tb.tb_next  # the user's frames only, as a cell would show them
    text = "".join(traceback.format_exception(etype, value, tb))
    return {"failed": f"{etype.__name__}: {value}", "traceback": text}


def _unsafe(ctrl: socket.socket) -> str | None:
    """Why forking this process now would give broken children, or None."""
    import threading

    if threading.active_count() > 1:
        names = ", ".join(t.name for t in threading.enumerate() if t is not threading.main_thread())
        return f"the preload started Python threads ({names})"
    tasks = os.listdir("/proc/self/task")
    if len(tasks) > 1:
        names = sorted({_read(f"/proc/self/task/{t}/comm") for t in tasks if int(t) != os.getpid()})
        return (
            f"the preload started {len(tasks) - 1} native thread(s) ({', '.join(names)}), "
            "e.g. a GPU runtime or a thread pool not sized by OMP_NUM_THREADS"
        )
    mine = {0, 1, 2, ctrl.fileno()}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the directory's own descriptor, already closed
            continue
        if int(fd) not in mine and target.startswith(UNSHAREABLE):
            kind = (
                "a network or IPC socket"
                if target.startswith("socket:")
                else ("an event loop, a ZMQ context or a similar OS resource")
            )
            return f"the preload opened {kind} ({target}), which forked workers would share"
    return None


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "?"


def _send(ctrl: socket.socket, msg: dict) -> None:
    try:
        ctrl.send(json.dumps(msg).encode())
    except OSError:  # the parent is gone; the loop sees end of file next
        pass


def _serve(ctrl: socket.socket, changes: dict) -> dict | None:
    """Fork on request and report children's exits; returns the job in a child.

    ``changes``: see :func:`_environment_changes`.
    """
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake select()
    signal.set_wakeup_fd(wake_w)
    while True:
        readable = select.select([ctrl, wake_r], [], [])[0]
        if wake_r in readable:
            while True:
                try:
                    os.read(wake_r, 512)
                except BlockingIOError:
                    break
            _reap(ctrl)
        if ctrl in readable:
            data, fds, _, _ = socket.recv_fds(ctrl, MAX_MESSAGE, 3)
            if not data:
                return None  # the parent is gone
            job = json.loads(data)
            if _fork(ctrl, job, fds, (wake_r, wake_w), changes):
                return job


def _reap(ctrl: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(ctrl, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def _fork(
    ctrl: socket.socket, job: dict, fds: list[int], wake: tuple[int, int], changes: dict
) -> bool:
    """Fork one worker; True in the child (which then starts its kernel)."""
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        _send(ctrl, {"id": job["id"], "error": "the request came without its three descriptors"})
        return False
    status_r, status_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(status_r)
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # subprocess in cells needs it
            for fd in wake:
                os.close(fd)
            ctrl.close()  # the template's death must show as EOF in the parent
            _become_worker(job, fds, changes)
            os.write(status_w, b"ok")
            os.close(status_w)
        except BaseException:
            os.write(status_w, traceback.format_exc().encode(errors="replace"))
            os._exit(70)
        return True
    os.close(status_w)
    for fd in fds:
        os.close(fd)
    chunks = []
    while chunk := os.read(status_r, 65536):
        chunks.append(chunk)
    os.close(status_r)
    answer = b"".join(chunks).decode(errors="replace")
    if answer == "ok":
        _send(ctrl, {"id": job["id"], "pid": pid})
    else:
        _send(ctrl, {"id": job["id"], "error": answer or "the forked child died while setting up"})
    return False


def _become_worker(job: dict, fds: list[int], changes: dict) -> None:
    """What Popen(start_new_session=True, env=, stdout=, stderr=) and the preload would give.

    The working directory stays the template's: the worker's (templates
    are per directory), or wherever the preload moved to, as in a spawned
    kernel.
    """
    os.setsid()  # own session and process group: pgid == pid, for the reaper
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    for fd in fds[:2]:
        if fd > 2:
            os.close(fd)
    job["bound_fd"] = fds[2]
    os.environ.clear()
    os.environ.update(job["env"])
    for name, value in changes.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _reseed()
    _show_cmdline(job["argv"])


def _show_cmdline(argv: list[str]) -> None:
    """Make ``/proc/PID/cmdline`` (``ps``, tools finding kernels) show the kernel's argv.

    It is read from the memory of the process's original argv, which the
    template's padding made large enough: overwritten in place, as
    setproctitle does. Python keeps its own copies of the arguments.
    """
    import ctypes

    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (proc(5): 48, 49)
    except (OSError, IndexError, ValueError):
        return
    text = b"\0".join(arg.encode(errors="replace") for arg in argv)[: end - start - 1]
    ctypes.memmove(start, text.ljust(end - start, b"\0"), end - start)


def _reseed() -> None:
    """Fresh random state: every child starts from the template's copy."""
    import random

    random.seed()
    if "numpy.random" in sys.modules:
        sys.modules["numpy.random"].seed()  # the legacy global RandomState
    uuid = sys.modules.get("uuid")
    if uuid is not None and hasattr(uuid, "_last_timestamp"):
        uuid._last_timestamp = None  # uuid1's monotonic guard is per process


def thread_count(env: dict, names: tuple[str, ...]) -> int:
    """The thread count ``env`` asks of a library reading ``names``, else the CPU count."""
    for name in names:
        value = env.get(name, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return len(os.sched_getaffinity(0))


#: (library name fragment, setter symbols, variables it reads, in order).
_POOLS = (
    (
        "openblas",
        (
            "openblas_set_num_threads",
            "openblas_set_num_threads64_",
            "scipy_openblas_set_num_threads",
            "scipy_openblas_set_num_threads64_",
        ),
        ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"),
    ),
    ("libgomp", ("omp_set_num_threads",), ("OMP_NUM_THREADS",)),
    ("libiomp", ("omp_set_num_threads",), ("OMP_NUM_THREADS",)),
    ("libomp", ("omp_set_num_threads",), ("OMP_NUM_THREADS",)),
    ("libmkl_rt", ("MKL_Set_Num_Threads",), ("MKL_NUM_THREADS", "OMP_NUM_THREADS")),
    ("libblis", ("bli_thread_set_num_threads",), ("BLIS_NUM_THREADS", "OMP_NUM_THREADS")),
)


def _hook_inline_backend(shell) -> None:
    """Hook the inline backend into the shell if the preload loaded it here, with no shell.

    matplotlib loads its backend's module when something first needs it (a
    figure, ``plt.show``; not ``import matplotlib.pyplot``). The inline
    backend's module hooks itself into the running shell as it is imported:
    ``activate_matplotlib`` (interactive mode, pyplot's display hook) and
    ``configure_inline_support`` (figures shown at the end of each cell, the
    PNG formatter for figures). In a spawned kernel the preload is a cell and
    that shell exists; here it does not yet, so a preload that made a figure
    left the backend unhooked. The same two calls, now that the shell exists;
    then what the end of that cell did: its figures were shown (to no one: a
    preload's output is dropped) and closed.
    """
    if shell is None or "matplotlib_inline.backend_inline" not in sys.modules:
        return  # not loaded yet: it hooks itself in when it is, the shell being there
    import matplotlib
    from matplotlib import pyplot

    backend = matplotlib.get_backend()
    if backend not in ("inline", INLINE_BACKEND):
        return  # loaded, but another backend is in use (as the import would find)
    from IPython.core.pylabtools import activate_matplotlib
    from matplotlib_inline.backend_inline import configure_inline_support
    from matplotlib_inline.config import InlineBackend

    activate_matplotlib(backend)
    configure_inline_support(shell, backend)
    if InlineBackend.instance(parent=shell).close_figures:
        pyplot.close("all")


def _restore_blas_threads_on_first_execution(shell, env: dict) -> None:
    """Restore the thread pools' sizes just before the kernel's first execution.

    Not at once: a BLAS pool's new threads spin for a while (OpenBLAS: ~2**28
    cycles) before they sleep, and spinning through the kernel's start would
    cost every fresh worker ~50 ms of CPU, on the cores its start needs.
    Nothing calls BLAS before the first execution but its user's code.
    """
    if shell is None:
        _restore_blas_threads(env)
        return

    def restore(*_):
        shell.events.unregister("pre_execute", restore)
        _restore_blas_threads(env)

    shell.events.register("pre_execute", restore)


def _restore_blas_threads(env: dict) -> None:
    """Give the native thread pools loaded in the template the child's thread counts.

    The libraries read their variables when they load, in the template, where
    they were 1. What threadpoolctl does, for the few libraries that matter,
    without importing anything: the loaded ones are in ``/proc/self/maps``.
    """
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            paths = {
                line.split(None, 5)[5].strip()
                for line in f
                if line.count(" ") >= 5 and ".so" in line
            }
    except OSError:
        return
    for path in sorted(paths):
        name = os.path.basename(path)
        for fragment, setters, names in _POOLS:
            if fragment not in name:
                continue
            try:
                lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
            except OSError:
                continue
            for symbol in setters:
                setter = getattr(lib, symbol, None)
                if setter is not None:
                    setter(ctypes.c_int(thread_count(env, names)))
                    break


def _prepare_app(kernel_args: list[str], ns: dict):
    """The kernel application, its command line and config files read once, here.

    What ``IPKernelApp.initialize`` does before it opens sockets and that is
    the same for every child (parsing the command line alone costs ~30 ms);
    each child only sets its connection file and goes on from there.
    """
    from ipykernel.kernelapp import IPKernelApp
    from IPython.core.application import BaseIPythonApplication

    class Prepared(BaseIPythonApplication):
        """Placed between IPKernelApp and BaseIPythonApplication in the MRO, so
        that IPKernelApp.initialize's ``super().initialize(argv)`` (command line,
        profile, config files) is skipped in a child: the template did it."""

        prepared = False

        def initialize(self, argv=None):
            if not self.prepared:
                super().initialize(argv)

    class ForkedKernelApp(IPKernelApp, Prepared):
        bound_fd = None  # the child's "sockets bound" pipe

        def init_poller(self):
            # No parent poller: our parent is the template, and a poller would
            # end the kernel when the template exits (it watches for a new
            # parent); nbpool's reaper stops workers whose pool host died.
            self.poller = None

        def write_connection_file(self):
            super().write_connection_file()
            # Every socket is bound (initialize() calls this right after
            # init_sockets and init_heartbeat) and the file rewritten, so the
            # KernelManager may read it and clients connect while the kernel
            # and its shell are made (~100 ms).
            fd = self.bound_fd
            if fd is not None:
                self.bound_fd = None
                os.write(fd, b"1")
                os.close(fd)

    app = ForkedKernelApp.instance(user_ns=ns)
    BaseIPythonApplication.initialize(app, kernel_args)
    app.prepared = True
    return app


def _launcher() -> str:
    """``sys.argv[0]`` of ``python -m ipykernel_launcher``."""
    import importlib.util

    return importlib.util.find_spec("ipykernel_launcher").origin


def _run_kernel(app, job: dict, kernel_args: list[str]) -> int:
    """Start the kernel as ``python -m ipykernel_launcher -f FILE ARGS`` would; its exit code."""
    sys.argv = [_launcher(), "-f", job["connection_file"], *kernel_args]
    app.connection_file = job["connection_file"]
    app.bound_fd = job["bound_fd"]
    # As a spawned kernel's: its class default was read in the template.
    app.parent_handle = int(os.environ.get("JPY_PARENT_PID") or 0)
    app.initialize([])
    _hook_inline_backend(app.shell)
    _restore_blas_threads_on_first_execution(app.shell, dict(os.environ))
    app.start()
    return 0


if __name__ == "__nbpool_template__":
    main()
