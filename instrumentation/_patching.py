"""The one way jitrace patches another library (grpc, PyJWT, pycasbin): a ``wrapt`` function wrapper, found again by
its wrapper function.

As OpenTelemetry's instrumentors do (``wrapt.wrap_function_wrapper`` and ``unwrap``), with what jitrace's place
needs on top: ``innermost`` puts the wrapper under every wrapt wrapper already there (OpenTelemetry intercepts the
channel that its wrapped ``grpc.insecure_channel`` returns, and jitrace's interceptor must be inside it); ``unwrap``
takes jitrace's wrapper out wherever it is in a chain of wrapt wrappers, so a wrapper another library put above it
stays, and an attribute jitrace patched on a class that only inherited it is inherited again. A wrapper that cannot
be reached (under a plain function another library put in place) stays; the hooks are pass-throughs when off.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import wrapt

Wrapper = Callable[[Callable[..., Any], Any, tuple, dict], Any]  # wrapt's (wrapped, instance, args, kwargs)


def _chain(owner: Any, name: str) -> list[Any]:
    """``owner.name`` (unbound, as stored) and every wrapt function wrapper under it, outermost first."""
    chain = [inspect.getattr_static(owner, name)]
    while isinstance(chain[-1], wrapt.FunctionWrapper):
        chain.append(chain[-1].__wrapped__)
    return chain


def _is(link: Any, wrapper: Wrapper) -> bool:
    return isinstance(link, wrapt.FunctionWrapper) and link._self_wrapper is wrapper


def wrap(owner: Any, name: str, wrapper: Wrapper, *, innermost: bool = False) -> None:
    """Wrap ``owner.name`` (a module's function or a class's method) with ``wrapper``; once, however often called."""
    chain = _chain(owner, name)
    if any(_is(link, wrapper) for link in chain):
        return
    if innermost and len(chain) > 1:
        chain[-2].__wrapped__ = wrapt.FunctionWrapper(chain[-1], wrapper)
    else:
        setattr(owner, name, wrapt.FunctionWrapper(chain[0], wrapper))


def unwrap(owner: Any, name: str, wrapper: Wrapper) -> None:
    """Take ``wrapper`` out of ``owner.name``: what it wrapped is there again, whatever was wrapped around it stays."""
    chain = _chain(owner, name)
    for index, link in enumerate(chain):
        if not _is(link, wrapper):
            continue
        inner = link.__wrapped__
        if index:
            chain[index - 1].__wrapped__ = inner
        elif isinstance(owner, type) and any(vars(base).get(name) is inner for base in owner.__mro__[1:]):
            delattr(owner, name)  # the class only inherited it: inherited again
        else:
            setattr(owner, name, inner)
        return


def wrapped(owner: Any, name: str, wrapper: Wrapper) -> bool:
    """Whether ``wrapper`` is in ``owner.name``'s chain of wrapt wrappers."""
    return any(_is(link, wrapper) for link in _chain(owner, name))
