"""Global one-to-one assignment of child legs to parent legs, by total log-odds.

How this works: the candidate edges (parent, child, weight > 0) split into connected
components (union-find); candidates only exist inside host-and-time windows or through
shared identifiers, so components stay small. Each component is solved exactly with the
Hungarian algorithm (Kuhn-Munkres with potentials, O(n^2 m)) when that stays under
:data:`EXACT_LIMIT` steps; a larger one (a long overlapping chain in a
busy capture) is matched greedily by weight and then improved by 2-swaps (exchange the
partners of two matched edges when both new edges exist and the sum grows) until no swap
helps. The result maximises the sum of log-odds, i.e. the most likely pairing when the
edges are independent, instead of taking each leg's first or best match in isolation.
"""

from __future__ import annotations

from collections import defaultdict

Edge = tuple[int, int, float]
"""(parent, child, weight)."""

EXACT_LIMIT = 200_000
"""Solve exactly when rows^2 * columns (the Hungarian step count) stays under this."""
MAX_SWAP_ROUNDS = 20


class _UnionFind:
    def __init__(self) -> None:
        self.up: dict[int, int] = {}

    def find(self, x: int) -> int:
        up = self.up
        root = x
        while up.get(root, root) != root:
            root = up[root]
        while up.get(x, x) != root:
            up[x], x = root, up[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.up[ra] = rb


def components(edges: list[Edge]) -> list[list[Edge]]:
    """Edges grouped by connected component (parents and children are distinct nodes)."""
    uf = _UnionFind()
    for p, c, _w in edges:
        uf.union(2 * p, 2 * c + 1)
    out: dict[int, list[Edge]] = defaultdict(list)
    for e in edges:
        out[uf.find(2 * e[0])].append(e)
    return list(out.values())


def hungarian(weights: list[list[float]]) -> list[int]:
    """Max-weight assignment of rows to columns (rows <= columns): ``col`` of each row.

    Kuhn-Munkres with row/column potentials on costs ``-weight`` (weights of missing
    edges are 0, so taking them is the same as leaving the row unmatched).
    """
    n, m = len(weights), len(weights[0])
    inf = float("inf")
    u, v = [0.0] * (n + 1), [0.0] * (m + 1)
    p, way = [0] * (m + 1), [0] * (m + 1)
    for i in range(1, n + 1):
        p[0], j0 = i, 0
        minv, used = [inf] * (m + 1), [False] * (m + 1)
        while True:
            used[j0] = True
            i0, delta, j1 = p[j0], inf, 0
            row = weights[i0 - 1]
            for j in range(1, m + 1):
                if not used[j]:
                    cur = -row[j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(m + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    col = [-1] * n
    for j in range(1, m + 1):
        if p[j]:
            col[p[j] - 1] = j - 1
    return col


def _exact(comp: list[Edge]) -> list[Edge]:
    parents = sorted({p for p, _c, _w in comp})
    children = sorted({c for _p, c, _w in comp})
    flip = len(parents) > len(children)
    rows, cols = (children, parents) if flip else (parents, children)
    ri = {x: k for k, x in enumerate(rows)}
    ci = {x: k for k, x in enumerate(cols)}
    w = [[0.0] * len(cols) for _ in rows]
    for p, c, weight in comp:
        r, k = (ri[c], ci[p]) if flip else (ri[p], ci[c])
        w[r][k] = weight
    out = []
    for r, k in enumerate(hungarian(w)):
        if k >= 0 and w[r][k] > 0:
            p, c = (cols[k], rows[r]) if flip else (rows[r], cols[k])
            out.append((p, c, w[r][k]))
    return out


def _greedy(comp: list[Edge]) -> list[Edge]:
    weight = {(p, c): w for p, c, w in comp}
    by_parent: dict[int, int] = {}
    by_child: dict[int, int] = {}
    for p, c, _w in sorted(comp, key=lambda e: -e[2]):
        if p not in by_parent and c not in by_child:
            by_parent[p], by_child[c] = c, p
    for _ in range(MAX_SWAP_ROUNDS):
        if not _swap_round(by_parent, by_child, weight):
            break
    return [(p, c, weight[(p, c)]) for p, c in by_parent.items()]


def _swap_round(
    by_parent: dict[int, int], by_child: dict[int, int], weight: dict[tuple[int, int], float]
) -> bool:
    """One pass of 2-swaps: (p1,c1),(p2,c2) -> (p1,c2),(p2,c1) when that adds weight."""
    improved = False
    for (p1, c2), w12 in list(weight.items()):
        c1, p2 = by_parent.get(p1), by_child.get(c2)
        if c1 is None or p2 is None or c1 == c2:
            continue
        w21 = weight.get((p2, c1))
        if w21 is None:
            continue
        if w12 + w21 > weight[(p1, c1)] + weight[(p2, c2)] + 1e-9:
            by_parent[p1], by_child[c2] = c2, p1
            by_parent[p2], by_child[c1] = c1, p2
            improved = True
    return improved


def assign(edges: list[Edge]) -> tuple[list[Edge], int, int]:
    """The max-weight one-to-one matching; also how many components were solved exactly
    and how many greedily (for the report)."""
    out: list[Edge] = []
    exact = greedy = 0
    for comp in components([e for e in edges if e[2] > 0]):
        parents = {e[0] for e in comp}
        children = {e[1] for e in comp}
        if len(comp) == 1:
            out.extend(comp)
            exact += 1
        elif min(len(parents), len(children)) ** 2 * max(len(parents), len(children)) <= (
            EXACT_LIMIT
        ):
            out.extend(_exact(comp))
            exact += 1
        else:
            out.extend(_greedy(comp))
            greedy += 1
    return out, exact, greedy
