"""The task path of ``pool.map``: what one chunk of tasks looks like on the wire.

A chunk is **one** private shell request, ``nbpool_task_request``, served by
a handler that :data:`BOOT` registers in the worker kernel's
``shell_handlers`` (as ipyparallel's engine serves ``apply_request``). It
skips IPython's ``run_cell`` (input transformers, compilation, the
execution's events, the linecache entry that a code cell leaves) and the
extra iopub message of a result: the outcome rides on the reply,
``nbpool_task_reply``. The request's content is ``{"token", "start"}`` (the
map and the index of the chunk's first item); the function and the items
travel as its binary frames (Jupyter messages carry ``buffers`` beside their
JSON), so nothing is base64-encoded or put in JSON:

========== ==================================================================
frame      content
========== ==================================================================
0          the function, cloudpickled; empty after the first chunk of a lease
           (the runner keeps it for the map's token)
1          the chunk's items, pickled with protocol 5 ...
2, 3, ...  ... whose large contiguous buffers (NumPy arrays) travel out of
           band: each is a frame of its own, sent without a copy
========== ==================================================================

The reply's content is ``{"ok": true, "count": n}`` and its frames the
results, pickled the same way (frame 0 the pickle, the rest out-of-band
buffers), or ``{"ok": false, "index": i, "ename", "evalue", "traceback",
"done"}`` for the first task that raised, with the ``done`` results before
it. The handler **always** replies, whatever the task raised
(``KeyboardInterrupt`` from an interrupt of the map and ``SystemExit``
included): ipykernel's ``dispatch_shell`` only logs what escapes a handler,
which would leave the client waiting. Only an interrupt that lands in
ipykernel's own code around the handler ends a request without a reply
(:meth:`nbpool.kernels.execution.Execution.call` says how that ends).

The runner is a module, ``_nbpool_map``, installed once per worker by a
silent execution (:data:`BOOT`): it lives in ``sys.modules``, not in the
user namespace, so the variables of a session that later gets that worker
are untouched, and nothing of a task is left in its globals. Its source
travels as code, so the worker's Python needs only ipykernel (6.29 or 7)
and cloudpickle, not nbpool.
"""

from __future__ import annotations

import linecache
import pickle
import re
import types
import weakref

import cloudpickle

from ..result import RemoteError

#: The private shell message type of a chunk (its reply: ``nbpool_task_reply``).
REQUEST = "nbpool_task_request"

# Runs once per worker, in the namespace of a fresh module `_nbpool_map`.
_RUNNER = """
import pickle, sys, traceback
from IPython import get_ipython
try:
    from cloudpickle import dumps as _dumps
except ImportError:
    raise ImportError(
        f"pool.map needs cloudpickle in the worker's Python ({sys.executable}); "
        "pip install cloudpickle in that environment"
    ) from None

_kernel = get_ipython().kernel
_token = _fn = None


def _frames(values):
    oob = []
    head = _dumps(values, protocol=5, buffer_callback=oob.append)
    return [head, *(b.raw() for b in oob)]


def _writable(buffers):
    return [bytearray(b) if memoryview(b).readonly else b for b in buffers]


def _lines(exc, tb):
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip("\\n").split("\\n")


def _failed(index, exc, tb, done):
    content = {"ok": False, "index": index, "ename": type(exc).__name__,
               "evalue": str(exc), "traceback": _lines(exc, tb)}
    try:
        frames = _frames(done)
    except Exception:
        content["done"], frames = 0, _frames([])
    else:
        content["done"] = len(done)
    return content, frames


def _run(token, start, buffers):
    global _token, _fn
    try:
        if len(buffers[0]):
            _token, _fn = token, pickle.loads(buffers[0])
        elif _token != token:
            raise RuntimeError("the mapped function did not reach this worker")
        items = pickle.loads(buffers[1], buffers=_writable(buffers[2:]))
    except Exception as exc:
        exc = RuntimeError(f"cannot load the function or items here: {type(exc).__name__}: {exc}")
        return _failed(start, exc, None, [])
    fn, results = _fn, []
    for item in items:
        try:
            results.append(fn(item))
        except BaseException as exc:  # KeyboardInterrupt and SystemExit are the task's too
            return _failed(start + len(results), exc, exc.__traceback__.tb_next, results)
    try:
        return {"ok": True, "count": len(results)}, _frames(results)
    except Exception:
        for i, value in enumerate(results):
            try:
                _frames([value])
            except Exception as exc:
                exc = TypeError(f"the result cannot be pickled: {type(exc).__name__}: {exc}")
                return _failed(start + i, exc, None, results[:i])
        raise


def handle(stream, ident, parent):
    # Always reply (see nbpool.mapping.wire), and on `stream`: with subshells
    # (ipykernel 7) it is the subshell's socket, not the kernel's shell stream.
    start = parent["content"]["start"]
    try:
        content, frames = _run(parent["content"]["token"], start, parent["buffers"])
    except BaseException as exc:  # an interrupt outside the task, or a result that broke
        content, frames = _failed(start, exc, exc.__traceback__, [])
    _kernel.session.send(
        stream, "nbpool_task_reply", content, parent, ident=ident, buffers=frames
    )


def _quick(stream):
    # ipykernel's OutStream.flush from the main thread is a blocking round
    # trip to the IOPub thread even when nothing was written, and
    # dispatch_shell flushes stdout and stderr after every request. After a
    # task request with nothing buffered, that round trip has nothing to carry.
    flush = stream.flush

    def quick_flush():
        if stream._buffers or _kernel.get_parent()["header"].get("msg_type") != (
            "nbpool_task_request"
        ):
            flush()

    quick_flush.nbpool = True
    stream.flush = quick_flush


_kernel.shell_handlers["nbpool_task_request"] = handle
# OutStream's buffers (ipykernel 6.29 and 7); another stream keeps its flush.
for _stream in (sys.stdout, sys.stderr):
    if hasattr(_stream, "_buffers") and not hasattr(_stream.flush, "nbpool"):
        _quick(_stream)
"""

#: Installs the runner and its shell handler (a silent execution; assigns
#: nothing in the user namespace).
BOOT = (
    "exec({src!r}, __import__('sys').modules.setdefault('_nbpool_map', "
    "__import__('types').ModuleType('_nbpool_map')).__dict__)"
).format(src=_RUNNER)

#: Kernels that have the runner installed (a replacement kernel is a new object).
_booted: weakref.WeakSet = weakref.WeakSet()


def booted(kernel) -> bool:
    return kernel in _booted


def mark_booted(kernel) -> None:
    _booted.add(kernel)


def function_frame(fn) -> bytes:
    """``fn`` cloudpickled (by value if it was defined in the notebook)."""
    return cloudpickle.dumps(fn)


def chunk_request(token: str, start: int, items: list, fn_frame: bytes) -> tuple[dict, list]:
    """The content and frames of one chunk (``fn_frame`` empty once the lease has it)."""
    oob: list[pickle.PickleBuffer] = []
    head = cloudpickle.dumps(items, protocol=5, buffer_callback=oob.append)
    return {"token": token, "start": start}, [fn_frame, head, *(b.raw() for b in oob)]


def decode(reply: dict) -> tuple[list, RemoteError | None, int | None]:
    """A chunk's ``nbpool_task_reply``: (results, error, index of the failed task)."""
    content = reply["content"]
    frames = reply.get("buffers") or []
    # Received frames are read-only bytes; arrays built on them would be too.
    oob = [bytearray(b) for b in frames[1:]]
    values = pickle.loads(frames[0], buffers=oob) if frames else []
    if content.get("ok"):
        return values, None, None
    error = RemoteError(content["ename"], content["evalue"], content["traceback"])
    return values, error, content["index"]


_FRAME = re.compile(r'^  File "<dynamic-code>", line (\d+), in (.+)$')


def with_sources(lines: list[str], fn) -> list[str]:
    """The worker's traceback with the notebook's file names and source lines put back.

    cloudpickle ships code without its file (``"<dynamic-code>"``), and the
    worker has no copy of a notebook's cells anyway; this process does
    (``linecache``), so frames of ``fn`` and of the functions it reaches are
    completed here.
    """
    files = _code_files(fn)
    out = []
    for line in lines:
        match = _FRAME.match(line)
        filename = files.get(match.group(2)) if match else None
        if filename is None:
            out.append(line)
            continue
        number = int(match.group(1))
        out.append(f'  File "{filename}", line {number}, in {match.group(2)}')
        source = linecache.getline(filename, number).strip()
        if source:
            out.append(f"    {source}")
    return out


def _code_files(fn, depth: int = 3) -> dict[str, str]:
    """Function name -> file, for ``fn``'s code and the functions it refers to."""
    files: dict[str, str] = {}
    seen: set[int] = set()

    def visit(obj, depth: int) -> None:
        if id(obj) in seen or depth < 0:
            return
        seen.add(id(obj))
        if isinstance(obj, types.FunctionType):
            code = obj.__code__
            visit(code, depth)
            refs = [c.cell_contents for c in obj.__closure__ or () if _filled(c)]
            refs += [obj.__globals__[n] for n in code.co_names if n in obj.__globals__]
            for ref in refs:
                visit(ref, depth - 1)
        elif isinstance(obj, types.CodeType):
            files.setdefault(obj.co_name, obj.co_filename)
            for const in obj.co_consts:
                if isinstance(const, types.CodeType):
                    visit(const, depth)

    visit(getattr(fn, "__func__", fn), depth)
    return files


def _filled(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True
