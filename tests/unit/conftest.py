"""Fixtures of the unit tier: coordinators on a fake backend (no kernels, no processes).

backend
    A fresh :class:`~nbpool.testing.FakeBackend` for one test: its started
    kernels, ``gate`` and ``fail_with`` are that test's alone.
make(**settings) -> Coordinator
    A coordinator on ``backend`` with those :class:`~nbpool.core.records.Settings`
    (``size`` 1, ``min_size`` = ``size`` and ``max_size`` = ``max(size, 1)``
    unless given), its ``size`` workers started and ready; every coordinator
    made is closed at the end of the test.
"""

from __future__ import annotations

import pytest

from nbpool.core.coordinator import Coordinator
from nbpool.core.records import Settings
from nbpool.testing import FakeBackend


@pytest.fixture
def backend():
    return FakeBackend()


@pytest.fixture
def make(backend):
    made = []

    def make(**kw):
        size = kw.setdefault("size", 1)
        kw.setdefault("min_size", size)
        kw.setdefault("max_size", max(size, 1))
        coord = Coordinator(Settings(**kw), backend.start)
        made.append(coord)
        if size:
            coord.wait_started(coord.start(size), 5)
        return coord

    yield make
    for coord in made:
        coord.close()
