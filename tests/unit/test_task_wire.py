"""``pool.map``'s wire on sockets without a kernel: the worker's task handler and the
client's message decoding (:mod:`nbpool.mapping.wire`, :func:`nbpool.kernels.execution.receive`).

A real jupyter_client ``Session`` signs both ways over an inproc ZMQ pair;
the kernel the handler registers into is a stand-in with what the runner
uses (``session``, ``shell_handlers``, ``get_parent``). The same path on
real forked and spawned kernels is in ``tests/integration/test_map.py``.
"""

from __future__ import annotations

import sys
import types
import uuid

import cloudpickle
import IPython
import numpy as np
import pytest
import zmq
from jupyter_client.session import Session

from nbpool.kernels.execution import receive
from nbpool.mapping import wire


class StandInKernel:
    """What the runner reaches of ipykernel's kernel."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.shell_handlers: dict = {}
        self.parent: dict = {}

    def get_parent(self, channel: str = "shell") -> dict:
        return self.parent


@pytest.fixture
def wire_pair(monkeypatch):
    """(kernel with the runner booted, its socket, the client's socket, the client's session)."""
    key = uuid.uuid4().hex.encode()
    kernel = StandInKernel(Session(key=key))
    client = Session(key=key)
    shell = types.SimpleNamespace(kernel=kernel)
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    ctx = zmq.Context.instance()
    worker_sock, client_sock = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    address = f"inproc://nbpool-wire-{uuid.uuid4().hex}"
    worker_sock.bind(address)
    client_sock.connect(address)
    exec(wire.BOOT, {})
    try:
        yield kernel, worker_sock, client_sock, client
    finally:
        sys.modules.pop("_nbpool_map", None)
        worker_sock.close(linger=0)
        client_sock.close(linger=0)


def _chunk(
    kernel, worker_sock, client_sock, client, fn, items, start=0, fn_frame=None, token="tok"
):
    """Send one chunk request through the booted handler; the decoded reply."""
    content, frames = wire.chunk_request(
        token, start, items, cloudpickle.dumps(fn) if fn_frame is None else fn_frame
    )
    request = client.msg(wire.REQUEST, content)
    request["buffers"] = frames
    kernel.parent = request
    kernel.shell_handlers[wire.REQUEST](worker_sock, [], request)
    assert client_sock.poll(5000), "the handler sent no reply"
    reply = receive(client, client_sock)
    assert reply["header"]["msg_type"] == "nbpool_task_reply"
    assert reply["parent_header"]["msg_id"] == request["header"]["msg_id"]
    return wire.decode(reply)


def test_boot_registers_a_handler_that_replies_with_the_results(wire_pair):
    """BOOT puts the handler into shell_handlers; results (arrays out of band, writable)
    come back on the reply; a later chunk of the same map needs no function frame."""
    kernel, *_ = wire_pair
    assert set(kernel.shell_handlers) == {wire.REQUEST}
    arrays = [np.arange(10.0) * i for i in range(3)]
    values, error, index = _chunk(*wire_pair, lambda a: a * 2, arrays)
    assert error is None and index is None
    for a, b in zip(arrays, values):
        np.testing.assert_array_equal(b, a * 2)
    values[0][0] = 1.0
    values, error, _ = _chunk(*wire_pair, None, [1, 2], start=3, fn_frame=b"")
    assert error is None and values == [2, 4]


@pytest.mark.parametrize(
    "raised, ename, evalue",
    [
        (ZeroDivisionError("boom"), "ZeroDivisionError", "boom"),
        (KeyboardInterrupt("interrupted"), "KeyboardInterrupt", "interrupted"),
        (SystemExit(3), "SystemExit", "3"),
    ],
)
def test_whatever_a_task_raises_the_handler_replies(wire_pair, raised, ename, evalue):
    """A task's exception, KeyboardInterrupt and SystemExit included, is a reply with its
    index, its traceback and the results before it (dispatch_shell would swallow it)."""

    def task(x):
        if x == 12:
            raise raised
        return -x

    values, error, index = _chunk(*wire_pair, task, [10, 11, 12, 13], start=10)
    assert (index, error.ename, error.evalue) == (12, ename, evalue)
    assert values == [-10, -11]
    assert any("in task" in line for line in error.traceback)


def test_a_chunk_that_cannot_load_or_pickle_still_gets_a_reply(wire_pair):
    """Items that do not unpickle, a missing function, or a result that does not pickle:
    each is an error reply naming the cause, never a missing reply."""
    kernel, worker_sock, client_sock, client = wire_pair
    request = client.msg(wire.REQUEST, {"token": "tok", "start": 0})
    request["buffers"] = [cloudpickle.dumps(abs), b"not a pickle"]
    kernel.parent = request
    kernel.shell_handlers[wire.REQUEST](worker_sock, [], request)
    assert client_sock.poll(5000)
    _, error, index = wire.decode(receive(client, client_sock))
    assert index == 0 and "cannot load the function or items" in error.evalue

    _, error, index = _chunk(*wire_pair, None, [1], start=5, fn_frame=b"", token="other")
    assert index == 5 and "the mapped function did not reach this worker" in error.evalue
    values, error, index = _chunk(*wire_pair, lambda x: (y for y in [x]) if x else x, [0, 1])
    assert (values, index, error.ename) == ([0], 1, "TypeError")
    assert "cannot be pickled" in error.evalue


def test_receive_checks_the_signature_and_refuses_replays(wire_pair):
    """receive() decodes what Session signed, and refuses a forged or replayed message."""
    _, worker_sock, client_sock, client = wire_pair
    sender = Session(key=client.key)
    sent = sender.send(worker_sock, "stream", {"name": "stdout", "text": "hi"}, buffers=[b"x"])
    assert client_sock.poll(5000)
    msg = receive(client, client_sock)
    assert msg["content"] == {"name": "stdout", "text": "hi"} and msg["buffers"] == [b"x"]
    assert msg["header"]["msg_id"] == sent["header"]["msg_id"]
    assert receive(client, client_sock) is None

    frames = sender.serialize(sender.msg("status", {"execution_state": "idle"}))
    worker_sock.send_multipart(frames)
    worker_sock.send_multipart(frames)  # the same signature again: a replay
    assert client_sock.poll(5000)
    assert receive(client, client_sock)["content"] == {"execution_state": "idle"}
    with pytest.raises(ValueError, match="Duplicate Signature"):
        receive(client, client_sock)

    forged = Session(key=b"another key").serialize(sender.msg("status", {}))
    worker_sock.send_multipart(forged)
    assert client_sock.poll(5000)
    with pytest.raises(ValueError, match="Invalid Signature"):
        receive(client, client_sock)


class StandInStream:
    """ipykernel's OutStream as the runner sees it: per-parent buffers and a flush."""

    def __init__(self) -> None:
        self._buffers: dict = {}
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        self._buffers.clear()


def test_the_quick_flush_skips_only_an_empty_flush_after_a_task_request(monkeypatch):
    """BOOT wraps stdout's and stderr's flush: after a task request with nothing buffered it
    is skipped (no round trip to the IOPub thread); with output buffered, or during any other
    request (a cell), it flushes as before; booting twice does not wrap twice."""
    kernel = StandInKernel(Session(key=b"k"))
    monkeypatch.setattr(IPython, "get_ipython", lambda: types.SimpleNamespace(kernel=kernel))
    out, err = StandInStream(), StandInStream()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.delitem(sys.modules, "_nbpool_map", raising=False)
    exec(wire.BOOT, {})
    exec(wire.BOOT, {})
    task, cell = Session().msg(wire.REQUEST, {}), Session().msg("execute_request", {})
    try:
        kernel.parent = task
        out.flush(), err.flush()
        assert (out.flushes, err.flushes) == (0, 0)
        out._buffers["parent"] = "printed"
        out.flush()
        assert (out.flushes, out._buffers) == (1, {})
        kernel.parent = cell
        out.flush(), err.flush()
        assert (out.flushes, err.flushes) == (2, 1)
    finally:
        sys.modules.pop("_nbpool_map", None)
