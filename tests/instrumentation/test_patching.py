"""``_patching``: jitrace's wrappers, wrapt's and plain hooks alike, put in and taken out of chains of wrappers."""

from __future__ import annotations

import types
from typing import Any

import pytest
import wrapt

from jitrace.instrumentation import _patching

calls: list[str] = []


def _factory(original: Any, method: bool) -> Any:
    """A plain hook: records the call, then calls what it stands in for."""
    if method:
        def hooked_method(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append("plain")
            return original(self, *args, **kwargs)

        return hooked_method

    def hooked(*args: Any, **kwargs: Any) -> Any:
        calls.append("plain")
        return original(*args, **kwargs)

    return hooked


def _other(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Another library's wrapt wrapper."""
    calls.append("other")
    return wrapped(*args, **kwargs)


def _ours(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """One of jitrace's wrapt wrappers."""
    calls.append("wrapt")
    return wrapped(*args, **kwargs)


def _add(a: int, b: int = 0) -> int:
    """Adds."""
    return a + b


class _Adder:
    def add(self, a: int, b: int = 0) -> int:
        return a + b


@pytest.fixture
def module() -> types.ModuleType:
    calls.clear()
    mod = types.ModuleType("patched")
    mod.add = _add
    return mod


def test_a_plain_hook_calls_through_and_is_found_and_taken_out(module):
    _patching.wrap(module, "add", _factory, plain=True)
    _patching.wrap(module, "add", _factory, plain=True)  # once, however often called
    assert module.add(2, b=3) == 5 and calls == ["plain"]
    assert module.add.__wrapped__ is _add and module.add.__name__ == "_add" and module.add.__doc__ == "Adds."
    assert _patching.wrapped(module, "add", _factory) and not _patching.wrapped(module, "add", _ours)
    _patching.unwrap(module, "add", _factory)
    assert module.add is _add and not _patching.wrapped(module, "add", _factory)


def test_a_plain_hook_on_a_class_is_a_method_and_unwrap_lets_it_inherit_again():
    calls.clear()

    class Child(_Adder):
        pass

    _patching.wrap(Child, "add", _factory, plain=True)
    assert "add" in vars(Child) and Child().add(1, 2) == 3 and calls == ["plain"]
    _patching.unwrap(Child, "add", _factory)
    assert "add" not in vars(Child) and Child.add is _Adder.add


@pytest.mark.parametrize("order", ["plain first", "other first"])
def test_plain_hooks_and_wrapt_wrappers_chain_either_way(module, order):
    """Another library's wrapt wrapper over or under jitrace's plain hook: each taken out leaves the other working."""
    if order == "plain first":
        _patching.wrap(module, "add", _factory, plain=True)
        module.add = wrapt.FunctionWrapper(module.add, _other)
    else:
        module.add = wrapt.FunctionWrapper(module.add, _other)
        _patching.wrap(module, "add", _factory, plain=True)
    assert module.add(1, 1) == 2 and sorted(calls) == ["other", "plain"]
    _patching.unwrap(module, "add", _factory)
    calls.clear()
    assert module.add(1, 1) == 2 and calls == ["other"]
    assert isinstance(module.add, wrapt.FunctionWrapper) and module.add.__wrapped__ is _add


def test_a_wrapper_taken_out_from_under_a_plain_hook_is_no_longer_called(module):
    """A plain hook calls what it was made around: taking out a wrapper under it makes the hook again around what
    that wrapper wrapped (setting ``__wrapped__`` would not change what it calls)."""
    _patching.wrap(module, "add", _ours)
    _patching.wrap(module, "add", _factory, plain=True)
    assert module.add(1, 2) == 3 and calls == ["plain", "wrapt"]
    _patching.unwrap(module, "add", _ours)
    calls.clear()
    assert module.add(1, 2) == 3 and calls == ["plain"]
    assert module.add.__wrapped__ is _add and _patching.wrapped(module, "add", _factory)


def test_innermost_goes_under_a_plain_hook(module):
    _patching.wrap(module, "add", _factory, plain=True)
    _patching.wrap(module, "add", _ours, innermost=True)
    assert module.add(1, 2) == 3 and calls == ["plain", "wrapt"]
    _patching.unwrap(module, "add", _factory)
    _patching.unwrap(module, "add", _ours)
    assert module.add is _add


def test_a_wrapt_proxy_of_a_plain_hook_is_not_taken_for_the_hook(module):
    """wrapt proxies answer attribute look-ups for what they wrap: only a plain function is a hook of jitrace's."""
    _patching.wrap(module, "add", _factory, plain=True)
    module.add = wrapt.FunctionWrapper(module.add, _other)
    chain = _patching._chain(module, "add")
    assert [_patching._is(link, _factory) for link in chain] == [False, True, False]
