"""``%%pool_exec --all``: one cell on many sessions at once, one labelled block each.

Every session gets the cell as a background request (:meth:`Pool.submit`),
so they run in parallel, each on its own worker. A session's outputs are
collected while it runs and shown as one block, headed by a label line,
in a stable order (the order given with ``-s a,b``, else sessions by name):
the block of a session appears once it and every session before it have
finished, so blocks never interleave. Errors of a session are shown in its
block; once all finished, the cell fails if any session failed, naming them.
Ctrl-C cancels the sessions still queued and interrupts the running ones.
The blocks are published by the cell's own thread, through one
:class:`~nbpool.notebook.forwarding.CellOutput` of the cell.
"""

from __future__ import annotations

from concurrent.futures import CancelledError, wait

from IPython import get_ipython

from ..errors import NbpoolError
from .forwarding import CellOutput, Forwarder, cell_error, pool_error_content


def live_sessions(pool) -> list[str]:
    """Sessions that hold a worker now, by name."""
    return sorted(s["name"] for s in pool.status()["sessions"] if s["worker"] is not None)


def run_all(pool, code: str, sessions: list[str], timeout: float | None) -> dict:
    """Run ``code`` on every session of ``sessions`` in parallel; show one block each.

    Returns session -> :class:`~nbpool.result.ExecutionResult` (or the
    exception it ended with).

    Raises
    ------
    Exception
        A cell failure naming the sessions that failed, after all finished.
    KeyboardInterrupt
        The cell was interrupted; the sessions were cancelled or interrupted.
    """
    outputs: dict[str, list[dict]] = {s: [] for s in sessions}
    futures = {
        s: pool.submit(code, session=s, timeout=timeout, on_output=outputs[s].append)
        for s in sessions
    }
    count = getattr(get_ipython(), "execution_count", None)
    out = CellOutput()
    ended: dict = {}
    try:
        for session, future in futures.items():  # in order: blocks never interleave
            wait([future])
            try:
                ended[session] = future.result()
            except (NbpoolError, CancelledError) as exc:
                ended[session] = exc
            _show_block(out, session, outputs[session], ended[session], count)
    except KeyboardInterrupt:
        for future in futures.values():
            future.cancel()
        wait(list(futures.values()), timeout=pool.interrupt_grace + 5)
        raise
    failed = [s for s, r in ended.items() if isinstance(r, BaseException) or not r.ok]
    if failed:
        reasons = "; ".join(f"{s}: {_why(ended[s])}" for s in failed)
        raise cell_error(
            "SessionsFailed",
            f"{len(failed)} of {len(sessions)} sessions failed ({reasons})",
            [f"SessionsFailed: {len(failed)} of {len(sessions)} sessions failed: {reasons}"],
        )
    return ended


def _show_block(
    out: CellOutput, session: str, events: list[dict], outcome, count: int | None
) -> None:
    worker = getattr(outcome, "worker_id", None)
    label = f"[session {session!r}" + (f" on {worker}]" if worker else "]")
    out.display({"text/plain": label, "text/html": f"<b>{_escape(label)}</b>"}, {})
    forward = Forwarder(session, background=True, execution_count=count, out=out)
    for event in events:
        forward(event)
    if isinstance(outcome, BaseException):
        out.error(pool_error_content(outcome))


def _why(outcome) -> str:
    if isinstance(outcome, BaseException):
        return type(outcome).__name__
    return str(outcome.error) if outcome.error is not None else outcome.status


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
