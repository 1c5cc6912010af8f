"""The job registry and a --bg job's output record (nbpool.notebook.jobs), driven directly.

The record is fed the way a cell's CellOutput feeds it; what it gives a
follower (the outputs, then events) must rebuild what a page that watched the
whole job shows. Real kernels: tests/notebook/test_jobs.py.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest

from nbpool.notebook.jobs import Jobs, Record


def apply(outputs: list[dict], events: list[dict]) -> list[dict]:
    """Apply events to an output list as the frontend does."""
    outputs = [dict(o) for o in outputs]
    for e in events:
        if e["op"] == "append":
            outputs.append(dict(e["output"]))
        elif e["op"] == "stream":
            outputs[e["index"]]["text"] += e["text"]
        elif e["op"] == "set":
            outputs[e["index"]] = dict(e["output"])
        elif e["op"] == "clear":
            outputs = []
    return outputs


class Page:
    """A follower that records (seq, event)."""

    def __init__(self, record: Record) -> None:
        self.events: list[tuple[int, dict]] = []
        self.outputs, self.seq, self.state = record.follow(self.send)

    def send(self, seq: int, event: dict) -> None:
        self.events.append((seq, event))

    def view(self) -> list[dict]:
        return apply(self.outputs, [e for s, e in self.events if s > self.seq])


def handle(record: Record, text: str, update: bool = False) -> None:
    record.handle({"text/plain": text}, {}, "h", update)


def test_a_follower_rebuilds_what_a_watching_page_shows():
    """Streams coalesce per name, display updates apply by id, the handle line is set at
    the end: outputs + later events equal the whole record, whenever one follows."""
    record = Record(1)
    watcher = Page(record)  # there from the start: an empty list, then everything
    handle(record, "started")
    record.stream("stdout", "a\n")
    record.stream("stdout", "b\n")
    record.stream("stderr", "warn\n")
    record.display({"text/plain": "50%"}, {}, "bar", update=False)
    late = Page(record)
    record.stream("stdout", "c\n")
    record.display({"text/plain": "100%"}, {}, "bar", update=True)
    record.add({"output_type": "error", "ename": "E", "evalue": "v", "traceback": ["E: v"]})
    handle(record, "done", update=True)
    record.end("done")
    expected = [
        {"output_type": "display_data", "data": {"text/plain": "done"}, "metadata": {}},
        {"output_type": "stream", "name": "stdout", "text": "a\nb\n"},
        {"output_type": "stream", "name": "stderr", "text": "warn\n"},
        {"output_type": "display_data", "data": {"text/plain": "100%"}, "metadata": {}},
        {"output_type": "stream", "name": "stdout", "text": "c\n"},
        {"output_type": "error", "ename": "E", "evalue": "v", "traceback": ["E: v"]},
    ]
    assert record.follow(None)[0] == expected
    for page in (watcher, late):
        assert page.view() == expected
        assert page.events[-1][1] == {"op": "end", "state": "done"}
        seqs = [s for s, _ in page.events]
        assert seqs == sorted(set(seqs))


def test_clear_output_wait_applies_at_the_next_output():
    """clear_output(wait=True) clears only when the next output comes (the handle too)."""
    record = Record(1)
    page = Page(record)
    handle(record, "started")
    record.stream("stdout", "old\n")
    record.clear(wait=True)
    assert record.follow(None)[0][-1]["text"] == "old\n"
    record.stream("stdout", "new\n")
    handle(record, "done", update=True)  # its output was cleared: nothing to set
    outputs = record.follow(None)[0]
    assert outputs == [{"output_type": "stream", "name": "stdout", "text": "new\n"}]
    assert page.view() == outputs


def test_the_bound_drops_the_oldest_output_first_and_says_so():
    """Over the limit the oldest outputs go (the handle line stays first), one stderr
    notice says how much; a follower's indices stay its own across later drops."""
    record = Record(3, limit=100)
    handle(record, "started")
    record.display({"text/plain": "first"}, {}, "d", update=False)
    early = Page(record)
    for i in range(10):
        record.add(
            {
                "output_type": "execute_result",
                "data": {"text/plain": f"{i}" * 20},
                "metadata": {},
                "execution_count": i,
            }
        )
    late = Page(record)
    record.display({"text/plain": "again"}, {}, "d", update=True)  # dropped from the record
    record.stream("stdout", "tail\n")
    outputs = record.follow(None)[0]
    assert outputs[0]["data"]["text/plain"] == "started"
    notice = outputs[1]
    assert notice["name"] == "stderr" and notice["text"].startswith("nbpool: ")
    assert "earlier output(s) of job 3 (" in notice["text"]
    assert outputs[-1] == {"output_type": "stream", "name": "stdout", "text": "tail\n"}
    assert sum(len(str(o)) for o in outputs[2:]) < 300
    # The early page had the display: it is updated there; the late one never had it.
    assert early.view()[1]["data"]["text/plain"] == "again"
    assert len(early.view()) == 13
    assert late.view()[-1]["text"] == "tail\n"
    assert all(o.get("data", {}).get("text/plain") != "again" for o in late.view())


def test_one_huge_stream_keeps_its_newest_text():
    """A single stream beyond the bound is cut from its start."""
    record = Record(1, limit=1000)
    for i in range(500):
        record.stream("stdout", f"{i:04d}\n")
    notice, stream = record.follow(None)[0]
    assert "the oldest text of job 1 (0.0 MB)" in notice["text"]
    assert len(stream["text"]) == 1000 and stream["text"].endswith("0499\n")
    assert record.size() == (1, 1000)


def test_following_while_events_arrive_gives_every_line_exactly_once():
    """Followers registering while another thread streams (and between its lines) get
    each line once, in order."""
    record = Record(1)
    lines = [f"line {i}\n" for i in range(5000)]
    pages: list[Page] = []

    def produce() -> None:
        for i, line in enumerate(lines):
            record.stream("stdout", line)
            if i % 500 == 0:  # some at known points, the others wherever they land
                pages.append(Page(record))

    thread = threading.Thread(target=produce)
    thread.start()
    while len(pages) < 20:
        pages.append(Page(record))
    thread.join()
    record.end("done")
    for page in pages:
        assert "".join(o["text"] for o in page.view()) == "".join(lines)


def test_jobs_are_numbered_superseded_and_bounded():
    """Numbers count from 1; a new run of a cell id supersedes its earlier jobs; only the
    last `keep` stay, and an evicted number says it is no longer kept."""
    jobs = Jobs(keep=3)

    def parent(cell_id):
        return {"header": {"session": "client-1"}, "metadata": {"cellId": cell_id}}

    first = jobs.new("a", background=True, parent=parent("c1"))
    other = jobs.new("a", background=False, parent=parent("c2"))
    rerun = jobs.new("b", background=True, parent=parent("c1"))
    headless = jobs.new("b", background=True, parent={"header": {}, "metadata": {}})
    assert [first.number, other.number, rerun.number, headless.number] == [1, 2, 3, 4]
    assert first.superseded and not other.superseded and not rerun.superseded
    assert [c["job"] for c in jobs.cells()] == [2, 3, 4]
    cell = jobs.cells()[1]
    assert cell["cell_id"] == "c1" and cell["client"] == "client-1" and cell["background"]
    assert jobs.cells()[2]["cell_id"] is None
    with pytest.raises(KeyError, match=r"job 1 is no longer kept \(the last 3 jobs are: 2-4\)"):
        jobs.get(1)
    with pytest.raises(KeyError, match=r"no job 9 \(jobs: 2-4\)"):
        jobs.get(9)


def test_queued_jobs_have_a_position_and_interrupt_withdraws_them():
    """Queued jobs of one session are numbered by their place; interrupting a queued one
    withdraws it (cancelled), and the next moves up."""
    jobs = Jobs()
    running, second, third = (jobs.new("s", background=True, parent=None) for _ in range(3))
    futures = [Future() for _ in range(3)]
    for job, future in zip((running, second, third), futures):
        job.attach(future)
    futures[0].set_running_or_notify_cancel()
    assert [(c["state"], c["position"]) for c in jobs.cells()] == [
        ("running", None),
        ("queued", 1),
        ("queued", 2),
    ]
    assert second.interrupt(pool=None) == "job 2 withdrawn"
    second.settle(futures[1])
    assert [(c["state"], c["position"]) for c in jobs.cells()][1:] == [
        ("cancelled", None),
        ("queued", 1),
    ]
    assert second.interrupt(pool=None) == "job 2 already ended (cancelled)"
