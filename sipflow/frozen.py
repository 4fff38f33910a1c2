"""Build frozen slotted dataclasses without their generated ``__init__``.

How this works: CPython 3.11 gives a frozen dataclass an ``__init__`` that stores each
field with ``object.__setattr__(self, name, value)`` (the class refuses plain assignment);
that call costs several times a plain store, and the records built once per message or per
transaction (``TxFeed``, ``TransactionRecord``, ``CallRecord``) spent most of their
construction there. :func:`builder` returns a function with the same parameters as the
class's ``__init__`` (names, order, defaults) that allocates the instance and writes each
field through its slot descriptor: a plain store. The value is the same frozen instance
(``__setattr__`` still refuses changes, equality and hashing are the dataclass's). Only
what the generated ``__init__`` would do trivially is supported: a class with
``default_factory``, ``init=False`` or keyword-only fields, or a ``__post_init__``, is
refused with TypeError when the builder is made (at import time).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

__all__ = ["builder"]


def builder(cls: Callable[P, T]) -> Callable[P, T]:
    """A constructor of the frozen, slotted dataclass ``cls`` equivalent to ``cls(...)``;
    typed with the class's own parameters, so its calls are checked as ``cls(...)`` are."""
    if not isinstance(cls, type) or not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r}: builder() takes a frozen, slotted dataclass")
    params = dataclasses.fields(cls)
    _check(cls, params)
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    signature, body = [], []
    for f in params:
        namespace[f"_set_{f.name}"] = getattr(cls, f.name).__set__  # the slot descriptor
        if f.default is dataclasses.MISSING:
            signature.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            signature.append(f"{f.name}=_default_{f.name}")
        body.append(f"    _set_{f.name}(obj, {f.name})\n")
    # generated as dataclasses generates __init__: one straight-line function per class
    head = f"def build({', '.join(signature)}):\n    obj = _new(_cls)\n"
    exec(head + "".join(body) + "    return obj\n", namespace)  # text made of field names only
    build: Callable[P, T] = namespace["build"]
    build.__name__ = build.__qualname__ = f"build_{cls.__name__}"
    build.__doc__ = f"``{cls.__name__}(...)`` without the frozen ``__init__`` (sipflow.frozen)."
    return build


def _check(cls: type, params: tuple[dataclasses.Field[Any], ...]) -> None:
    options = getattr(cls, "__dataclass_params__", None)  # what @dataclass was given
    if options is None or not options.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: builder() takes a frozen, slotted dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: __post_init__ is not run by builder()")
    for f in params:
        if f.default_factory is not dataclasses.MISSING or not f.init or f.kw_only:
            raise TypeError(f"{cls.__name__}.{f.name}: builder() takes plain fields only")
