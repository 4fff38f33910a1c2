"""The assignment: Hungarian against brute force, greedy + 2-swaps, components."""

from __future__ import annotations

import itertools
import random

from sipflow.correlate.assign import _greedy, assign, components, hungarian


def _brute(w: list[list[float]]) -> float:
    n, m = len(w), len(w[0])
    best = 0.0
    for cols in itertools.permutations(range(m), n):
        best = max(best, sum(max(w[r][c], 0.0) for r, c in enumerate(cols)))
    return best


def test_hungarian_matches_brute_force_on_random_matrices() -> None:
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(1, 4)
        m = rng.randint(n, 5)
        w = [
            [round(rng.uniform(-3, 9), 2) if rng.random() < 0.7 else 0.0 for _ in range(m)]
            for _ in range(n)
        ]
        cols = hungarian(w)
        assert len(set(c for c in cols if c >= 0)) == len([c for c in cols if c >= 0])
        got = sum(max(w[r][c], 0.0) for r, c in enumerate(cols) if c >= 0)
        assert abs(got - _brute(w)) < 1e-6


def test_assign_prefers_total_over_first_best() -> None:
    # child 10 prefers parent 2 (6 > 5), child 11 needs parent 2 (9 vs 1)
    edges = [(1, 10, 5.0), (2, 10, 6.0), (2, 11, 9.0), (1, 11, 1.0)]
    matched, exact, greedy = assign(edges)
    assert sorted((p, c) for p, c, _w in matched) == [(1, 10), (2, 11)]
    assert (exact, greedy) == (1, 0)


def test_greedy_with_swaps_fixes_the_same_case() -> None:
    edges = [(1, 10, 5.0), (2, 10, 6.0), (2, 11, 9.0), (1, 11, 1.0)]
    assert sorted((p, c) for p, c, _w in _greedy(edges)) == [(1, 10), (2, 11)]
    # greedy alone takes (2, 11) first here; a case where a swap is needed:
    swap = [(1, 10, 9.0), (1, 11, 8.0), (2, 10, 8.0)]
    assert sorted((p, c) for p, c, _w in _greedy(swap)) == [(1, 11), (2, 10)]


def test_components_split_independent_windows() -> None:
    edges = [(1, 10, 1.0), (2, 10, 1.0), (3, 30, 1.0)]
    sizes = sorted(len(c) for c in components(edges))
    assert sizes == [1, 2]


def test_non_positive_edges_are_never_matched() -> None:
    matched, _e, _g = assign([(1, 10, -1.0), (2, 11, 0.0)])
    assert matched == []


def test_local_search_is_a_valid_matching_close_to_optimal() -> None:
    rng = random.Random(11)
    worst = 1.0
    for _ in range(100):
        edges = [
            (p, 100 + c, round(rng.uniform(0.1, 9), 2))
            for p in range(5)
            for c in range(5)
            if rng.random() < 0.5
        ]
        if not edges:
            continue
        got = _greedy(edges)
        assert len({p for p, _c, _w in got}) == len(got) == len({c for _p, c, _w in got})
        best = sum(w for _p, _c, w in assign(edges)[0])
        worst = min(worst, sum(w for _p, _c, w in got) / best)
    assert worst > 0.85
