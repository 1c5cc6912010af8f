"""The session registry: which worker holds each session's state.

Written only by the coordinator, under its lock; read by anyone without a
lock and without a round trip through the coordinator (entries are immutable
and replaced whole, so a reader sees either the old or the new binding).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

#: The name ``session=None`` stands for.


@dataclass(frozen=True)
class SessionInfo:
    """One session's binding.

    ``generation`` counts how many times the session's state was lost (worker
    death, recycling, eviction); ``reset_reason`` says why, until the next
    lease of the session has reported it.
    """

    name: str
    kernel_name: str
    worker_id: str | None = None
    generation: int = 0
    last_used: float = 0.0
    reset_reason: str | None = None
    attached: bool = False  # its kernel was attached, not started by nbpool


class SessionRegistry:
    """Name -> :class:`SessionInfo`; see the module docstring for who writes."""

    def __init__(self) -> None:
        self._by_name: dict[str, SessionInfo] = {}

    def get(self, name: str) -> SessionInfo | None:
        return self._by_name.get(name)

    def all(self) -> list[SessionInfo]:
        return list(self._by_name.values())

    def bound_to(self, worker_id: str) -> SessionInfo | None:
        for info in self._by_name.values():
            if info.worker_id == worker_id:
                return info
        return None

    # -- coordinator only, under its lock ---------------------------------

    def bind(
        self, name: str, kernel_name: str, worker_id: str, attached: bool = False
    ) -> SessionInfo:
        old = self._by_name.get(name) or SessionInfo(name, kernel_name)
        info = replace(
            old,
            kernel_name=kernel_name,
            worker_id=worker_id,
            last_used=time.time(),
            attached=attached,
        )
        self._by_name[name] = info
        return info

    def touch(self, name: str) -> None:
        info = self._by_name.get(name)
        if info is not None:
            self._by_name[name] = replace(info, last_used=time.time(), reset_reason=None)

    def reset(self, name: str, reason: str | None) -> None:
        """The session's state is gone: unbind it and count a new generation."""
        info = self._by_name.get(name)
        if info is not None:
            self._by_name[name] = replace(
                info, worker_id=None, generation=info.generation + 1, reset_reason=reason
            )

    def restore(
        self,
        name: str,
        kernel_name: str,
        worker_id: str | None,
        generation: int,
        reset_reason: str | None,
    ) -> None:
        """A kept session re-adopted: its worker (None: lost) at its generation."""
        self._by_name[name] = SessionInfo(
            name, kernel_name, worker_id, generation, time.time(), reset_reason
        )

    def remove(self, name: str) -> None:
        self._by_name.pop(name, None)
