"""sipflow.memo: a bounded memo never holds more than its limit and keeps the newest."""

from __future__ import annotations

from sipflow.memo import remember


def test_remember_is_bounded_and_returns_the_value() -> None:
    cache: dict[int, str] = {}
    for k in range(10_000):
        assert remember(cache, k, str(k), 64) == str(k)
        assert len(cache) <= 64
        assert cache[k] == str(k)
    assert len(cache) == 10_000 % 64  # emptied at every 64th store


def test_a_full_memo_is_emptied_before_the_store() -> None:
    cache = {1: "a", 2: "b"}
    remember(cache, 3, "c", 2)
    assert cache == {3: "c"}
    remember(cache, 3, "d", 2)  # an existing key below the limit: replaced in place
    assert cache == {3: "d"}
