"""The kernel side of the JupyterLab extension (nbpool.notebook.labcomm), on fakes.

A fake kernel (session, IOPub, comm manager) and fake comms stand in for
ipykernel; the pool is a real :class:`nbpool.Pool` on the fake kernel
backend. The same protocol against a real kernel and a real JupyterLab is
in ``tests/browser/test_labextension.py``.
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
import time
from pathlib import Path

import pytest

import nbpool
from nbpool.notebook import labcomm as nbcomm
from nbpool.notebook.jobs import Jobs
from nbpool.render import STATE_COLOURS
from nbpool.testing import FakeBackend
from tests.helpers import wait_for

#: Stands in for ipykernel's parent-header context variable.
PARENT: contextvars.ContextVar[str] = contextvars.ContextVar("parent")


class FakeSession:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict, object]] = []

    def send(self, stream, msg_type, content=None, parent=None, ident=None, **kwargs):
        self.sent.append((msg_type, content, parent))


class FakeManager:
    def __init__(self) -> None:
        self.targets: dict[str, object] = {}

    def register_target(self, name, handler) -> None:
        self.targets[name] = handler

    def unregister_target(self, name, handler):
        return self.targets.pop(name)


class FakeKernel:
    def __init__(self) -> None:
        self.session = FakeSession()
        self.iopub_socket = object()
        self.comm_manager = FakeManager()
        self.log = logging.getLogger("test-kernel")


class FakeShell:
    def __init__(self) -> None:
        self.kernel = FakeKernel()


class FakeComm:
    """Records what the kernel sends, with the parent the sending context had."""

    _ids = iter(range(10**6))

    def __init__(self) -> None:
        self.comm_id = f"c{next(self._ids)}"
        self.sent: list[tuple[dict, str | None]] = []
        self.closed = False
        self._on_msg = self._on_close = None
        self._lock = threading.Lock()

    def on_msg(self, callback) -> None:
        self._on_msg = callback

    def on_close(self, callback) -> None:
        self._on_close = callback

    def send(self, data) -> None:
        with self._lock:
            self.sent.append((data, PARENT.get(None)))

    def close(self) -> None:
        self.closed = True

    # -- the frontend's side -------------------------------------------------

    def request(self, **data) -> dict:
        """Send an action the way the panel does and return the kernel's reply."""
        data.setdefault("request", f"r{len(self.sent)}")
        self._on_msg({"content": {"comm_id": self.comm_id, "data": data}})
        return next(d for d, _ in reversed(self.sent) if d.get("request") == data["request"])

    def statuses(self) -> list[dict | None]:
        with self._lock:
            return [d["status"] for d, _ in self.sent if d["kind"] == "status"]


class Holder:
    """What the magics hold: the current pool, or None."""

    def __init__(self) -> None:
        self.pool: nbpool.Pool | None = None

    def get_pool(self):
        return self.pool


@pytest.fixture
def shell():
    s = FakeShell()
    yield s
    nbcomm.unregister(s)


@pytest.fixture
def holder():
    h = Holder()
    yield h
    if h.pool is not None:
        h.pool.shutdown()


def start_pool(holder: Holder, size: int = 2) -> nbpool.Pool:
    pool = nbpool.Pool(size=size, backend=FakeBackend())
    holder.pool = pool.start()
    return pool


def open_comm(shell, parent: str = "comm_open-1") -> FakeComm:
    """Open a comm as ipykernel would: the target handler runs in the open's context."""
    c = FakeComm()
    handler = shell.kernel.comm_manager.targets[nbcomm.TARGET]

    def run() -> None:
        PARENT.set(parent)
        handler(c, {"content": {"comm_id": c.comm_id, "target_name": nbcomm.TARGET, "data": {}}})

    contextvars.copy_context().run(run)
    return c


def test_register_outside_a_kernel_does_nothing():
    """In a terminal IPython (no kernel) there is no frontend: register is a no-op."""

    class Terminal:
        pass

    nbcomm.register(Terminal(), lambda: None)
    nbcomm.unregister(Terminal())


def test_register_announces_with_a_parentless_open_and_close(shell, holder):
    """register() registers the target once and announces itself with a
    comm_open/comm_close pair that has no parent (nbclient ignores it)."""
    nbcomm.register(shell, holder.get_pool)
    nbcomm.register(shell, holder.get_pool)  # idempotent: one target, a second hello
    assert list(shell.kernel.comm_manager.targets) == [nbcomm.TARGET]
    sent = shell.kernel.session.sent
    assert [m for m, _, _ in sent] == ["comm_open", "comm_close"] * 2
    assert all(parent is None for _, _, parent in sent)
    opened = sent[0][1]
    assert opened["target_name"] == nbcomm.TARGET and opened["data"] == {"kind": "hello"}
    assert sent[1][1]["comm_id"] == opened["comm_id"]


def test_open_gets_a_snapshot_then_live_changes(shell, holder):
    """A new comm gets the current status at once (null without a pool); a
    pool started later and its changes are pushed without being asked."""
    nbcomm.register(shell, holder.get_pool)
    c = open_comm(shell)
    wait_for(lambda: c.statuses() == [None], what="the first (empty) snapshot")
    pool = start_pool(holder)
    last = wait_for(lambda: c.statuses()[-1], what="a snapshot of the new pool")
    assert last["schema"] == "nbpool.status/1" and last["size"] == 2
    pool.resize(3)
    wait_for(lambda: len(c.statuses()[-1]["workers"]) == 3, what="the resized pool")


def test_pushes_are_replies_to_their_comm_open_not_to_a_cell(shell, holder):
    """Every push runs in the context of its comm's comm_open handler, so
    ipykernel 7 gives it that parent whatever cell runs meanwhile."""
    nbcomm.register(shell, holder.get_pool)
    first, second = open_comm(shell, "open-A"), open_comm(shell, "open-B")
    PARENT.set("some running cell")
    start_pool(holder)
    for c, parent in [(first, "open-A"), (second, "open-B")]:
        wait_for(lambda c=c: c.statuses() and c.statuses()[-1], what="pushes to both comms")
        assert {p for d, p in c.sent} == {parent}


def test_no_payload_has_a_top_level_state_key(shell, holder):
    """nbclient takes a comm message with a top-level "state" key for widget
    state and crashes: no payload nbpool sends has one."""
    nbcomm.register(shell, holder.get_pool)
    c = open_comm(shell)
    start_pool(holder)
    wait_for(lambda: c.statuses() and c.statuses()[-1], what="a snapshot")
    c.request(action="resize", size=0)
    c.request(action="refresh")
    assert all("state" not in data for data, _ in c.sent)
    assert all(
        "state" not in content["data"]
        for _, content, _ in shell.kernel.session.sent
        if "data" in content
    )


def test_unchanged_status_is_not_pushed_again(shell, holder):
    """Pushes happen only when the snapshot changed (uptime aside)."""
    nbcomm.register(shell, holder.get_pool)
    service = nbcomm._services[id(shell)]
    service._stop.set()
    service._wake.set()
    service._thread.join()  # publish by hand: no timing involved
    c = open_comm(shell)
    start_pool(holder)
    wait_for(lambda: all(w["state"] == "idle" for w in holder.pool.status()["workers"]))
    service._publish()
    service._publish()
    assert len(c.statuses()) == 1
    holder.pool.end_session("nobody")  # no change
    service._publish()
    assert len(c.statuses()) == 1
    holder.pool.resize(1)
    wait_for(lambda: len(holder.pool.status()["workers"]) == 1)
    service._publish()
    assert len(c.statuses()) == 2


def test_pushes_are_at_most_four_a_second(shell):
    """A status that changes all the time is still pushed at most every
    PUSH_INTERVAL (0.25 s)."""
    calls = iter(range(10**6))

    class Changing:
        def status(self):
            return {"workers": [], "closed": False, "events": [], "time": 0, "n": next(calls)}

    pool = Changing()
    nbcomm.register(shell, lambda: pool)
    c = open_comm(shell)
    wait_for(lambda: c.statuses(), what="the first push")
    start, first = time.monotonic(), len(c.statuses())
    wait_for(lambda: time.monotonic() - start >= 1.0, what="one second")
    assert len(c.statuses()) - first <= 5


@pytest.mark.parametrize(
    "request_, error",
    [
        (
            {"action": "interrupt", "worker": "w9"},
            r"no worker 'w9' in the pool \(workers now: w1, w2\)",
        ),
        (
            {"action": "restart", "worker": "w9"},
            r"no worker 'w9' in the pool: .*\(workers now: w1, w2\)",
        ),
        (
            {"action": "end_session", "session": "gone"},
            r"no session 'gone': it was already ended \(sessions now: none\)",
        ),
        ({"action": "resize", "size": "0"}, r"whole number >= 1, got 0; use pool.shutdown\(\)"),
        ({"action": "resize", "size": "abc"}, "whole number >= 1, got 'abc'"),
        ({"action": "resize", "size": ""}, "whole number >= 1, got ''"),
        ({"action": "resize"}, "whole number >= 1, got None"),
        ({"action": "resize", "size": 10_000_000}, "pool size 10000000 is above size_limit="),
        ({"action": "restart"}, "action 'restart' needs a worker name, got None"),
        ({"action": "explode"}, "unknown action 'explode'"),
        ({"action": "detach"}, "this pool does not keep sessions: create it with keep_sessions"),
    ],
)
def test_bad_actions_get_a_one_line_error_and_change_nothing(shell, holder, request_, error):
    """An action the pool cannot take is answered ok=false with a one-line
    reason; the pool keeps its workers and size."""
    nbcomm.register(shell, holder.get_pool)
    pool = start_pool(holder)
    before = [w["id"] for w in pool.status()["workers"]]
    reply = open_comm(shell).request(**request_)
    assert reply["kind"] == "reply" and reply["ok"] is False
    assert re.search(error, reply["error"]) and "\n" not in reply["error"]
    after = pool.status()
    assert [w["id"] for w in after["workers"]] == before and after["size"] == 2


def test_actions_without_a_pool_say_how_to_get_one(shell, holder):
    """Before %pool start, every action but refresh is refused with the remedy."""
    nbcomm.register(shell, holder.get_pool)
    reply = open_comm(shell).request(action="restart", worker="w1")
    assert reply == {
        "kind": "reply",
        "request": reply["request"],
        "ok": False,
        "error": "this kernel has no pool: run %pool start first",
    }


def test_actions_take_effect_on_the_pool(shell, holder):
    """restart, end_session and resize go through the Pool API and are
    answered ok with what happened."""
    nbcomm.register(shell, holder.get_pool)
    pool = start_pool(holder)
    c = open_comm(shell)
    with pool.lease(session="etl") as lease:
        etl_worker = lease.worker_id
    reply = c.request(action="end_session", session="etl")
    assert reply["ok"] and "session 'etl' ended" in reply["message"]
    wait_for(lambda: etl_worker not in {w["id"] for w in pool.status()["workers"]})
    target = pool.status()["workers"][0]["id"]
    reply = c.request(action="restart", worker=target)
    assert (
        reply["ok"] and reply["message"] == f"worker {target} is being replaced by a fresh kernel"
    )
    wait_for(lambda: target not in {w["id"] for w in pool.status()["workers"]})
    reply = c.request(action="interrupt", worker=pool.status()["workers"][0]["id"])
    assert reply["ok"] and "was not running anything" in reply["message"]
    reply = c.request(action="resize", size=" 3 ")
    assert reply == {
        "kind": "reply",
        "request": reply["request"],
        "ok": True,
        "message": "pool resized to 3",
    }
    assert pool.status()["size"] == 3


def test_stop_shuts_the_pool_down(shell, holder):
    """The panel's Stop: every worker stops; the pool is closed."""
    nbcomm.register(shell, holder.get_pool)
    pool = start_pool(holder)
    reply = open_comm(shell).request(action="stop")
    assert reply["ok"] and reply["message"] == "pool stopped (2 worker(s), kept sessions' too)"
    assert pool.closed


def test_unregister_closes_comms_and_removes_the_target(shell, holder):
    """%unload_ext: frontends see their comm closed (they hide the pool) and
    the target is gone; the push thread ends."""
    nbcomm.register(shell, holder.get_pool)
    service = nbcomm._services[id(shell)]
    c = open_comm(shell)
    nbcomm.unregister(shell)
    assert c.closed and nbcomm.TARGET not in shell.kernel.comm_manager.targets
    assert not service._thread.is_alive()


def test_oldest_comms_beyond_the_limit_are_closed(shell, holder):
    """Reloaded pages leave comms open; beyond MAX_COMMS the oldest are closed."""
    nbcomm.register(shell, holder.get_pool)
    comms = [open_comm(shell) for _ in range(nbcomm.MAX_COMMS + 2)]
    assert [c.closed for c in comms] == [True, True] + [False] * nbcomm.MAX_COMMS


def stopped_service(shell, holder) -> nbcomm.StatusService:
    """The comm service with its push thread ended: the test publishes by hand."""
    nbcomm.register(shell, holder.get_pool)
    service = nbcomm._services[id(shell)]
    service._stop.set()
    service._wake.set()
    service._thread.join()
    return service


def test_a_death_stays_in_the_pushes_after_its_replacement(shell, holder):
    """A worker killed and replaced between two pushes is still pushed, as a
    dead worker with its death as last_error and counted by the summary, so
    the status item warns and the panel lists it; pool.status() shows only
    the present."""
    service = stopped_service(shell, holder)
    c = open_comm(shell)
    backend = FakeBackend()
    pool = holder.pool = nbpool.Pool(size=1, backend=backend).start()
    wait_for(lambda: pool.status()["workers"][0]["state"] == "idle", what="w1 ready")
    service._publish()
    assert [(w["id"], w["state"]) for w in c.statuses()[-1]["workers"]] == [("w1", "idle")]
    pid = pool.status()["workers"][0]["pid"]
    backend.started[0].dead = "was killed by signal 9"
    wait_for(
        lambda: [(w["id"], w["state"]) for w in pool.status()["workers"]] == [("w2", "idle")],
        what="the replacement to be ready and the dead record gone",
    )
    service._publish()
    pushed = c.statuses()[-1]
    assert [(w["id"], w["state"]) for w in pushed["workers"]] == [("w2", "idle"), ("w1", "dead")]
    dead = pushed["workers"][1]
    assert dead["pid"] == pid and dead["last_error"] == "worker w1 was killed by signal 9"
    assert pushed["summary"] == "0/1 busy, 0 queued, 1 failing/restarting"
    service._publish()
    assert len(c.statuses()) == 2, "unchanged: not pushed again"


def test_a_shown_death_clears_after_death_shown_seconds():
    """The dead worker's row goes DEATH_SHOWN seconds after its death (its died
    event); a worker never seen alive still shows; a closed pool forgets."""
    from nbpool.status import DEATH_SHOWN, DeathsShown

    row = {"id": "w2", "state": "idle", "session": None, "pid": 7}
    event = {"time": 100.0, "kind": "died", "worker": "w1", "message": "worker w1 exited"}
    snap = {
        "time": 100.0,
        "closed": False,
        "kernel_name": "python3",
        "workers": [row],
        "waiting": 0,
        "events": [event],
        "summary": "0/1 busy, 0 queued",
    }
    deaths = DeathsShown()
    shown = deaths.show(snap)
    assert [(w["id"], w["state"], w["pid"]) for w in shown["workers"]] == [
        ("w2", "idle", 7),
        ("w1", "dead", None),
    ]
    assert shown["summary"] == "0/1 busy, 0 queued, 1 failing/restarting"
    almost = deaths.show({**snap, "time": 100.0 + DEATH_SHOWN - 0.1})
    assert [w["id"] for w in almost["workers"]] == ["w2", "w1"]
    assert deaths.show({**snap, "time": 100.0 + DEATH_SHOWN}) == {
        **snap,
        "time": 100.0 + DEATH_SHOWN,
    }
    assert deaths.show({**snap, "closed": True})["workers"] == [row]
    assert deaths.show(None) is None


def test_frontend_state_colours_match_the_python_ones():
    """The panel colours worker states with the same table as the HTML repr."""
    source = (Path(__file__).parents[2] / "labextension" / "src" / "types.ts").read_text()
    table = source[source.index("STATE_COLOURS") :]
    table = table[: table.index("};")]
    colours = dict(re.findall(r"(\w+): '(#[0-9a-f]{6})'", table))
    assert colours == STATE_COLOURS


# -- jobs: cells, follow, unfollow, interrupt_job -------------------------------


def bg_job(jobs, cell_id="cell-1", client="page-1"):
    parent = {"header": {"session": client}, "metadata": {"cellId": cell_id}}
    return jobs.new("a", background=True, parent=parent)


def test_cells_are_pushed_on_open_and_when_they_change(shell, holder):
    """A new comm gets the job list at once; a new job or more output is pushed again."""
    jobs = Jobs()
    nbcomm.register(shell, holder.get_pool, jobs)
    c = open_comm(shell)

    def cells():
        with c._lock:
            return [d["cells"] for d, _ in c.sent if d["kind"] == "cells"]

    wait_for(lambda: cells() == [[]], what="the first (empty) job list")
    job = bg_job(jobs)
    wait_for(lambda: len(cells()) == 2, what="the new job")
    (cell,) = cells()[-1]
    assert cell["job"] == 1 and cell["cell_id"] == "cell-1" and cell["client"] == "page-1"
    assert cell["state"] == "queued" and cell["position"] == 1 and cell["seq"] == 0
    job.record.stream("stdout", "hello\n")
    wait_for(lambda: cells()[-1][0]["seq"] == 1, what="the job's output size")
    assert cells()[-1][0]["bytes"] == len("hello\n")


def test_a_job_state_change_is_pushed_without_waiting_for_the_interval(shell, holder, monkeypatch):
    """A badge must not show "queued" after its cell's output: a job that is
    new, starts running or ends is pushed at once, not at the next tick."""
    monkeypatch.setattr(nbcomm, "PUSH_INTERVAL", 60.0)  # the tick alone would never come
    jobs = Jobs()
    nbcomm.register(shell, holder.get_pool, jobs)
    c = open_comm(shell)

    def states():
        with c._lock:
            return [[x["state"] for x in d["cells"]] for d, _ in c.sent if d["kind"] == "cells"]

    wait_for(lambda: states() == [[]], what="the first (empty) job list")
    job = bg_job(jobs)
    wait_for(lambda: states()[-1:] == [["queued"]], what="the new job")
    job.running("w1")
    wait_for(lambda: states()[-1:] == [["running"]], what="the running job")
    job.finish("done")
    wait_for(lambda: states()[-1:] == [["done"]], what="the ended job")


def test_follow_replies_with_the_record_then_sends_later_events_in_order(shell, holder):
    """follow: the reply has the outputs and their seq; then every event, with its seq,
    in the comm_open's context, until end; unfollow stops them."""
    jobs = Jobs()
    nbcomm.register(shell, holder.get_pool, jobs)
    job = bg_job(jobs)
    job.record.stream("stdout", "a\n")
    c = open_comm(shell, "open-A")
    reply = c.request(action="follow", job=1)
    assert reply["ok"] and reply["state"] == "queued" and reply["seq"] == 1
    assert reply["outputs"] == [{"output_type": "stream", "name": "stdout", "text": "a\n"}]
    job.record.stream("stdout", "b\n")
    job.finish("done")

    def events():
        with c._lock:
            return [(d, p) for d, p in c.sent if d["kind"] == "job"]

    assert [d for d, _ in events()] == [
        {"kind": "job", "job": 1, "seq": 2, "event": {"op": "stream", "index": 0, "text": "b\n"}},
        {"kind": "job", "job": 1, "seq": 3, "event": {"op": "end", "state": "done"}},
    ]
    assert {p for _, p in events()} == {"open-A"}
    again = bg_job(jobs)
    c.request(action="follow", job=again.number)
    assert c.request(action="unfollow", job=again.number)["ok"]
    again.record.stream("stdout", "unseen\n")
    assert all(d["job"] == 1 for d, _ in events())


def test_a_closed_comm_stops_following(shell, holder):
    """A page that goes away (comm_close) is no longer sent its jobs' events."""
    jobs = Jobs()
    nbcomm.register(shell, holder.get_pool, jobs)
    job = bg_job(jobs)
    c = open_comm(shell)
    c.request(action="follow", job=1)
    c._on_close({})
    job.record.stream("stdout", "after\n")
    assert not [d for d, _ in c.sent if d["kind"] == "job"]


@pytest.mark.parametrize(
    "request_, error",
    [
        ({"action": "follow", "job": 5}, r"^follow: no job 5 \(jobs: 1-2\)$"),
        ({"action": "follow"}, r"^follow: no job None \(jobs: 1-2\)$"),
        ({"action": "follow", "job": 2}, r"^job 2 ran in the foreground: it has no output"),
        ({"action": "interrupt_job", "job": 7}, r"^interrupt_job: no job 7 \(jobs: 1-2\)$"),
    ],
)
def test_bad_job_actions_get_a_one_line_error(shell, holder, request_, error):
    """Unknown jobs and foreground jobs are refused with one line."""
    jobs = Jobs()
    nbcomm.register(shell, holder.get_pool, jobs)
    start_pool(holder)
    bg_job(jobs)
    jobs.new("a", background=False, parent=None)
    reply = open_comm(shell).request(**request_)
    assert reply["ok"] is False and re.search(error, reply["error"]), reply


def test_interrupt_job_withdraws_a_queued_job(shell, holder):
    """interrupt_job on a job still waiting for its worker takes it out of the queue."""
    from concurrent.futures import Future

    jobs = Jobs()
    nbcomm.register(shell, holder.get_pool, jobs)
    start_pool(holder)
    job = bg_job(jobs)
    future = Future()
    job.attach(future)
    reply = open_comm(shell).request(action="interrupt_job", job=1)
    assert reply == {
        "kind": "reply",
        "request": reply["request"],
        "ok": True,
        "message": "job 1 withdrawn",
    }
    assert future.cancelled()


def test_job_events_go_out_while_a_push_is_being_sent(shell, holder):
    """A job event sent while the same comm's status push is under way (another thread in
    ipykernel; nested here, which is the same for a context) still reaches the page."""
    jobs = Jobs()
    nbcomm.register(shell, holder.get_pool, jobs)
    job = bg_job(jobs)
    c = open_comm(shell)
    c.request(action="follow", job=1)
    plain_send = c.send

    def send_and_stream(data) -> None:
        plain_send(data)
        if data["kind"] == "status":
            job.record.stream("stdout", "during a push\n")

    c.send = send_and_stream
    start_pool(holder)
    wait_for(lambda: any(d["kind"] == "job" for d, _ in list(c.sent)), what="the job event")
    job.record.stream("stdout", "later\n")
    events = [d["event"] for d, _ in list(c.sent) if d["kind"] == "job"]
    texts = [e.get("text") or e["output"]["text"] for e in events]
    assert texts[:1] == ["during a push\n"] and texts[-1] == "later\n"
