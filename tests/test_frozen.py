"""sipflow.frozen.builder: the same frozen value as the class's own __init__, or a refusal."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest

from sipflow.frozen import builder
from sipflow.sip.transaction import Disposition, TxFeed, TxKey, TxState


@dataclass(frozen=True, slots=True)
class _Point:
    x: int
    y: int
    label: str | None = None
    tags: tuple[str, ...] = ()


_new_point = builder(_Point)


def test_builder_equals_init_positional_keyword_and_defaults() -> None:
    cases: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((1, 2), {}),
        ((1,), {"y": 2, "label": "a"}),
        ((), {"x": 3, "y": 4, "tags": ("t",)}),
    ]
    for args, kwargs in cases:
        made, built = _Point(*args, **kwargs), _new_point(*args, **kwargs)
        assert built == made and hash(built) == hash(made) and repr(built) == repr(made)
        assert type(built) is _Point


def test_built_value_stays_frozen() -> None:
    p = _new_point(1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 5  # type: ignore[misc]
    assert p.x == 1


def test_missing_or_unknown_argument_is_a_type_error_as_with_init() -> None:
    with pytest.raises(TypeError):
        _new_point(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _new_point(1, 2, colour="red")  # type: ignore[call-arg]


def test_a_real_record_of_the_tracker() -> None:
    key = TxKey("z9hG4bK1", "10.0.0.1:5060", "INVITE")
    args = (key, Disposition.NEW_REQUEST, TxState.CALLING)
    assert builder(TxFeed)(*args) == TxFeed(*args)


@dataclass(frozen=True)
class _NoSlots:
    x: int


@dataclass(slots=True)
class _NotFrozen:
    x: int


@dataclass(frozen=True, slots=True)
class _Factory:
    x: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _PostInit:
    x: int

    def __post_init__(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class _KwOnly:
    x: int = field(kw_only=True)


@pytest.mark.parametrize("cls", [_NoSlots, _NotFrozen, _Factory, _PostInit, _KwOnly, int])
def test_what_init_would_do_differently_is_refused(cls: type) -> None:
    with pytest.raises(TypeError):
        builder(cls)
