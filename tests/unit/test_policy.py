"""The pool's rules, on a :class:`~nbpool.core.policy.Policy` alone.

One test per arrow of the worker lifecycle table in
:mod:`nbpool.core.coordinator` (and per "shown" state that is not the
internal one). No coordinator, no lock, no thread, no backend: each test
feeds the policy events and checks the records and the actions it returns.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, replace

import pytest

from nbpool.core.policy import Policy
from nbpool.core.records import Grant, Refuse, Release, Settings, Start, Stop, Waiter, Worker
from nbpool.errors import WorkerStartFailed
from nbpool.testing import FakeKernel

_pids = itertools.count(2000)


@dataclass(eq=False)
class Held:
    """A lease as the coordinator would make it from a Grant (what the policy reads)."""

    worker: Worker
    session: str | None
    executions: int = 0
    busy: bool = False
    dirty: str | None = None
    holder: threading.Thread | None = None


def make(size: int = 1, **kw) -> Policy:
    kw.setdefault("min_size", size)
    kw.setdefault("max_size", max(size, 1))
    return Policy(Settings(size=size, **kw))


def ready(policy: Policy, count: int = 1) -> list[Worker]:
    """Start ``count`` workers and report each started."""
    workers = [action.worker for action in policy.start(count)]
    for w in workers:
        assert policy.started(w, FakeKernel(w.id, w.kernel_name, next(_pids)))[0]
    return workers


def hold(actions: list, policy: Policy) -> Held:
    """The one Grant in ``actions``, made a lease as the coordinator does."""
    (grant,) = [a for a in actions if isinstance(a, Grant)]
    lease = Held(grant.worker, grant.session)
    grant.worker.lease = grant.waiter.lease = lease
    return lease


def lease(policy: Policy, session: str = "s") -> Held:
    return hold(policy.request(Waiter(session, "python3")), policy)


def starts(actions: list) -> list[Worker]:
    return [a.worker for a in actions if isinstance(a, Start)]


def stops(actions: list) -> list[Worker]:
    return [a.worker for a in actions if isinstance(a, Stop)]


def never_lost(worker_id: str, now: float) -> None:
    return None


# -- starting ---------------------------------------------------------------


def test_starting_goes_idle_when_started_and_serves_a_waiter():
    """starting -> idle (started): a ready kernel makes the worker idle, and a
    request that waited for it is granted in the same step."""
    policy = make(size=0, max_size=1)
    actions = policy.request(Waiter("s", "python3"))
    (w,) = starts(actions)
    assert w.state == "starting" and w.public_state() == "starting"
    wanted, actions = policy.started(w, FakeKernel(w.id, "python3", 1))
    assert wanted and w.kernel is not None
    (grant,) = actions
    assert isinstance(grant, Grant) and grant.worker is w and grant.session == "s"
    assert w.state == "leased" and policy.sessions.get("s").worker_id == w.id


def test_starting_goes_failed_when_the_start_fails_and_its_waiter_is_told():
    """starting -> failed (start failed): the worker waits for a retry at
    ``retry_at``; a new session only that start could serve is refused at
    once with the kernel's stderr."""
    policy = make(size=0, max_size=1)
    (w,) = starts(policy.request(Waiter("s", "python3")))
    actions = policy.start_failed(w, WorkerStartFailed("kernel exited", "Traceback: nope"))
    assert w.state == "failed" and w.public_state() == "failed" and w.retry_at is not None
    (refused,) = actions
    assert isinstance(refused, Refuse) and isinstance(refused.error, WorkerStartFailed)
    assert "nope" in refused.error.stderr_tail and "retries in" in str(refused.error)


def test_a_start_that_would_fail_again_is_not_retried():
    """starting -> failed, not retried: a failure marked ``retry=False`` (a
    preload that raises) gets no ``retry_at``."""
    policy = make(size=0, max_size=1)
    (w,) = starts(policy.start(1))
    policy.start_failed(w, WorkerStartFailed("the preload raised", retry=False))
    assert w.state == "failed" and w.retry_at is None
    assert policy.check(10**9, never_lost) == []


def test_starting_goes_stopping_when_the_pool_closes():
    """starting -> stopping (closed): closing marks it stopping, and its
    kernel, ready too late, is not wanted."""
    policy = make(size=0, max_size=1)
    (w,) = starts(policy.start(1))
    policy.close()
    doomed, kept = policy.closing()
    assert doomed == [w] and kept == [] and w.state == "stopping"
    wanted, actions = policy.started(w, FakeKernel(w.id, "python3", 1))
    assert not wanted and actions == []


def test_a_starting_replacement_is_shown_restarting():
    """starting, shown restarting: a worker that replaces another."""
    policy = make(size=1)
    (w,) = ready(policy)
    lease(policy).dirty = "an execution was abandoned before it finished"
    (fresh,) = starts(policy.release(w.lease))
    assert fresh.replaces == w.id and fresh.public_state() == "restarting"


# -- idle -------------------------------------------------------------------


def test_idle_goes_leased_when_granted():
    """idle -> leased (granted): a request takes a free idle worker at once,
    and its session is bound to it."""
    policy = make(size=1)
    (w,) = ready(policy)
    actions = policy.request(Waiter("etl", "python3"))
    (grant,) = actions
    assert isinstance(grant, Grant) and grant.worker is w
    assert (grant.session, grant.generation, grant.session_reset) == ("etl", 0, None)
    assert w.state == "leased" and policy.sessions.get("etl").worker_id == w.id
    assert not policy.waiters


def test_idle_goes_stopping_when_replaced():
    """idle -> stopping (replace): ending an idle worker's session replaces it
    with a fresh kernel before anyone else can get it."""
    policy = make(size=1)
    (w,) = ready(policy)
    policy.release(lease(policy, "a"))
    actions = policy.end_session("a")
    assert stops(actions) == [w] and w.state == "stopping"
    (fresh,) = starts(actions)
    assert fresh.replaces == w.id and policy.sessions.get("a") is None


def test_idle_goes_stopping_when_resized_away():
    """idle -> stopping (resize): shrinking stops free idle workers, never
    one bound to a session."""
    policy = make(size=3, max_size=3)
    bound, *free = ready(policy, 3)
    policy.release(lease(policy, "etl"))
    assert bound.state == "idle" and policy.sessions.get("etl").worker_id == bound.id
    actions = policy.resize(replace(policy.settings, size=1, min_size=1))
    assert stops(actions) == free and all(w.state == "stopping" for w in free)
    assert bound.state == "idle" and policy.settings.size == 1


def test_idle_goes_stopping_when_it_dies():
    """idle -> stopping (death): a health check that finds it dead replaces it
    at once and resets its session, which is told why."""
    policy = make(size=1)
    (w,) = ready(policy)
    policy.release(lease(policy, "s"))
    w.kernel.dead = "exited with code 1"
    actions = policy.check(0.0, never_lost)
    assert stops(actions) == [w] and w.public_state() == "dead"
    assert starts(actions)[0].replaces == w.id
    info = policy.sessions.get("s")
    assert info.worker_id is None and info.generation == 1
    assert "exited with code 1" in info.reset_reason and policy.counters["deaths"] == 1


# -- leased -----------------------------------------------------------------


def test_leased_goes_idle_on_a_clean_release():
    """leased -> idle (clean release): the worker stays bound to its session,
    and its executions are counted."""
    policy = make(size=1)
    (w,) = ready(policy)
    held = lease(policy, "s")
    held.executions = 3
    assert policy.release(held) == []
    assert w.state == "idle" and w.lease is None and w.executions == 3
    assert policy.sessions.get("s").worker_id == w.id


def test_leased_is_shown_busy_while_it_executes():
    """leased, shown busy: its holder is executing code."""
    policy = make(size=1)
    (w,) = ready(policy)
    held = lease(policy)
    assert w.public_state() == "leased"
    held.busy = True
    assert w.public_state() == "busy"


def test_leased_goes_stopping_on_a_dirty_release():
    """leased -> stopping (dirty): a lease that ended abnormally is never
    handed on; the worker is restarted and its session told why."""
    policy = make(size=1)
    (w,) = ready(policy)
    held = lease(policy, "s")
    held.dirty = "an execution was abandoned before it finished"
    actions = policy.release(held)
    assert stops(actions) == [w] and len(starts(actions)) == 1
    assert "abandoned" in policy.sessions.get("s").reset_reason
    assert policy.counters["restarts"] == 1 and policy.counters["failures"] == 1


def test_leased_goes_stopping_when_retired():
    """leased -> stopping (retired): a session ended while its worker was
    leased; the release replaces the worker instead of handing it on."""
    policy = make(size=1)
    (w,) = ready(policy)
    held = lease(policy, "a")
    assert policy.end_session("a") == [] and w.retire is not None and w.state == "leased"
    actions = policy.release(held)
    assert stops(actions) == [w] and starts(actions)[0].replaces == w.id
    assert policy.counters["restarts"] == 0, "a retirement is no restart"


def test_leased_goes_stopping_when_recycled():
    """leased -> stopping (recycled): ``max_executions`` reached at release."""
    policy = make(size=1, max_executions=2)
    (w,) = ready(policy)
    held = lease(policy, "s")
    held.executions = 2
    actions = policy.release(held)
    assert stops(actions) == [w]
    assert "max_executions" in policy.sessions.get("s").reset_reason


def test_leased_dead_worker_stays_until_its_holder_releases_it():
    """(any)+death, leased -> stopping at release: a leased worker found dead
    is shown dead and kept for its holder (who gets WorkerDied); its release
    replaces it."""
    policy = make(size=1)
    (w,) = ready(policy)
    held = lease(policy, "s")
    w.kernel.dead = "was killed by signal 9"
    assert policy.check(0.0, never_lost) == []
    assert w.state == "leased" and w.public_state() == "dead" and w.death is not None
    actions = policy.release(held)
    assert stops(actions) == [w] and len(starts(actions)) == 1
    assert "signal 9" in policy.sessions.get("s").reset_reason


def test_a_lease_whose_holder_thread_died_is_released_dirty():
    """leased -> stopping (dirty), found by the monitor: a holder thread that
    ended without releasing makes the check release its lease, dirty."""
    policy = make(size=1)
    ready(policy)
    held = lease(policy)
    held.holder = threading.Thread(target=lambda: None)
    held.holder.start()
    held.holder.join()
    (release,) = policy.check(0.0, never_lost)
    assert isinstance(release, Release) and release.lease is held
    assert "holder thread ended" in held.dirty


# -- failed -----------------------------------------------------------------


def test_failed_goes_starting_when_its_retry_is_due():
    """failed -> starting (retry due): a check at or after ``retry_at`` starts
    it again, and not before."""
    policy = make(size=0, max_size=1)
    (w,) = starts(policy.start(1))
    policy.start_failed(w, WorkerStartFailed("boom"))
    assert policy.check(w.retry_at - 0.01, never_lost) == []
    actions = policy.check(w.retry_at, never_lost)
    assert starts(actions) == [w] and w.state == "starting" and w.retry_at is None


def test_failed_goes_starting_when_restarted():
    """failed -> starting (restart): a restart on request retries at once,
    not after the backoff."""
    policy = make(size=0, max_size=1)
    (w,) = starts(policy.start(1))
    policy.start_failed(w, WorkerStartFailed("boom"))
    actions = policy.restart(w.id)
    assert starts(actions) == [w] and w.state == "starting"


def test_failed_goes_stopping_when_resized_away():
    """failed -> stopping (resized away): a shrink stops failed workers first."""
    policy = make(size=2, max_size=2)
    idle, failing = (a.worker for a in policy.start(2))
    policy.started(idle, FakeKernel(idle.id, "python3", 1))
    policy.start_failed(failing, WorkerStartFailed("boom"))
    actions = policy.resize(replace(policy.settings, size=1, min_size=1))
    assert stops(actions) == [failing] and failing.state == "stopping" and idle.state == "idle"


# -- stopping ---------------------------------------------------------------


def test_stopping_drops_the_record_once_stopped():
    """stopping -> (record dropped): once its kernel stopped, the worker is gone."""
    policy = make(size=1)
    (w,) = ready(policy)
    policy.release(lease(policy, "a"))
    policy.end_session("a")
    assert w.state == "stopping" and w.id in policy.workers
    policy.stopped(w)
    assert w.id not in policy.workers


def test_resize_above_size_limit_changes_nothing():
    """A resize above ``size_limit`` is refused before any record changes."""
    from nbpool.errors import InvalidConfig

    policy = make(size=1)
    before = policy.settings
    with pytest.raises(InvalidConfig, match="above size_limit=1024"):
        policy.resize(replace(before, size=10**7))
    assert policy.settings is before and not policy.waiters
