"""The validators every entry point shares: session names, timeouts, sizes.

:class:`~nbpool.Pool`, :class:`~nbpool.core.lease.Lease`, the magics and the
JupyterLab comm all check their input here, so a rule and its message are
written once. Each raises :class:`~nbpool.errors.InvalidConfig` (a
``ValueError``) with one line that says what was wrong; the magics turn it
into a ``UsageError``.
"""

from __future__ import annotations

import numbers
import unicodedata

from .errors import InvalidConfig

#: Longest session name accepted.
#: The session of a request that names none (``session=None``).
DEFAULT_SESSION = "default"

MAX_NAME = 200


def session_name(name: object) -> str:
    """``name`` as a session name (surrounding whitespace stripped), or InvalidConfig.

    ``None`` is the default session. A name must be a non-empty string of at
    most :data:`MAX_NAME` characters with no newline or other control
    character: such a name is almost always a typo or a quoting slip, and
    would otherwise silently open a session nobody can address.
    """
    if name is None:
        return DEFAULT_SESSION
    if not isinstance(name, str):
        raise InvalidConfig(f"session name must be a string, got {type(name).__name__}")
    name = name.strip()
    if not name:
        raise InvalidConfig(
            "session name is empty; give a name such as 'etl', or none for the default session"
        )
    if len(name) > MAX_NAME:
        raise InvalidConfig(
            f"session name is {len(name)} characters long; at most {MAX_NAME} are allowed"
        )
    bad = next((c for c in name if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise InvalidConfig(f"session name {name!r} contains the control character {bad!r}")
    return name


def pool_name(name: object) -> str:
    """``name`` as a pool name: the rules of a session name."""
    try:
        return session_name("" if name is None else name)
    except InvalidConfig as exc:
        raise InvalidConfig(str(exc).replace("session name", "pool name", 1)) from None


def timeout(value: object, what: str = "timeout", *, allow_none: bool = True) -> float | None:
    """``value`` as a number of seconds > 0 (or None, where allowed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        none = " or None" if allow_none else ""
        raise InvalidConfig(
            f"{what} must be a positive number of seconds{none}, got {_shown(value)}"
        )
    return float(value)


def size(value: object, what: str = "size", *, minimum: int = 0, limit: int | None = None) -> int:
    """``value`` as a whole number >= ``minimum`` (and <= ``limit``, ``Pool.size_limit``).

    The limit is checked before anything is built for a size: a typo such as
    ``resize(10**7)`` must fail at once, not make ten million records.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidConfig(f"{what} must be a whole number >= {minimum}, got {_shown(value)}")
    return int(value) if limit is None else within_limit(value, what, limit)


def within_limit(value: int, what: str, limit: int) -> int:
    """``value`` if it is at most ``limit`` (``Pool.size_limit``), else InvalidConfig."""
    if value > limit:
        raise InvalidConfig(
            f"{what} {value} is above size_limit={limit}, the most workers a pool may have; "
            "raise Pool.size_limit if you mean it"
        )
    return int(value)


def _shown(value: object) -> str:
    """A number as people write it (``0``, ``2.5``), anything else as its repr."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return f"{value:g}"
    return repr(value)
