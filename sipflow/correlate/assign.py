"""Global one-to-one assignment of child legs to parent legs, by total log-odds.

How this works: the candidate edges (parent, child, weight > 0) split into connected
components (union-find); candidates only exist inside host-and-time windows or through
shared identifiers, so components stay small. Each component is solved exactly with the
Hungarian algorithm (Kuhn-Munkres with potentials, O(n^2 m)) when that stays under
:data:`EXACT_LIMIT` steps; a larger one (a long overlapping chain in a
busy capture) is matched greedily by weight and then improved by local moves (take an
unmatched edge, re-pair or free the two partners it displaces, when the sum grows) until
none helps. The result maximises the sum of log-odds, i.e. the most likely pairing when the
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

    Kuhn-Munkres with row/column potentials on costs ``-max(weight, 0)``: a missing or
    negative edge costs 0, so taking it is the same as leaving the row unmatched.
    """
    weights = [[w if w > 0 else 0.0 for w in row] for row in weights]
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


class _Local:
    """Greedy matching then local moves: take an unmatched edge (p, c) when that adds
    weight; the partners it displaces are re-paired with each other or with their best
    free neighbour (an augmenting path of length at most five)."""

    def __init__(self, comp: list[Edge]) -> None:
        self.w = {(p, c): w for p, c, w in comp}
        self.kids: dict[int, list[int]] = defaultdict(list)
        self.dads: dict[int, list[int]] = defaultdict(list)
        for p, c, _w in comp:
            self.kids[p].append(c)
            self.dads[c].append(p)
        self.pc: dict[int, int] = {}
        self.cp: dict[int, int] = {}
        for p, c, _w in sorted(comp, key=lambda e: -e[2]):
            if p not in self.pc and c not in self.cp:
                self.pc[p], self.cp[c] = c, p

    def _free_dad(self, c: int, skip: int) -> tuple[float, int | None]:
        return max(
            ((self.w[(q, c)], q) for q in self.dads[c] if q not in self.pc and q != skip),
            default=(0.0, None),
        )

    def _free_kid(self, p: int, skip: int) -> tuple[float, int | None]:
        return max(
            ((self.w[(p, k)], k) for k in self.kids[p] if k not in self.cp and k != skip),
            default=(0.0, None),
        )

    def move(self, p1: int, c2: int) -> bool:
        c1, p2 = self.pc.get(p1), self.cp.get(c2)
        if c1 == c2:
            return False
        old = (self.w[(p1, c1)] if c1 is not None else 0.0) + (
            self.w[(p2, c2)] if p2 is not None else 0.0
        )
        pair = self.w.get((p2, c1), 0.0) if p2 is not None and c1 is not None else 0.0
        dad = self._free_dad(c1, p1) if c1 is not None else (0.0, None)
        kid = self._free_kid(p2, c2) if p2 is not None else (0.0, None)
        gain_pair, gain_apart = pair, dad[0] + kid[0]
        if self.w[(p1, c2)] + max(gain_pair, gain_apart) <= old + 1e-9:
            return False
        for c in (c1, c2):
            if c is not None:
                self.cp.pop(c, None)
        for p in (p1, p2):
            if p is not None:
                self.pc.pop(p, None)
        self.pc[p1], self.cp[c2] = c2, p1
        if gain_pair >= gain_apart and pair > 0 and p2 is not None and c1 is not None:
            self.pc[p2], self.cp[c1] = c1, p2
        else:
            for q, k in ((dad[1], c1), (p2, kid[1])):
                if q is not None and k is not None and q not in self.pc and k not in self.cp:
                    self.pc[q], self.cp[k] = k, q
        return True

    def run(self) -> list[Edge]:
        for _ in range(MAX_SWAP_ROUNDS):
            if not any([self.move(p, c) for (p, c) in list(self.w) if self.pc.get(p) != c]):
                break
        return [(p, c, self.w[(p, c)]) for p, c in self.pc.items()]


def _greedy(comp: list[Edge]) -> list[Edge]:
    return _Local(comp).run()


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
