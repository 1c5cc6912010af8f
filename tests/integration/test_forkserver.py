"""The fork-server with real templates and real kernels (nbpool.fork.server).

Kernels are started the way nbpool starts workers: an AsyncKernelManager per
kernel on the provisioner loop, with a fresh connection file, loopback only
and CurveZMQ, and a :class:`~nbpool.fork.provisioner.ForkingProvisioner`
installed. They are driven through jupyter_client's BlockingKernelClient.
Every test ends by checking that no kernel and no template is left running.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import zmq
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.manager import AsyncKernelManager

from nbpool.errors import WorkerStartFailed
from nbpool.fork.provisioner import ForkingProvisioner, install
from nbpool.fork.server import ForkServer
from nbpool.kernels.kernel import Origin
from nbpool.kernels.processes import LaunchCancelled, Reaper, memory, run_provisioner
from tests.helpers import gone, pids_with, wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork server: Linux")


class Kernel:
    """One started kernel: its manager, a ready BlockingKernelClient, its log."""

    def __init__(self, km: AsyncKernelManager, log: str, context: zmq.Context) -> None:
        self.km = km
        self.log = log
        self.started, self.reason = _origin(km).started, _origin(km).reason
        self.pid = km.provisioner.process.pid
        self.client = BlockingKernelClient(context=context)
        self.client.load_connection_info(km.get_connection_info())
        self.client.start_channels(hb=False)
        self.wait_ready(60)

    def wait_ready(self, timeout: float) -> None:
        """A kernel_info_reply, then iopub traffic (our subscription is live)."""
        deadline = time.monotonic() + timeout
        while self.client.iopub_channel.msg_ready():  # a restarted kernel's predecessor's
            self.client.get_iopub_msg(timeout=1)
        while True:
            assert self.poll() is None, f"the kernel exited with {self.poll()}: {_text(self.log)}"
            assert time.monotonic() < deadline, f"not ready in {timeout} s: {_text(self.log)}"
            self.client.kernel_info()
            if self.client.shell_channel.socket.poll(200):
                reply = self.client.get_shell_msg(timeout=1)
                if reply["msg_type"] == "kernel_info_reply":
                    break
        while not self.client.iopub_channel.socket.poll(200):
            self.client.kernel_info()
            assert time.monotonic() < deadline, "no iopub traffic"
        while self.client.iopub_channel.msg_ready():
            self.client.get_iopub_msg(timeout=1)
        while self.client.shell_channel.msg_ready():
            self.client.get_shell_msg(timeout=1)

    def run(self, code: str, timeout: float = 60) -> str:
        """Execute ``code``; its stdout, or AssertionError with the worker's traceback."""
        out = []

        def hook(msg):
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])

        try:
            reply = self.client.execute_interactive(code, timeout=timeout, output_hook=hook)
        except TimeoutError:
            raise AssertionError(
                f"no answer to {code!r} in {timeout} s (exit code {self.poll()}); "
                f"its log:\n{_text(self.log)}"
            ) from None
        content = reply["content"]
        assert content["status"] == "ok", "\n".join(content.get("traceback", [])) or content
        return "".join(out)

    def value(self, expr: str):
        """A JSON-able expression's value in the kernel."""
        return json.loads(self.run(f"import json as _j; print(_j.dumps({expr}))"))

    def poll(self):
        return run_provisioner(self.km.provisioner.poll())

    def stop(self) -> None:
        self.client.stop_channels()
        run_provisioner(self.km.shutdown_kernel(now=True))


class Kernels:
    """Starts kernels through one ForkServer and a real reaper; stops them all."""

    def __init__(self, tmp_path) -> None:
        self.dir = tmp_path
        self.context = zmq.Context()
        self.reaper = Reaper(str(tmp_path))
        self.server = ForkServer(str(tmp_path), self.reaper, ready_timeout=60)
        self.started: list[Kernel] = []
        self.pids: set[int] = set()
        self.logs: list = []
        self._names = itertools.count()

    def start(
        self,
        preload: str = "",
        *,
        fork: bool = True,
        kernel_name: str = "python3",
        env: dict | None = None,
        cwd: str | None = None,
    ) -> Kernel:
        name = f"k{next(self._names)}"
        km = AsyncKernelManager(
            kernel_name=kernel_name,
            connection_file=str(self.dir / f"{name}.json"),
            ip="127.0.0.1",
            transport_encryption="auto",
        )
        if fork:
            install(km, self.server, preload)
        log = str(self.dir / f"{name}.log")
        f = open(log, "ab")  # noqa: SIM115 (open while the kernel lives: a restart reuses it)
        self.logs.append(f)
        try:
            run_provisioner(
                km.start_kernel(
                    stdout=f,
                    stderr=f,
                    env={**os.environ, **(env or {})},
                    cwd=cwd,
                    extra_arguments=["--Kernel._execute_sleep=0"]
                    if kernel_name == "python3"
                    else [],
                )
            )
        except BaseException:  # launched, then failed: never leave it running
            if km.provisioner is not None and km.provisioner.process is not None:
                self.pids.add(km.provisioner.process.pid)
                run_provisioner(km.provisioner.kill())
            raise
        pid = km.provisioner.process.pid
        self.pids.add(pid)
        self.reaper.watch(pid)
        kernel = Kernel(km, log, self.context)
        self.started.append(kernel)
        return kernel

    def template_pids(self) -> list[int]:
        pids = [t["pid"] for t in self.server.templates()]
        self.pids.update(pids)
        return pids

    def close(self) -> None:
        self.template_pids()
        for kernel in self.started:
            kernel.stop()
        self.server.close()
        self.reaper.close()
        self.context.destroy(linger=0)
        for f in self.logs:
            f.close()


@pytest.fixture
def kernels(tmp_path):
    k = Kernels(tmp_path)
    try:
        yield k
    finally:
        k.close()
    wait_for(
        lambda: all(gone(p) for p in k.pids), timeout=10, what="every kernel and template to end"
    )


def _origin(km: AsyncKernelManager) -> Origin:
    """How ``km``'s kernel came to be: its forking provisioner's verdict (none: spawned)."""
    return km.provisioner.origin if isinstance(km.provisioner, ForkingProvisioner) else Origin()


def _text(path) -> str:
    with open(path) as f:
        return f.read()


def _reply_to(k: Kernel, msg_id: str):
    """The shell reply to ``msg_id`` if it came (late kernel_info replies are skipped)."""
    while k.client.shell_channel.socket.poll(100):
        msg = k.client.get_shell_msg(timeout=1)
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg
    return None


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


# ----------------------------------------------------------------------
# a forked kernel works like a spawned one
# ----------------------------------------------------------------------


def test_forked_kernel_answers_with_the_preload_done(kernels):
    """A forked kernel runs code through a BlockingKernelClient; the preload's names are there."""
    k = kernels.start("import math\nanswer = 6 * 7\ndef twice(x):\n    return 2 * x\n")
    assert (k.started, k.reason) == ("fork", None)
    assert isinstance(k.km.provisioner, ForkingProvisioner)
    assert k.run("print(answer, twice(answer), math.pi > 3)") == "42 84 True\n"
    [template] = kernels.template_pids()
    assert _ppid(k.pid) == template, "a worker is the template's child"
    assert template in pids_with(str(kernels.dir).encode()), "its command line names the pool"
    assert k.value("__import__('os').getpid()") == k.pid
    assert k.value("__name__") == "__main__"
    assert k.value("__import__('sys').argv[1:]") == [
        "-f",
        k.km.connection_file,
        "--Kernel._execute_sleep=0",
    ]
    assert k.value("get_ipython().kernel._execute_sleep") == 0, "its command line applies"
    with open(f"/proc/{k.pid}/cmdline", "rb") as f:
        shown = [arg.decode() for arg in f.read().split(b"\0") if arg]
    assert shown == [*k.km.format_kernel_cmd(), "--Kernel._execute_sleep=0"], "ps shows a kernel"


def test_concurrent_starts_share_one_template(kernels):
    """Four workers started at once (as pool.start does) wait for one template, then fork."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as ex:
        ks = list(ex.map(lambda _: kernels.start("import time\ntime.sleep(0.5)\nx = 5"), range(4)))
    assert [k.started for k in ks] == ["fork"] * 4
    assert len(kernels.template_pids()) == 1
    assert [k.run("print(x)") for k in ks] == ["5\n"] * 4


def test_preload_output_never_reaches_a_cell(kernels):
    """What the preload prints goes to the template's log, not to any execution's output."""
    k = kernels.start("print('PRELOAD-OUT')\nimport sys\nprint('PRELOAD-ERR', file=sys.stderr)")
    assert k.started == "fork"
    assert k.run("print('cell')") == "cell\n"
    assert "PRELOAD" not in _text(k.log)


def test_failing_preload_raises_at_once_with_the_traceback(kernels):
    """A preload that raises fails the start at once, not to be retried, with its traceback."""
    t0 = time.monotonic()
    with pytest.raises(WorkerStartFailed) as info:
        kernels.start("import os\n\ndef load():\n    return 1 / 0\n\ndata = load()\n")
    assert time.monotonic() - t0 < 15
    exc = info.value
    assert exc.retry is False
    assert str(exc).startswith("the preload raised ZeroDivisionError: division by zero")
    tb = exc.stderr_tail
    assert 'File "<preload>", line 6' in tb and "data = load()" in tb and "return 1 / 0" in tb
    assert "_fork_template" not in tb, "only the user's frames"
    assert kernels.server.templates() == [], "the failed template is gone"


def test_syntax_error_in_preload_fails_too(kernels):
    """A preload that does not compile fails the same way (no fallback, no retry)."""
    with pytest.raises(WorkerStartFailed, match="the preload raised SyntaxError") as info:
        kernels.start("x = (1,\n")
    assert info.value.retry is False


def test_env_and_cwd_reach_the_preload_and_the_kernel(kernels, tmp_path):
    """The worker's env and cwd hold in the preload (relative paths) and in the kernel."""
    (tmp_path / "data.txt").write_text("from-cwd")
    k = kernels.start(
        "import os\nseen = (open('data.txt').read(), os.environ['NBPOOL_TEST_VAR'])",
        env={"NBPOOL_TEST_VAR": "hello"},
        cwd=str(tmp_path),
    )
    assert k.started == "fork"
    assert k.value("seen") == ["from-cwd", "hello"]
    assert k.value("[os.getcwd(), os.environ['NBPOOL_TEST_VAR']]") == [str(tmp_path), "hello"]
    assert k.value("os.environ['JPY_PARENT_PID']") == str(os.getpid())
    other = kernels.start(
        "import os\nseen = (open('data.txt').read(), os.environ['NBPOOL_TEST_VAR'])",
        env={"NBPOOL_TEST_VAR": "other"},
        cwd=str(tmp_path),
    )
    assert other.value("seen") == ["from-cwd", "other"], "another env is another template"
    assert len(kernels.template_pids()) == 2


def test_forked_workers_are_distinct(kernels):
    """Forked workers have their own pid, session, keys and random streams."""
    preload = "import os, random, uuid\nimport numpy as np\n"
    ks = [kernels.start(preload) for _ in range(3)]
    assert [k.started for k in ks] == ["fork"] * 3
    assert len({k.pid for k in ks}) == 3
    for k in ks:
        assert k.value("[os.getpgid(0), os.getsid(0)]") == [k.pid, k.pid]
    infos = [k.km.get_connection_info() for k in ks]
    for field in ("key", "curve_publickey", "curve_secretkey", "shell_port"):
        assert len({info[field] for info in infos}) == 3, field
    draws = [
        k.value("[random.random(), np.random.random(), str(uuid.uuid4()), str(uuid.uuid1())]")
        for k in ks
    ]
    for i in range(4):
        assert len({d[i] for d in draws}) == 3, f"stream {i} repeats across workers"


def test_exit_codes_and_signals_are_reported_like_popen(kernels):
    """poll() gives a forked kernel's exit code, or minus the signal that killed it."""
    a, b, c = kernels.start(), kernels.start(), kernels.start()
    process = c.km.provisioner.process
    t0 = time.monotonic()
    run_provisioner(c.km.shutdown_kernel(now=False))  # a shutdown_request, then wait()
    assert process.returncode == 0 and time.monotonic() - t0 < 5, "a clean, prompt exit"
    c.client.stop_channels()
    kernels.started.remove(c)
    a.client.execute("import os; os._exit(3)")
    wait_for(lambda: a.poll() is not None, timeout=10, what="the kernel to exit")
    assert a.poll() == 3
    os.kill(b.pid, signal.SIGKILL)
    wait_for(lambda: b.poll() is not None, timeout=10, what="the kernel to die")
    assert b.poll() == -signal.SIGKILL


def test_interrupt_and_restart_work_on_a_forked_kernel(kernels):
    """KernelManager's interrupt (SIGINT to the group) and restart (a new fork) work."""
    k = kernels.start("import time")
    msg_id = k.client.execute("print('sleeping', flush=True); time.sleep(30)")
    # Interrupt once the user's code runs (ipykernel ignores SIGINT until then).
    wait_for(
        lambda: k.client.get_iopub_msg(timeout=10)["content"].get("text") == "sleeping\n",
        timeout=20,
        what="the execution to start",
    )
    run_provisioner(k.km.interrupt_kernel())
    reply = wait_for(lambda: _reply_to(k, msg_id), timeout=20, what="the execution's reply")
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    old = k.pid
    run_provisioner(k.km.restart_kernel(now=True))
    k.pid = k.km.provisioner.process.pid
    kernels.pids.add(k.pid)
    assert k.pid != old and _origin(k.km) == Origin("fork", None)
    k.wait_ready(30)
    assert k.run("print(time.time() > 0)") == "True\n"


# ----------------------------------------------------------------------
# when forking is unsafe: spawn, and say why
# ----------------------------------------------------------------------


def test_thread_starting_preload_falls_back_to_spawn(kernels):
    """A preload that starts a Python thread makes the worker spawn, with the reason."""
    k = kernels.start(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(60,), name='poller', "
        "daemon=True).start()\n"
    )
    assert k.started == "spawn"
    assert "the preload started Python threads (poller)" in k.reason
    assert k.run("print(1 + 1)") == "2\n"
    assert kernels.server.templates() == [], "the unsafe template exited"
    again = kernels.start(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(60,), name='poller', "
        "daemon=True).start()\n"
    )
    assert again.reason == k.reason, "the verdict is kept: no new template per worker"


def test_native_threads_and_sockets_in_preload_fall_back(kernels):
    """Threads threading cannot see (/proc/self/task) and open sockets (/proc/self/fd) count too."""
    k = kernels.start("import _thread, time\n_thread.start_new_thread(time.sleep, (60,))\n")
    assert k.started == "spawn" and "native thread" in k.reason
    k = kernels.start("import os\nos.environ['OPENBLAS_NUM_THREADS'] = '2'\nimport numpy\n")
    assert k.started == "spawn" and "native thread" in k.reason, "OpenBLAS's own threads"
    assert k.run("import numpy; print(numpy.dot([1, 2], [3, 4]))") == "11\n"
    k = kernels.start("import socket\nconn = socket.socket()\n")
    assert k.started == "spawn" and "socket" in k.reason


def test_event_loop_or_zmq_context_in_preload_falls_back(kernels):
    """An asyncio loop or a ZMQ context made by the preload would be shared: spawn."""
    k = kernels.start("import zmq\nctx = zmq.Context()\n")
    assert k.started == "spawn" and "ZMQ context" in k.reason
    k = kernels.start("import asyncio\nloop = asyncio.new_event_loop()\n")
    assert k.started == "spawn" and "forked workers would share" in k.reason


def test_ipython_syntax_preload_is_left_to_a_spawned_kernel(kernels):
    """A preload with magics cannot run in the template: spawn, with the reason."""
    k = kernels.start("%env NBPOOL_X=1\nx = 1")
    assert k.started == "spawn" and "IPython syntax" in k.reason


def test_non_ipykernel_kernelspec_is_spawned(kernels, bash_kernel):
    """A bash kernelspec is not forked; it still starts, and the reason is given."""
    k = kernels.start(kernel_name=bash_kernel)
    assert k.started == "spawn" and "not an ipykernel kernel" in k.reason
    assert k.run("echo hi").strip() == "hi"


# ----------------------------------------------------------------------
# NumPy: BLAS single-threaded in the template, the child's count restored
# ----------------------------------------------------------------------

BLAS_THREADS = textwrap.dedent(
    """
    def blas_threads():
        import ctypes, os
        for line in open('/proc/self/maps'):
            path = line.split()[-1]
            if 'openblas' in os.path.basename(path):
                lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
                for name in ('scipy_openblas_get_num_threads64_', 'openblas_get_num_threads64_',
                             'scipy_openblas_get_num_threads', 'openblas_get_num_threads'):
                    if hasattr(lib, name):
                        return getattr(lib, name)()
    """
)


def test_numpy_preload_forks_and_computes_with_its_threads(kernels):
    """NumPy preloaded: the worker is forked, numpy.dot is right, BLAS has the child's threads.

    The template imports NumPy with OPENBLAS_NUM_THREADS=1 (no BLAS thread
    exists when it forks); each child sets OpenBLAS to the thread count its
    own environment asks for (here: unset, so one per CPU, as a spawned
    NumPy would) before its first execution, and a large product then runs
    multi-threaded, correctly.
    """
    k = kernels.start("import os\nimport numpy as np\n" + BLAS_THREADS)
    assert k.started == "fork", k.reason
    cpus = len(os.sched_getaffinity(0))
    threads_at_start = len(os.listdir(f"/proc/{k.pid}/task"))
    assert k.value("blas_threads()") == cpus
    assert k.value("'OPENBLAS_NUM_THREADS' in os.environ") is False, "the template's pin is gone"
    k.run(
        "n = 600\n"
        "a = (np.arange(n * n).reshape(n, n) % 7).astype(float)\n"
        "b = (np.arange(n * n).reshape(n, n) % 5).astype(float).T\n"
        "exact = a.astype(np.int64) @ b.astype(np.int64)  # integer: no BLAS\n"
    )
    assert k.value("bool((np.dot(a, b) == exact).all())") is True, "BLAS product == exact one"
    tasks = len(os.listdir(f"/proc/{k.pid}/task"))
    assert tasks >= threads_at_start + cpus - 1, "BLAS's threads start in the child, when used"
    [template] = kernels.template_pids()
    assert len(os.listdir(f"/proc/{template}/task")) == 1, "the template stays single-threaded"
    pinned = kernels.start("import numpy as np\n" + BLAS_THREADS, env={"OPENBLAS_NUM_THREADS": "1"})
    assert pinned.started == "fork" and pinned.value("blas_threads()") == 1
    assert pinned.value("float(np.dot(np.ones(1000), np.arange(1000.0)))") == 499500.0


def test_forked_worker_unique_memory_is_smaller(kernels):
    """With NumPy preloaded, a forked worker's unique memory (USS) is well below a spawned one's."""
    forked = [kernels.start("import numpy as np") for _ in range(2)]
    spawned = kernels.start(fork=False)
    spawned.run("import numpy as np")
    for k in (*forked, spawned):
        k.run("x = np.ones(10)")
    uss_fork = max(memory(k.pid).uss for k in forked)
    uss_spawn = memory(spawned.pid).uss
    assert uss_fork < 0.7 * uss_spawn, (uss_fork, uss_spawn)
    info = memory(forked[0].pid)
    assert info.uss <= info.pss <= info.rss


# ----------------------------------------------------------------------
# the template's own life
# ----------------------------------------------------------------------


def test_killing_the_template_leaves_workers_running(kernels):
    """SIGKILL on the template: its workers keep working; the next worker gets a new template."""
    a = kernels.start("x = 1")
    [template] = kernels.template_pids()
    os.kill(template, signal.SIGKILL)
    wait_for(lambda: gone(template), timeout=10, what="the template to die")
    assert a.run("print(x + 1)") == "2\n"
    assert a.poll() is None
    b = kernels.start("x = 1")
    assert b.started == "fork"
    [new] = kernels.template_pids()
    assert new != template and _ppid(b.pid) == new
    assert b.run("print(x + 2)") == "3\n"
    # The orphaned worker's end is still seen (through its pidfd).
    os.kill(a.pid, signal.SIGKILL)
    wait_for(lambda: a.poll() is not None, timeout=10, what="the orphaned worker's end to be seen")


def test_a_start_waiting_on_a_dying_template_spawns(kernels):
    """A start whose template dies before it forks is spawned, saying so."""
    kernels.start("x = 1")
    [template] = kernels.template_pids()
    os.kill(template, signal.SIGSTOP)  # it cannot answer the next request ...
    kernels.server.fork_timeout = 1.0
    try:
        k = kernels.start("x = 1")
    finally:
        os.kill(template, signal.SIGKILL)
    assert k.started == "spawn" and "did not fork within" in k.reason
    assert k.run("print(2)") == "2\n"


def test_a_cancelled_launch_leaves_no_forked_child(kernels, tmp_path):
    """A launch given up while its template forks (closing, timeout) ends the late child."""
    kernels.start("x = 1")
    [template] = kernels.template_pids()
    km = AsyncKernelManager(
        kernel_name="python3", connection_file=str(tmp_path / "late.json"), ip="127.0.0.1"
    )
    install(km, kernels.server, "x = 1")
    os.kill(template, signal.SIGSTOP)  # the fork request waits ...
    try:
        with open(os.devnull, "wb") as null, pytest.raises(LaunchCancelled):
            start = km.start_kernel(
                stdout=null, stderr=null, extra_arguments=["--Kernel._execute_sleep=0"]
            )
            run_provisioner(start, timeout=0.5)
    finally:
        os.kill(template, signal.SIGCONT)  # ... and is answered after the launch gave up
    first = kernels.started[0].pid

    def late_child_forked_and_ended():
        with open(f"/proc/{template}/task/{template}/children") as f:
            children = [int(p) for p in f.read().split()]
        return kernels.server.templates()[0]["forks"] == 2 and children == [first]

    wait_for(late_child_forked_and_ended, timeout=10, what="the late child to be forked and ended")


HOST = textwrap.dedent(
    """
    import os, sys, tempfile
    from jupyter_client.manager import KernelManager
    from nbpool.fork.server import ForkServer
    from nbpool.fork.provisioner import install
    from nbpool.kernels.processes import Reaper
    d = tempfile.mkdtemp()
    reaper = Reaper(d)
    server = ForkServer(d, reaper)
    km = KernelManager(kernel_name="python3", connection_file=os.path.join(d, "k.json"),
                       ip="127.0.0.1")
    install(km, server, "x = 1")
    km.start_kernel(stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w"))
    if sys.argv[1] == "watched":  # as LocalKernel does once the launch returned
        reaper.watch(km.provisioner.process.pid)
    print(km.provisioner.process.pid, server.templates()[0]["pid"], flush=True)
    sys.stdin.read()
    """
)


@pytest.mark.parametrize("worker", ["watched", "known only to the fork server"])
def test_nothing_outlives_a_sigkilled_host(tmp_path, worker):
    """The reaper ends templates and forked workers when their host is SIGKILLed,
    also a worker nothing but the fork server knows yet (its launch cancelled
    late, or the host killed before the pool registered it): a forked kernel
    has no parent poller to end it."""
    host = subprocess.Popen(
        [sys.executable, "-c", HOST, worker],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    pids = []
    try:
        pids = [int(p) for p in host.stdout.readline().split()]
        assert len(pids) == 2 and not any(gone(p) for p in pids)
        host.send_signal(signal.SIGKILL)
        host.wait(30)
        wait_for(lambda: all(gone(p) for p in pids), timeout=10, what="worker and template to end")
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
        for pid in pids:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


# ----------------------------------------------------------------------
# the point of it
# ----------------------------------------------------------------------


def test_fork_is_far_faster_than_spawn_with_a_slow_preload(kernels):
    """With a 1.5 s preload, a forked worker gives a result in well under half a spawn's time.

    The spawned worker runs the preload as nbpool runs it on spawned workers
    (one execution before it counts as ready). A functional check of the
    gap, not a benchmark (benchmarks/bench_warm.py measures it).
    """
    preload = "import time\ntime.sleep(1.5)\nready = True"
    kernels.start(preload)  # makes the template (pays the preload once)

    def forked():
        return kernels.start(preload).run("print(ready)")

    def spawned():
        k = kernels.start(fork=False)
        k.run(preload)
        return k.run("print(ready)")

    times = {}
    for name, fn in (("fork", forked), ("spawn", spawned)):
        t0 = time.perf_counter()
        assert fn() == "True\n"
        times[name] = time.perf_counter() - t0
    assert times["fork"] < 0.5 * times["spawn"], times
