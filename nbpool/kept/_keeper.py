"""The keeper process: listens to a pool's kept sessions while no pool is attached.

Run as ``python -m nbpool.kept._keeper POOL_DIR`` by
:meth:`nbpool.kept.store.KeptPool.ensure_keeper`, one per kept pool (it holds
``keeper.lock`` for its life; a second one exits at once). Its argv is only
the owner-only directory; connection keys are read from ``state.json``.

Every :data:`TICK` it

- opens an iopub subscription to each kept session's worker (as soon as the
  session is kept, so nothing is missed when the notebook goes), and reads
  what arrived into a short buffer;
- takes the pool lock for a moment (:mod:`nbpool.kept.store`). Held by a pool: that
  pool shows the output of its own requests; output of an earlier pool's
  request (a ``--bg`` cell still running when the session was re-adopted)
  reaches no cell, so it is journaled at once; the rest stays in the buffer
  for :data:`RECENT` seconds. Free: no pool is attached, so outputs produced since the detach
  (``detached_at``, written by ``detach()``; for a pool that died, the last
  moment the keeper saw it attached) go to the sessions' journals; after
  ``keep_for`` seconds unattached the kept workers are stopped and the
  records removed; and when no kept worker is left alive the keeper exits
  (the records stay, so a later pool reports those sessions as reset).
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import time

import zmq
from jupyter_client.blocking import BlockingKernelClient

from ..kernels.execution import to_output
from .store import KeptPool, alive, expired

#: Seconds between looks at the lock and the state.
TICK = 0.2
#: Seconds of output kept in memory while a pool is attached (covers the
#: moments between a pool's last output and the keeper noticing it left).
RECENT = 10.0
#: Seconds between kernel_info requests until a subscription carries traffic.
NUDGE = 0.2


class _Follow:
    """An iopub subscription to one kept worker, live once traffic arrived on it.

    Until then it asks for ``kernel_info`` on the control channel (answered
    even while the kernel runs a cell, with iopub status messages): ZMQ
    subscriptions take a moment, and a pool that detaches waits until the
    keeper follows every kept session (:meth:`KeptPool.following`).
    """

    def __init__(self, record: dict, context: zmq.Context) -> None:
        client = BlockingKernelClient(context=context)
        client.load_connection_info(record["connection"])
        self.pid = record["pid"]
        self.session = client.session
        self.iopub = client.connect_iopub()
        self.control = client.connect_control()
        self.live = False
        self._next_nudge = 0.0

    def nudge(self, now: float) -> None:
        if not self.live and now >= self._next_nudge:
            self.session.send(self.control, "kernel_info_request", {})
            self._next_nudge = now + NUDGE
        while self.control.poll(0):  # replies: only their iopub echo matters
            self.control.recv_multipart()

    def outputs(self):
        """(time, requesting client's session id, nbformat output) of what arrived."""
        while True:
            try:
                _, msg = self.session.recv(self.iopub, mode=zmq.NOBLOCK)
            except ValueError:  # a bad signature: not our kernel's message
                continue
            if msg is None:
                return
            self.live = True
            out = to_output(msg["msg_type"], msg["content"])
            if out is None or out["output_type"] == "clear_output":
                continue
            if out["output_type"] == "update_display_data":
                out["output_type"] = "display_data"
            out.pop("transient", None)
            date = msg["header"].get("date")
            when = date.timestamp() if hasattr(date, "timestamp") else time.time()
            yield when, msg["parent_header"].get("session"), out

    def close(self) -> None:
        self.iopub.close(linger=0)
        self.control.close(linger=0)


class Keeper:
    def __init__(self, directory: str) -> None:
        self.kp = KeptPool("", directory)
        self.context = zmq.Context()
        self.subs: dict[str, _Follow] = {}
        self.following: dict[str, int] = {}
        self.clients: dict[str, str] = {}  # session -> the attached pool's client session id
        self.detached_seen: float | None = None
        self.foreign_since = 0.0
        self.buffer: list[tuple[str, float, str | None, dict]] = []  # session, time, client, output
        self.last_attached = time.time()
        self.mtime = 0

    def subscribe(self) -> None:
        """Follow the sessions of state.json (re-read when it changed)."""
        try:
            mtime = os.stat(os.path.join(self.kp.dir, "state.json")).st_mtime_ns
        except OSError:
            return
        if mtime != self.mtime:
            self.mtime = mtime
            state = self.kp.load() or {}
            sessions = state.get("sessions", {})
            self.kp.name = state.get("name", self.kp.name)
            self.clients = {name: record.get("client") for name, record in sessions.items()}
            # Output of an earlier pool's requests is unshown from its detach on
            # (or, if it died, from this pool's adoption).
            if state.get("detached_at") is not None:
                self.detached_seen = state["detached_at"]
            self.foreign_since = min(
                (m for m in [self.detached_seen, state.get("attached_at")] if m is not None),
                default=0.0,
            )

            for name in list(self.subs):
                record = sessions.get(name)
                if record is None or record.get("pid") != self.subs[name].pid:
                    self.subs.pop(name).close()
            for name, record in sessions.items():
                if name not in self.subs and alive(record):
                    self.subs[name] = _Follow(record, self.context)
        now = time.monotonic()
        for follow in self.subs.values():
            follow.nudge(now)
        following = {name: f.pid for name, f in self.subs.items() if f.live}
        if following != self.following:
            self.following = following
            self.kp.save_following(following)

    def receive(self, timeout: float) -> None:
        if not self.subs:
            time.sleep(timeout)
            return
        poller = zmq.Poller()
        for follow in self.subs.values():
            poller.register(follow.iopub, zmq.POLLIN)
        ready = dict(poller.poll(timeout * 1000))
        for name, follow in self.subs.items():
            if follow.iopub in ready:
                for when, client, out in follow.outputs():
                    self.buffer.append((name, when, client, out))

    def flush(self, wanted) -> None:
        """Journal the buffered outputs ``wanted(session, time, client)`` picks; drop them."""
        by_session: dict[str, list[dict]] = {}
        kept = []
        for entry in self.buffer:
            if wanted(*entry[:3]):
                by_session.setdefault(entry[0], []).append(entry[3])
            else:
                kept.append(entry)
        self.buffer = kept
        for name, outputs in by_session.items():
            self.kp.journal(name, outputs)

    def attached(self) -> None:
        """A pool is attached: it shows what its own requests print. Output of
        requests of an earlier pool (a --bg cell still running when this pool
        re-adopted the session) reaches no cell: journal it now. Keep the rest
        for a while, in case the pool turns out to have died."""
        self.last_attached = time.time()
        self.flush(
            lambda name, when, client: (
                client and client != self.clients.get(name) and when >= self.foreign_since
            )
        )
        self.buffer = [b for b in self.buffer if b[1] >= self.last_attached - RECENT]

    def unattached(self) -> bool:
        """One look with the pool lock held (no pool attached); False: keep going."""
        state = self.kp.load()
        if state is None:
            return False  # the pool shut down (or the boot changed): nothing to keep
        if state.get("detached_at") is None:
            state["detached_at"] = self.last_attached
            self.kp.save(state)
        cutoff = state["detached_at"]
        self.flush(lambda name, when, client: when >= cutoff)
        self.buffer.clear()  # the rest came before the detach: the pool showed it
        if expired(state, time.time()):
            self.kp.stop_workers(state)
            self.kp.remove_files()
            return False
        return any(alive(record) for record in state.get("sessions", {}).values())

    def run(self) -> None:
        """Follow the pool until nothing is left to keep (may return holding the pool lock)."""
        while os.path.isdir(self.kp.dir):
            self.subscribe()
            self.receive(TICK)
            if not self.kp.try_lock():
                self.attached()
                continue
            if not self.unattached():
                return
            self.kp.unlock()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keeper = Keeper(sys.argv[1])
    fd = keeper.kp.open_file("keeper.lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another keeper follows this pool
    try:
        keeper.run()
    finally:
        # Let go of the keeper lock before the pool lock: a pool that takes the
        # pool lock next must find no keeper, and start one.
        os.close(fd)
        keeper.kp.unlock()


if __name__ == "__main__":
    main()
