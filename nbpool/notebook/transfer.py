"""Moving variables between the notebook and a session (``%pool_push`` / ``%pool_pull``).

Values are pickled one by one, so a value that cannot move is named in the
error. The notebook side pickles with cloudpickle (a dependency of nbpool):
functions, lambdas and classes defined in the notebook travel by value.
Loading those on a worker needs cloudpickle in the *worker's* Python; plain
data (numbers, strings, containers, numpy arrays, pandas frames) loads with
:mod:`pickle` alone. A worker of another environment may lack cloudpickle:
then a push that needs it, or a pull of a function or class defined on the
worker, fails in one line naming the worker's Python and what to install
there. (Without cloudpickle the worker pickles with plain :mod:`pickle`,
which would send such a function by name, and the notebook would load its
own object of that name; so the worker refuses instead.)

The bytes never appear in the code of an execution (which a worker keeps in
its input history): a push hands them to the worker as the answer to an
``input()`` the transfer code asks, a pull receives them as a display output
of a private MIME type that is not forwarded to any cell. Both run as
ordinary executions of the session, so they queue behind its earlier work.
"""

from __future__ import annotations

import base64
import pickle

import cloudpickle

from ..checks import DEFAULT_SESSION
from ..errors import TransferError

#: MIME type of the display output that carries pulled values.
MIME = "application/vnd.nbpool.pickle+base64"

# Runs on the worker in a private namespace; `_ns` is the worker's globals.
_PUSH = """
import base64, pickle, sys
_blobs = pickle.loads(base64.b64decode(input("nbpool push")))
_values = {}
for _name, _blob in _blobs.items():
    try:
        _values[_name] = pickle.loads(_blob)
    except Exception as _exc:
        if isinstance(_exc, ImportError) and _exc.name == "cloudpickle":
            _reason = (f"loading {_name!r} needs cloudpickle, and the worker's Python "
                    f"({sys.executable}) has none; pip install cloudpickle in that environment")
        else:
            _reason = f"{_name!r} cannot be loaded here: {type(_exc).__name__}: {_exc}"
        raise RuntimeError(_reason) from None
_ns.update(_values)
"""

# Without cloudpickle the worker pickles with plain pickle, refusing what
# plain pickle would send by name only: functions and classes of the session.
_PULL = """
import base64, io, pickle, sys, types
try:
    from cloudpickle import dumps as _dumps
except ImportError:
    class _ByName(Exception):
        pass
    class _Pickler(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, (type, types.FunctionType)) and obj.__module__ == "__main__":
                raise _ByName(obj.__qualname__)
            return NotImplemented
    def _dumps(value):
        buffer = io.BytesIO()
        _Pickler(buffer).dump(value)
        return buffer.getvalue()
else:
    _ByName = ()
_blobs = {}
for _name in _names:
    if _name not in _ns:
        raise NameError(f"name {_name!r} is not defined")
    try:
        _blobs[_name] = _dumps(_ns[_name])
    except _ByName as _exc:
        raise RuntimeError(
            f"{_name!r} holds {_exc}, defined in the session: moving it needs cloudpickle, "
            f"and the worker's Python ({sys.executable}) has none; "
            "pip install cloudpickle in that environment"
        ) from None
    except Exception as _exc:
        raise TypeError(f"{_name!r} cannot be pickled: {type(_exc).__name__}: {_exc}") from None
from IPython.display import publish_display_data
publish_display_data({_mime: base64.b64encode(pickle.dumps(_blobs)).decode()})
"""


def push(pool, namespace: dict, names: list[str], session: str | None = None) -> None:
    """Copy ``names`` from ``namespace`` into ``session``'s globals.

    Raises
    ------
    TransferError
        A name is not defined, cannot be pickled, or cannot be loaded there
        (e.g. a function, on a worker whose Python lacks cloudpickle).
    """
    blobs = {}
    for name in names:
        if name not in namespace:
            raise TransferError(f"cannot push {name!r}: it is not defined in the notebook")
        try:
            blobs[name] = cloudpickle.dumps(namespace[name])
        except Exception as exc:
            raise TransferError(f"cannot push {name!r}: {_why(exc)}") from None
    payload = base64.b64encode(pickle.dumps(blobs)).decode()
    code = f"exec({_PUSH!r}, {{'_ns': globals()}})"
    res = pool.execute(code, session, stdin=lambda prompt, password: payload)
    if not res.ok:
        raise TransferError(f"cannot push to session {_label(session)}: {_remote_why(res)}")


def pull(pool, names: list[str], session: str | None = None) -> dict:
    """Copies of ``names`` from ``session``'s globals, as a dict.

    Raises
    ------
    TransferError
        A name is not defined there, cannot be pickled (e.g. a function of the
        session, on a worker whose Python lacks cloudpickle), or cannot be
        loaded here.
    """
    code = f"exec({_PULL!r}, {{'_ns': globals(), '_names': {list(names)!r}, '_mime': {MIME!r}}})"
    res = pool.execute(code, session)
    if not res.ok:
        raise TransferError(f"cannot pull from session {_label(session)}: {_remote_why(res)}")
    payload = next(out["data"][MIME] for out in res.outputs if MIME in out.get("data", {}))
    values = {}
    for name, blob in pickle.loads(base64.b64decode(payload)).items():
        try:
            values[name] = pickle.loads(blob)
        except Exception as exc:
            raise TransferError(
                f"cannot pull {name!r}: it cannot be loaded here: {_why(exc)}"
            ) from None
    return values


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")


def _remote_why(res) -> str:
    error = res.error
    if error is None:
        return f"the worker answered {res.status!r}"
    if error.ename == "SyntaxError":
        return "its kernel does not run Python code"
    # The transfer code's own errors start with the variable's name.
    return error.evalue if error.ename in ("NameError", "TypeError", "RuntimeError") else str(error)


def _label(session: str | None) -> str:
    return repr(DEFAULT_SESSION if session is None else session)
