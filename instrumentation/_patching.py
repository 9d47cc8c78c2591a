"""The one way jitrace patches another library (grpc, PyJWT, pycasbin): a ``wrapt`` function wrapper, found again by
its wrapper function; or, for a hook on a per-call path (PyJWT's decode), a plain function made by a factory, found
again by that factory (``plain=True``): wrapt's call machinery costs several times a plain function's on every call.
A plain one carries ``__wrapped__`` (what it calls) like a wrapt wrapper, so chains of both are walked alike.

As OpenTelemetry's instrumentors do (``wrapt.wrap_function_wrapper`` and ``unwrap``), with what jitrace's place
needs on top: ``innermost`` puts the wrapper under every wrapt wrapper already there (OpenTelemetry intercepts the
channel that its wrapped ``grpc.insecure_channel`` returns, and jitrace's interceptor must be inside it); ``unwrap``
takes jitrace's wrapper out wherever it is in a chain of wrapt wrappers, so a wrapper another library put above it
stays, and an attribute jitrace patched on a class that only inherited it is inherited again. A wrapper that cannot
be reached (under a plain function another library put in place) stays; the hooks are pass-throughs when off.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from typing import Any

import wrapt

Wrapper = Callable[[Callable[..., Any], Any, tuple, dict], Any]  # wrapt's (wrapped, instance, args, kwargs)
# A plain hook's factory: (the function or method it stands in for, whether that is a class's method) -> the hook
Factory = Callable[[Any, bool], Callable[..., Any]]
_PLAIN = "_jitrace_factory"  # a plain hook's attribute: the factory that made it


def _plain_factory(link: Any) -> Any:
    """The factory a plain hook of jitrace's was made by, else None (a plain function only: a wrapt proxy would
    answer for what it wraps)."""
    return link.__dict__.get(_PLAIN) if type(link) is types.FunctionType else None


def _chain(owner: Any, name: str) -> list[Any]:
    """``owner.name`` (unbound, as stored) and every wrapt function wrapper or plain hook of jitrace's under it,
    outermost first."""
    chain = [inspect.getattr_static(owner, name)]
    while isinstance(chain[-1], wrapt.FunctionWrapper) or _plain_factory(chain[-1]) is not None:
        chain.append(chain[-1].__wrapped__)
    return chain


def _is(link: Any, wrapper: Wrapper | Factory) -> bool:
    return (isinstance(link, wrapt.FunctionWrapper) and link._self_wrapper is wrapper) or \
        _plain_factory(link) is wrapper


def _plain(inner: Any, factory: Factory, method: bool) -> Callable[..., Any]:
    hook = factory(inner, method)
    functools.update_wrapper(hook, inner, updated=())  # its name and docstring; __wrapped__ = inner
    hook.__dict__[_PLAIN] = factory
    return hook


def wrap(owner: Any, name: str, wrapper: Wrapper | Factory, *, innermost: bool = False, plain: bool = False) -> None:
    """Wrap ``owner.name`` (a module's function or a class's method) with ``wrapper``; once, however often called.
    ``plain``: ``wrapper`` is a :data:`Factory` and the hook is the plain function it makes."""
    chain = _chain(owner, name)
    if any(_is(link, wrapper) for link in chain):
        return

    def link(inner: Any) -> Any:
        if plain:
            return _plain(inner, wrapper, isinstance(owner, type))  # type: ignore[arg-type]
        return wrapt.FunctionWrapper(inner, wrapper)

    if innermost and len(chain) > 1:
        _point(owner, name, chain, len(chain) - 2, link(chain[-1]))
    else:
        setattr(owner, name, link(chain[0]))


def _point(owner: Any, name: str, chain: list[Any], index: int, inner: Any) -> None:
    """Make ``chain[index]`` call ``inner``: a wrapt wrapper's ``__wrapped__`` is set; a plain hook (which calls what
    it was made around) is made again around ``inner``, and put where it was."""
    link = chain[index]
    factory = _plain_factory(link)
    if factory is None:
        link.__wrapped__ = inner
        return
    remade = _plain(inner, factory, isinstance(owner, type))
    if index:
        _point(owner, name, chain, index - 1, remade)
    else:
        setattr(owner, name, remade)


def unwrap(owner: Any, name: str, wrapper: Wrapper | Factory) -> None:
    """Take ``wrapper`` out of ``owner.name``: what it wrapped is there again, whatever was wrapped around it stays."""
    chain = _chain(owner, name)
    for index, link in enumerate(chain):
        if not _is(link, wrapper):
            continue
        inner = link.__wrapped__
        if index:
            _point(owner, name, chain, index - 1, inner)
        elif isinstance(owner, type) and any(vars(base).get(name) is inner for base in owner.__mro__[1:]):
            delattr(owner, name)  # the class only inherited it: inherited again
        else:
            setattr(owner, name, inner)
        return


def wrapped(owner: Any, name: str, wrapper: Wrapper | Factory) -> bool:
    """Whether ``wrapper`` is in ``owner.name``'s chain of wrappers."""
    return any(_is(link, wrapper) for link in _chain(owner, name))
