"""The written-down interfaces and their implementations cannot drift apart.

Every member of :class:`nbpool.interfaces.WorkerKernel` and
:class:`nbpool.interfaces.Backend` exists on every class that implements
it, the real ones and the fakes of :mod:`nbpool.testing`, and each method
takes the protocol's parameters (names, kinds, defaults).
"""

from __future__ import annotations

import inspect

import pytest

from nbpool import interfaces
from nbpool.kept.kernel import KeptKernel
from nbpool.kernels.kernel import AttachedKernel, LocalKernel
from nbpool.launcher import Launcher
from nbpool.testing import FakeBackend, FakeKernel

IMPLEMENTATIONS = [
    (interfaces.WorkerKernel, LocalKernel),
    (interfaces.WorkerKernel, AttachedKernel),
    (interfaces.WorkerKernel, KeptKernel),
    (interfaces.WorkerKernel, FakeKernel),
    (interfaces.Backend, Launcher),
    (interfaces.Backend, FakeBackend),
]


def members(protocol: type) -> tuple[set[str], dict[str, inspect.Signature]]:
    """(data attributes, method name -> signature) a protocol declares."""
    data = set(protocol.__annotations__)
    methods = {
        name: inspect.signature(value)
        for name, value in vars(protocol).items()
        if inspect.isfunction(value) and not name.startswith("_")
    }
    return data, methods


def declared(cls: type, name: str) -> bool:
    """A class attribute, property, or class-level annotation of ``cls`` or a base."""
    if hasattr(cls, name):
        return True
    return any(name in vars(base).get("__annotations__", {}) for base in cls.__mro__)


def shape(signature: inspect.Signature) -> list[tuple]:
    """A signature without annotations: what a caller relies on."""
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


def test_the_protocols_declare_what_the_pool_uses():
    """The protocols are not empty shells: the members the pool relies on are there."""
    data, methods = members(interfaces.WorkerKernel)
    assert {"pid", "attached", "started", "channels"} <= data
    assert {"poll", "interrupt", "shutdown", "connect_hb", "keep_record"} <= set(methods)
    data, methods = members(interfaces.Backend)
    assert data == {"closing"} and {"start", "attach", "pending_reason", "close"} <= set(methods)


@pytest.mark.parametrize(
    "protocol, cls", IMPLEMENTATIONS, ids=[f"{c.__name__}" for _, c in IMPLEMENTATIONS]
)
def test_every_implementation_has_every_member_with_the_same_signature(protocol, cls):
    """Each class has each data member of its protocol, and each method with the
    protocol's parameters: none is optional, so the pool never probes."""
    data, methods = members(protocol)
    missing = sorted(name for name in data | set(methods) if not declared(cls, name))
    assert not missing, f"{cls.__name__} lacks {missing}"
    for name, expected in methods.items():
        actual = inspect.signature(getattr(cls, name))
        assert shape(actual) == shape(expected), f"{cls.__name__}.{name}{actual} != {expected}"
