"""The legs of one call across B2BUAs, SBCs and proxies, tied with evidence and confidence.

How this works, in five steps, all on :class:`~sipflow.correlate.facts.LegFacts` (a small
per-leg summary taken when each call was released):

1. **Candidates**, never all pairs: (a) through a host: legs indexed by the host that sent
   their INVITE; a parent leg's INVITE destination host is looked up and only legs that
   host began while the parent was being set up (``[invite - skew, final]``) are taken;
   a leg that finds no parent this way looks for a parent that was already answered
   (IVR first, then dial); (b) through identifiers: X-CID-style headers naming a
   Call-ID, shared Session-ID UUIDs (RFC 7989), icid (RFC 7315), Call-ID tokens one leg
   shares with another (prefix/suffix), Replaces (RFC 3891), REFER targets (RFC 3515);
   (c) through PBX logs: channels tied by originate/bridge lines, each with its Call-IDs
   (:mod:`sipflow.correlate.logs`, loaded only when a log gave channel events).
2. **Scores**: every rule of :mod:`sipflow.correlate.evidence` compares the pair; the sum
   of their log-odds weights is the pair's score.
3. **Assignment**: one child per parent, maximising the total score over each connected
   component (:mod:`sipflow.correlate.assign`: exact Hungarian, greedy + 2-swaps when
   large); then a leg still without a parent joins its best one when that is uncontested,
   strong (headers, logs) or serial (the parent's other children were over by then:
   hunting / forking).
4. **Confidence** of a link: the share of the child's candidate odds held by parents of
   the same group (softmax with a "no parent" option), and on the parent's side the share
   against overlapping children of other groups; candidates explained away by a clearly
   better link of their own do not count. Links under ``min_confidence`` are dropped.
5. **Findings**: close competitors in another group give ``correlate.ambiguous`` naming
   both Call-IDs.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sipflow.correlate.assign import assign
from sipflow.correlate.evidence import (
    PROXY_RULES,
    STRONG,
    TRANSFER_RULES,
    Evidence,
    Leg,
    call_id_core,
    common_values,
    main_rule,
    score,
)
from sipflow.correlate.facts import (
    DEFAULT_ID_HEADERS,
    FactsOptions,
    HopTimes,
    LegFacts,
    facts_of,
)
from sipflow.correlate.normalise import DEFAULT_PLAN, NumberPlan
from sipflow.findings import Finding, Severity

if TYPE_CHECKING:
    from sipflow.ingest.pbxlog.types import ChannelEvent

__all__ = [
    "DEFAULT_ID_HEADERS",
    "CorrelateOptions",
    "Correlation",
    "Evidence",
    "FactsOptions",
    "HopTimes",
    "LegFacts",
    "LegLink",
    "NumberPlan",
    "correlate",
    "facts_of",
    "group_to_dict",
    "legs_rows",
    "subset",
]

MS = 1_000_000
S = 1_000_000_000
_TOKEN = re.compile(r"[^0-9A-Za-z]+")


@dataclass(frozen=True, slots=True)
class CorrelateOptions:
    """Knobs of :func:`correlate`; the defaults suit captures from one network."""

    plan: NumberPlan = DEFAULT_PLAN
    skew_ms: float = 5.0
    """How far a child INVITE may seem to precede its parent's (separate capture points)."""
    max_setup_s: float = 120.0
    """Window for children of a parent with no final response yet."""
    late_s: float = 3600.0
    """How far back a parentless leg looks for an answered parent (IVR first, then dial)."""
    late_scan: int = 64
    """At most this many earlier legs per sending endpoint are checked for a late parent."""
    min_confidence: float = 0.5
    """Links below this are not used to group legs (still reported as ambiguous)."""
    margin: float = 1.4
    """Competitors within this many log-odds of a link are 'close' (ln 4: odds 4:1)."""
    max_shared: int = 16
    """Identifier values carried by more legs than this are ignored (counted in skipped)."""
    host_aliases: tuple[tuple[str, str], ...] = ()
    """(ip, box) pairs: addresses of one B2BUA/SBC with several interfaces."""


@dataclass(frozen=True, slots=True)
class LegLink:
    """``b`` continues the call of ``a`` (indexes into the legs list)."""

    a: int
    b: int
    rule: str
    """The rule that carried the link (heaviest positive evidence)."""
    confidence: float
    score: float
    """Sum of log-odds weights (prior included)."""
    evidence: tuple[Evidence, ...]

    def evidence_dicts(self) -> list[dict[str, object]]:
        return [e.to_dict() for e in self.evidence if e.weight != 0]


@dataclass
class Correlation:
    """Legs grouped into call stories, the links that tie them and what was doubtful."""

    groups: list[list[int]]
    """Indexes into the legs, each leg in exactly one group; groups and legs in time order."""
    links: list[LegLink]
    findings: list[Finding]
    parent: list[int | None] = field(default_factory=list)
    """Per leg: the leg it continues (None for the first leg of a story)."""
    roles: list[str] = field(default_factory=list)
    """Per leg: ``a-leg``, ``b-leg``, ``hop n`` (deeper or a proxy hop), ``transfer``."""
    group_of: list[int] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    """Candidates not considered, by reason."""
    stats: dict[str, int] = field(default_factory=dict)
    finding_legs: list[int] = field(default_factory=list)
    """Per finding: the leg it is about (the child of a ``correlate.ambiguous``)."""

    def link_of(self, child: int) -> LegLink | None:
        for link in self.links:
            if link.b == child:
                return link
        return None

    def links_by_child(self) -> dict[int, LegLink]:
        """:meth:`link_of` of every linked leg, from one pass over the links (a pass per
        leg made the JSON of a B2BUA capture legs x links)."""
        return {link.b: link for link in reversed(self.links)}  # the first link of a child


# -- candidates -----------------------------------------------------------------------

Cands = dict[tuple[int, int], list[Evidence]]


def _orient(legs: list[Leg], i: int, j: int) -> tuple[int, int]:
    ki = (legs[i].f.near.invite, i)
    kj = (legs[j].f.near.invite, j)
    return (i, j) if ki <= kj else (j, i)


def _add(cands: Cands, legs: list[Leg], i: int, j: int, ev: Evidence | None = None) -> None:
    if i == j:
        return
    key = _orient(legs, i, j)
    found = cands.setdefault(key, [])
    if ev is not None:
        found.append(ev)


def _sender_index(legs: list[Leg]) -> dict[str, dict[Any, tuple[list[int], list[int]]]]:
    """host -> sending endpoint -> (INVITE times, leg indexes), in time order."""
    index: dict[str, dict[Any, tuple[list[int], list[int]]]] = defaultdict(dict)
    for leg in sorted(legs, key=lambda g: g.f.near.invite):
        if leg.src_host is None:
            continue
        times, idxs = index[leg.src_host].setdefault(leg.f.near.src, ([], []))
        times.append(leg.f.near.invite)
        idxs.append(leg.i)
    return index


def _window_end(a: LegFacts, opts: CorrelateOptions) -> int:
    skew = int(opts.skew_ms * MS)
    final = a.far.final if a.far.final is not None else a.near.final
    if final is not None:
        return final + skew
    return a.far.invite + int(opts.max_setup_s * S)


def _host_candidates(legs: list[Leg], opts: CorrelateOptions, cands: Cands) -> None:
    """Children sent by the host the parent's INVITE went to, while it was being set up."""
    index = _sender_index(legs)
    skew = int(opts.skew_ms * MS)
    for a in legs:
        senders = index.get(a.dst_host or "")
        if not senders:
            continue
        own = (a.f.near.src, a.f.far.src)
        lo, hi = a.f.far.invite - skew, _window_end(a.f, opts)
        for src, (times, idxs) in senders.items():
            if src in own:  # the parent's own sender: a sibling call, not a child
                continue
            for k in range(bisect_left(times, lo), bisect_right(times, hi)):
                if idxs[k] != a.i:
                    _add(cands, legs, a.i, idxs[k])


def _late_candidates(legs: list[Leg], opts: CorrelateOptions, cands: Cands) -> None:
    """Legs with no parent yet: an already answered parent whose host then dialled them."""
    has_parent = {c for _p, c in cands}
    by_dst: dict[str, dict[Any, tuple[list[int], list[int]]]] = defaultdict(dict)
    for leg in sorted(legs, key=lambda g: g.f.far.invite):
        if leg.dst_host is not None and leg.f.answer is not None:
            times, idxs = by_dst[leg.dst_host].setdefault(leg.f.near.src, ([], []))
            times.append(leg.f.far.invite)
            idxs.append(leg.i)
    late = int(opts.late_s * S)
    for b in legs:
        if b.i in has_parent or b.src_host is None:
            continue
        start = b.f.near.invite
        for src, (times, idxs) in by_dst.get(b.src_host, {}).items():
            if src == b.f.near.src:
                continue
            hi = bisect_left(times, start)
            for k in range(hi - 1, max(-1, hi - 1 - opts.late_scan), -1):
                if times[k] < start - late:
                    break
                a = legs[idxs[k]].f
                answered = a.answer is not None and a.answer <= start
                if answered and (a.end is None or a.end >= start):
                    _add(cands, legs, idxs[k], b.i)


def _shared_values(leg: Leg) -> Iterable[tuple[str, str]]:
    f = leg.f
    for name, value in f.id_headers:
        yield ("id", value)
        yield ("id:" + name, value)
    for u in f.session_ids:
        yield ("session", u)
    for icid in f.icids:
        yield ("icid", icid)
    for session in leg.sessions:  # an SBC that rewrites only the o= address
        yield ("o", session)
    core = call_id_core(f.call_id)
    tokens = {t for t in _TOKEN.split(core) if len(t) >= 8}
    if len(core) >= 8:
        tokens.add(core)
    for t in tokens:
        yield ("token", t)


def _key_candidates(
    legs: list[Leg], opts: CorrelateOptions, cands: Cands, skipped: Counter[str]
) -> None:
    by_cid: dict[str, int] = {}
    for leg in legs:
        for cid in leg.f.call_ids:
            by_cid.setdefault(cid, leg.i)
    buckets: dict[tuple[str, str], list[int]] = defaultdict(list)
    for leg in legs:
        for key in dict.fromkeys(_shared_values(leg)):
            buckets[key].append(leg.i)
        named = [v for _n, v in leg.f.id_headers] + list(leg.f.replaces)
        named += [r for _u, r, _t in leg.f.refers if r]
        for value in named:
            j = by_cid.get(value)
            if j is not None:
                _add(cands, legs, j, leg.i)
    for (kind, _value), idxs in buckets.items():
        if len(idxs) > opts.max_shared:
            skipped[f"{kind.split(':')[0]} shared by more than {opts.max_shared} legs"] += 1
            continue
        for x in range(len(idxs)):
            for y in range(x + 1, len(idxs)):
                if kind == "o" and legs[idxs[x]].origins & legs[idxs[y]].origins:
                    continue  # one o= unchanged (a UA's constant SDP): not an SBC's rewrite
                _add(cands, legs, idxs[x], idxs[y])


def _refer_candidates(legs: list[Leg], cands: Cands) -> None:
    """RFC 3515: legs begun within 32 s after a REFER of another leg."""
    if not any(leg.f.refers for leg in legs):
        return
    order = sorted(legs, key=lambda g: g.f.near.invite)
    times = [g.f.near.invite for g in order]
    for a in legs:
        for _user, _repl, ts in a.f.refers:
            for k in range(bisect_left(times, ts), bisect_right(times, ts + 32 * S)):
                _add(cands, legs, a.i, order[k].i)


def _event_candidates(legs: list[Leg], events: list[ChannelEvent], cands: Cands) -> None:
    if not events:
        return
    from sipflow.correlate.logs import log_links  # loaded only when a log gave channel events

    by_cid: dict[str, int] = {}
    for leg in legs:
        for cid in leg.f.call_ids:
            by_cid.setdefault(cid, leg.i)
    for c1, c2, ev in log_links(events):
        i, j = by_cid.get(c1), by_cid.get(c2)
        if i is not None and j is not None and i != j:
            key = _orient(legs, i, j)
            found = cands.setdefault(key, [])
            if all(x.field != ev.field for x in found):
                found.append(ev)


# -- assignment and confidence ----------------------------------------------------------


def _span(f: LegFacts) -> tuple[int, int]:
    end = f.end or f.near.final or f.far.final or f.near.invite
    return f.near.invite, max(end, f.near.invite)


def _overlap(x: tuple[int, int], y: tuple[int, int]) -> bool:
    """Two legs' :func:`_span` overlap."""
    (a0, a1), (b0, b1) = x, y
    return a0 <= b1 and b0 <= a1


@dataclass
class _Scored:
    score: dict[tuple[int, int], float]
    evidence: dict[tuple[int, int], tuple[Evidence, ...]]
    parents_of: dict[int, list[int]]
    children_of: dict[int, list[int]]


def _score_all(legs: list[Leg], cands: Cands, plan: NumberPlan) -> _Scored:
    sc = _Scored({}, {}, defaultdict(list), defaultdict(list))
    for (p, c), extra in cands.items():
        total, ev = score(legs[p], legs[c], plan, tuple(extra))
        sc.score[(p, c)] = total
        sc.evidence[(p, c)] = ev
        sc.parents_of[c].append(p)
        sc.children_of[p].append(c)
    return sc


def _extra_children(
    legs: list[Leg], sc: _Scored, chosen: dict[int, int], first: set[tuple[int, int]]
) -> None:
    """Pass 2: parentless legs join their best parent when uncontested, strong or serial."""
    kids: dict[int, list[int]] = defaultdict(list)
    for c, p in chosen.items():
        kids[p].append(c)
    for c in sorted(sc.parents_of, key=lambda x: legs[x].f.near.invite):
        if c in chosen:
            continue
        ranked = sorted(
            ((sc.score[(p, c)], p) for p in sc.parents_of[c] if sc.score[(p, c)] > 0),
            reverse=True,
        )
        if not ranked:
            continue
        w, p = ranked[0]
        serial = not any(_overlap(_span(legs[k].f), _span(legs[c].f)) for k in kids[p])
        if len(ranked) == 1 or w >= STRONG or serial:
            chosen[c] = p
            kids[p].append(c)


def _groups(n: int, chosen: dict[int, int]) -> list[int]:
    root = list(range(n))

    def find(x: int) -> int:
        while root[x] != x:
            root[x] = root[root[x]]
            x = root[x]
        return x

    for c, p in chosen.items():
        rc, rp = find(c), find(p)
        if rc != rp:
            root[rc] = rp
    return [find(i) for i in range(n)]


def _best_kept(sc: _Scored, chosen: dict[int, int]) -> dict[int, float]:
    """Per parent: the best score of the children it kept (in ``chosen``)."""
    best: dict[int, float] = {}
    for c, p in chosen.items():
        w = sc.score[(p, c)]
        if w > best.get(p, -math.inf):
            best[p] = w
    return best


def _explained(sc: _Scored, best: dict[int, float], q: int, c: int, margin: float) -> bool:
    """Competitor parent ``q`` of ``c`` has a clearly better child of its own (``best``:
    :func:`_best_kept`; once per parent rather than a walk of its children per question,
    which made a busy B2BUA's capture children x candidates)."""
    return best.get(q, -math.inf) > sc.score[(q, c)] + margin


def _child_side(
    sc: _Scored,
    chosen: dict[int, int],
    grp: list[int],
    c: int,
    margin: float,
    best: dict[int, float],
) -> float:
    p = chosen[c]
    num, den = 0.0, 1.0
    for q in sc.parents_of[c]:
        e = math.exp(min(sc.score[(q, c)], 50.0))
        if grp[q] == grp[p]:
            num += e
            den += e
        elif not _explained(sc, best, q, c, margin):
            den += e
    return num / den


def _parent_side(
    sc: _Scored,
    chosen: dict[int, int],
    grp: list[int],
    c: int,
    margin: float,
    spans: list[tuple[int, int]],
) -> float:
    p = chosen[c]
    mine = math.exp(min(sc.score[(p, c)], 50.0))
    den = 1.0 + mine
    for k in sc.children_of.get(p, ()):
        if k == c or grp[k] == grp[p] or not _overlap(spans[k], spans[c]):
            continue
        owner = chosen.get(k)
        w = sc.score[(p, k)]
        if owner is not None and sc.score[(owner, k)] > w + margin:
            continue
        den += math.exp(min(w, 50.0))
    return mine / den


def _confidences(
    legs: list[Leg], sc: _Scored, chosen: dict[int, int], margin: float
) -> dict[int, float]:
    if not chosen:
        return {}
    grp = _groups(len(legs), chosen)
    best = _best_kept(sc, chosen)
    spans = [_span(leg.f) for leg in legs]  # once a round, not twice per comparison
    return {
        c: min(
            _child_side(sc, chosen, grp, c, margin, best),
            _parent_side(sc, chosen, grp, c, margin, spans),
        )
        for c in chosen
    }


MAX_DROP_ROUNDS = 8


def _drop_weak(
    legs: list[Leg], sc: _Scored, chosen: dict[int, int], opts: CorrelateOptions
) -> tuple[dict[int, float], list[int]]:
    """Drop links under ``min_confidence`` from ``chosen`` until none is left: a dropped
    link splits a group, which can take confidence from a link that shared it."""
    conf = _confidences(legs, sc, chosen, opts.margin)
    dropped: list[int] = []
    for last in range(MAX_DROP_ROUNDS, -1, -1):
        weak = [c for c, v in conf.items() if v < opts.min_confidence]
        if not weak:
            break
        for c in weak:
            del chosen[c]
            del conf[c]
        dropped += weak
        if last:
            conf = _confidences(legs, sc, chosen, opts.margin)
    return conf, dropped


# -- findings ---------------------------------------------------------------------------


def _ambiguity(
    legs: list[Leg], sc: _Scored, chosen: dict[int, int], grp: list[int], margin: float
) -> list[tuple[int, Finding]]:
    """(child leg, finding) for each leg that could continue two calls."""
    out = []
    best = _best_kept(sc, chosen)
    for c, parents in sc.parents_of.items():
        ranked = sorted(((sc.score[(p, c)], p) for p in parents), reverse=True)
        ranked = [(w, p) for w, p in ranked if w > 0]
        if len(ranked) < 2:
            continue
        (w1, p1), (w2, p2) = ranked[0], ranked[1]
        if w1 - w2 > margin or grp[p1] == grp[p2]:
            continue
        if _explained(sc, best, p1, c, margin) or _explained(sc, best, p2, c, margin):
            continue
        out.append((c, _ambiguous_finding(legs, c, (p1, w1), (p2, w2), chosen.get(c))))
    return out


def _ambiguous_finding(
    legs: list[Leg], c: int, one: tuple[int, float], two: tuple[int, float], got: int | None
) -> Finding:
    cid = legs[c].f.call_id
    (p1, w1), (p2, w2) = one, two
    outcome = f"linked to {legs[got].f.call_id}" if got is not None else "left as a call of its own"
    text = (
        f"leg {cid} could continue {legs[p1].f.call_id} (score {w1:.1f}) or "
        f"{legs[p2].f.call_id} (score {w2:.1f}); {outcome}"
    )
    refs = legs[c].f.refs + legs[p1].f.refs + legs[p2].f.refs
    return Finding("correlate.ambiguous", Severity.WARNING, text, None, refs)


# -- roles and groups -------------------------------------------------------------------


def _role(links: dict[int, LegLink], parent: list[int | None], i: int) -> str:
    link = links.get(i)
    if link is None:
        return "a-leg"
    if link.rule in TRANSFER_RULES:
        return "transfer"
    depth, x, seen = 0, i, set()
    while (p := parent[x]) is not None and x not in seen:
        seen.add(x)
        depth, x = depth + 1, p
    if link.rule in PROXY_RULES or depth >= 2:
        return f"hop {depth + 1}"
    return "b-leg"


def _ordered_groups(legs: list[Leg], grp: list[int]) -> tuple[list[list[int]], list[int]]:
    members: dict[int, list[int]] = defaultdict(list)
    for i in sorted(range(len(legs)), key=lambda x: (legs[x].f.start, x)):
        members[grp[i]].append(i)
    groups = sorted(members.values(), key=lambda g: (legs[g[0]].f.start, g[0]))
    group_of = [0] * len(legs)
    for gi, g in enumerate(groups):
        for i in g:
            group_of[i] = gi
    return groups, group_of


# -- the entry point --------------------------------------------------------------------


def correlate(
    legs: list[LegFacts],
    events: list[ChannelEvent] | None = None,
    options: CorrelateOptions | None = None,
) -> Correlation:
    """Group legs into call stories; each link keeps its rule, evidence and confidence."""
    opts = options or CorrelateOptions()
    aliases = dict(opts.host_aliases)
    common = common_values(legs)
    view = [Leg.of(i, f, opts.plan, aliases, common) for i, f in enumerate(legs)]
    cands: Cands = {}
    skipped: Counter[str] = Counter()
    _host_candidates(view, opts, cands)
    _key_candidates(view, opts, cands, skipped)
    _refer_candidates(view, cands)
    _event_candidates(view, events or [], cands)
    _late_candidates(view, opts, cands)
    sc = _score_all(view, cands, opts.plan)
    matched, exact, greedy = assign([(p, c, w) for (p, c), w in sc.score.items()])
    chosen = {c: p for p, c, _w in matched}
    _extra_children(view, sc, chosen, {(p, c) for p, c, _w in matched})
    conf, dropped = _drop_weak(view, sc, chosen, opts)
    grp = _groups(len(view), chosen)
    ambiguous = _ambiguity(view, sc, chosen, grp, opts.margin)
    links = {
        c: LegLink(
            p,
            c,
            main_rule(sc.evidence[(p, c)]),
            round(conf[c], 4),
            round(sc.score[(p, c)], 2),
            sc.evidence[(p, c)],
        )
        for c, p in chosen.items()
    }
    parent: list[int | None] = [chosen.get(i) for i in range(len(view))]
    groups, group_of = _ordered_groups(view, grp)
    return Correlation(
        groups=groups,
        links=sorted(links.values(), key=lambda k: (group_of[k.b], legs[k.b].start)),
        findings=[f for _c, f in ambiguous],
        parent=parent,
        roles=[_role(links, parent, i) for i in range(len(view))],
        group_of=group_of,
        skipped=skipped,
        stats={
            "candidates": len(cands),
            "components_exact": exact,
            "components_greedy": greedy,
            "dropped_low_confidence": len(dropped),
        },
        finding_legs=[c for c, _f in ambiguous],
    )


def subset(corr: Correlation, keep: list[int]) -> Correlation:
    """The correlation of the legs ``keep`` (whole groups), numbered 0.. in that order:
    what the streaming analysis (:mod:`sipflow.engine.stream`) writes of the call stories
    it has finished while others are still open."""
    new = {old: i for i, old in enumerate(keep)}
    groups = [[new[i] for i in g] for g in corr.groups if g[0] in new]
    group_of = [0] * len(keep)
    for g, members in enumerate(groups):
        for i in members:
            group_of[i] = g
    parent = [corr.parent[i] if corr.parent else None for i in keep]
    found = [(new[c], f) for c, f in zip(corr.finding_legs, corr.findings, strict=True) if c in new]
    return Correlation(
        groups=groups,
        links=[replace(k, a=new[k.a], b=new[k.b]) for k in corr.links if k.b in new],
        findings=[f for _c, f in found],
        parent=[new[p] if p is not None else None for p in parent],
        roles=[corr.roles[i] for i in keep] if corr.roles else [],
        group_of=group_of,
        skipped=corr.skipped,
        stats=corr.stats,
        finding_legs=[c for c, _f in found],
    )


# -- output -----------------------------------------------------------------------------


def _hop_text(h: HopTimes) -> str | None:
    def one(a: tuple[str, int] | None) -> str:
        if a is None:
            return "?"
        return f"[{a[0]}]:{a[1]}" if ":" in a[0] else f"{a[0]}:{a[1]}"

    if h.src is None and h.dst is None:
        return None
    return f"{one(h.src)} -> {one(h.dst)}"


def _leg_dict(
    corr: Correlation, legs: list[LegFacts], i: int, by_child: dict[int, LegLink]
) -> dict[str, Any]:
    f = legs[i]
    link = by_child.get(i)
    p = corr.parent[i] if corr.parent else None
    host = None
    if link is not None and f.near.src is not None:
        host = f.near.src[0]
    return {
        "call_id": f.call_id,
        "role": corr.roles[i] if corr.roles else "a-leg",
        "hop": _hop_text(f.near),
        "host": host,
        "linked_to": legs[p].call_id if p is not None else None,
        "rule": link.rule if link else None,
        "confidence": link.confidence if link else None,
        "evidence": link.evidence_dicts() if link else [],
    }


def group_to_dict(
    corr: Correlation,
    legs: list[LegFacts],
    group: int,
    by_child: dict[int, LegLink] | None = None,
) -> dict[str, Any]:
    """The JSON additions for one call story (docs/correlation.md): every leg's Call-ID
    in ``call_ids`` and ``legs`` with role, hop, linking host, rule, confidence, evidence.
    ``by_child``: ``corr.links_by_child()``, made once by a caller that asks for every group."""
    if by_child is None:
        by_child = corr.links_by_child()
    members = corr.groups[group]
    call_ids: dict[str, None] = {}
    for i in members:
        call_ids.update(dict.fromkeys(legs[i].call_ids))
    return {
        "call_ids": list(call_ids),
        "legs": [_leg_dict(corr, legs, i, by_child) for i in members],
    }


def legs_rows(corr: Correlation, legs: list[LegFacts]) -> list[dict[str, Any]]:
    """One row per leg for the ``trace.legs`` DataFrame (evidence as one text column)."""
    rows = []
    by_child = corr.links_by_child()
    for g, members in enumerate(corr.groups):
        for i in members:
            d = _leg_dict(corr, legs, i, by_child)
            d["evidence"] = "; ".join(
                f"{e['rule']}: {e['field']} {e['a']} ~ {e['b']} ({e['weight']:+})"
                for e in d["evidence"]
            )
            rows.append({"group": g, "leg": i, **d})
    return rows
