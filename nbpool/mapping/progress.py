"""Progress of a ``pool.map``: a bar in a notebook, a line on stderr when asked.

``progress=None`` (the default) shows an ipywidgets bar when the map runs in
a notebook kernel and nothing elsewhere; ``True`` forces a display (the bar
in a notebook, a ``\\r``-updated line on stderr outside one); ``False``
shows nothing. Both are updated from the calling thread only (the cell's
thread, so ipykernel routes the widget's messages to that cell), at most
every :data:`INTERVAL` seconds; ipywidgets and IPython are imported only
when a bar is shown.
"""

from __future__ import annotations

import sys
import time

#: Seconds between two updates of a progress display (at most four a second).
INTERVAL = 0.25


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (IPython with a kernel), without importing it."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def make(progress: bool | None, total: int, label: str):
    """The progress display a map should use, or None."""
    if progress is False or (progress is None and not in_notebook()):
        return None
    if in_notebook():
        return WidgetProgress(total, label)
    return TextProgress(total, label)


def _summary(done: int, total: int, elapsed: float) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    return f"{done}/{total} items, {rate:,.0f} items/s, {elapsed:.1f} s"


class WidgetProgress:
    """An ``IntProgress`` bar and a label (items done/total, rate, time)."""

    interval = INTERVAL

    def __init__(self, total: int, label: str) -> None:
        import ipywidgets
        from IPython.display import display

        self._started = time.monotonic()
        self.bar = ipywidgets.IntProgress(
            value=0, min=0, max=max(total, 1), description=label, bar_style="info"
        )
        self.text = ipywidgets.HTML(value=_summary(0, total, 0.0))
        self.box = ipywidgets.HBox([self.bar, self.text])
        display(self.box)

    def update(self, done: int, total: int) -> None:
        self.bar.value = done
        self.text.value = _summary(done, total, time.monotonic() - self._started)

    def close(self, ok: bool) -> None:
        self.bar.bar_style = "success" if ok else "danger"


class TextProgress:
    """One line on stderr, rewritten in place."""

    interval = INTERVAL

    def __init__(self, total: int, label: str) -> None:
        self._started = time.monotonic()
        self._label = label

    def update(self, done: int, total: int) -> None:
        line = _summary(done, total, time.monotonic() - self._started)
        sys.stderr.write(f"\r{self._label}: {line}")
        sys.stderr.flush()

    def close(self, ok: bool) -> None:
        sys.stderr.write("\n" if ok else " (stopped)\n")
        sys.stderr.flush()
