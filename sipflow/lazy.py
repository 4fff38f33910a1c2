"""Public names imported from their modules when first used (PEP 562).

A package that re-exports names from heavy modules (the analyser, the TLS decoder, the PBX
log readers) gives itself ``__getattr__ = lazy_names(__name__, globals(), WHERE)``: a name
in ``WHERE`` is imported from the module named beside it the first time it is asked for,
then kept in the package's namespace, so later look-ups do not come here. Only the standard
library is imported here: ``import sipflow`` stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(
    module: str, namespace: dict[str, Any], where: Mapping[str, str]
) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``module`` (its ``__name__``; ``namespace``: its
    ``globals()``) that imports each name of ``where`` from the absolute module name given."""

    def __getattr__(name: str) -> Any:
        source = where.get(name)
        if source is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        namespace[name] = value  # later look-ups find it without this call
        return value

    return __getattr__
