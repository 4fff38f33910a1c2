"""Pair rules: how strongly the facts of two legs say they belong to one call.

How this works: a candidate pair is (parent, child): the parent leg's INVITE reached a
host (B2BUA, SBC, proxy) which then sent the child's INVITE, or the child names the
parent (headers, logs, transfers). Each rule in :data:`RULES` is one small function that
compares one aspect of the two legs and returns an :class:`Evidence` with a weight in
log-odds units (natural log of a likelihood ratio, naive-Bayes style): positive when the
observation is more likely for legs of one call than for two unrelated legs in the same
time window, negative when less likely, ``None`` when it says nothing. :func:`score`
adds the weights to a prior; the timing rules are correlated with each other (an
automated peer answers every call after the same delay), so their sum is capped.
Weights are round numbers chosen from the wire behaviour each rule cites, then checked
against the corpus captures and the loopback runs in tests/correlate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from sipflow.correlate.facts import LegFacts
from sipflow.correlate.normalise import NumberPlan, normalise_user, same_number

MS = 1_000_000
PRIOR = -3.0
"""Log-odds that two legs in a host-and-time window belong to one call, before evidence."""
TIMING_CAP = 7.0
"""The timing rules together never add more than this."""
TIMING_RULES = frozenset({"invite_gap", "ringing_mirror", "final_mirror", "bye_mirror"})
STRONG = 6.0
"""A weight at least this high ties legs without any other evidence (headers, logs)."""
STRONG_DOUBT = -2.0
"""The most header-free evidence can take off a pair tied by an explicit identifier."""


@dataclass(frozen=True, slots=True)
class Evidence:
    """One comparison: the rule, the field compared, the two values and the weight."""

    rule: str
    field: str
    a: str | None
    b: str | None
    weight: float

    def to_dict(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "field": self.field,
            "a": self.a,
            "b": self.b,
            "weight": round(self.weight, 2),
        }


@dataclass(slots=True)
class Leg:
    """A leg as the rules see it: its facts, index and normalised parties (computed once)."""

    i: int
    f: LegFacts
    caller: str | None
    callee: str | None
    """To user (the Request-URI user when To has none)."""
    targets: frozenset[str]
    """Normalised To, Request-URI, History-Info and Diversion users: who was called."""
    src_host: str | None
    """Host that sent the nearest INVITE (an IP, or its alias: one box, several IPs)."""
    dst_host: str | None
    """Host the farthest INVITE went to."""
    origins: frozenset[str] = frozenset()
    """The leg's o= values that few legs share (a constant o= says nothing)."""
    media: frozenset[str] = frozenset()
    """The leg's media addresses that few legs share (phones reuse RTP ports)."""
    sessions: frozenset[str] = frozenset()
    """``o=`` username and sess-id of :attr:`origins` without the address, which an SBC or
    NAT rewrites while the session stays the same (RFC 8866 §5.2)."""

    @classmethod
    def of(
        cls,
        i: int,
        f: LegFacts,
        plan: NumberPlan,
        aliases: dict[str, str],
        common: frozenset[str] = frozenset(),
    ) -> Leg:
        callee = normalise_user(f.to_user or f.ruri_user, plan)
        targets = {
            n
            for u in (f.to_user, f.ruri_user, *f.history, *f.diversion)
            if (n := normalise_user(u, plan))
        }
        src = f.near.src[0] if f.near.src else None
        dst = f.far.dst[0] if f.far.dst else None
        unique = [o for o in f.origins if _unique_origin(o)]
        return cls(
            i,
            f,
            normalise_user(f.from_user, plan),
            callee,
            frozenset(targets),
            aliases.get(src, src) if src else None,
            aliases.get(dst, dst) if dst else None,
            frozenset(o for o in unique if o not in common),
            frozenset(set(f.offer_addrs + f.answer_addrs) - common),
            frozenset(s for o in unique if (s := session_of(o)) not in common),
        )


def session_of(o: str) -> str:
    """``o=`` (as :func:`sipflow.correlate.facts._origin` keeps it: username, sess-id,
    address) without its address: ``"o=- 754582487"``."""
    return "o=" + " ".join(o.split()[:2])


def _unique_origin(o: str) -> bool:
    """An o= whose sess-id can tell sessions apart (RFC 8866 §5.2 suggests an NTP time;
    some UAs send 0 or a fixed value)."""
    parts = o.split()
    return len(parts) >= 2 and len(parts[1]) >= 6 and parts[1].strip("0") != ""


SHARED_LIMIT = 4
"""An o= or media address carried by more legs than this is a constant, not evidence."""


def common_values(facts: list[LegFacts]) -> frozenset[str]:
    """o= values and media addresses seen on more than SHARED_LIMIT legs."""
    seen: dict[str, int] = {}
    for f in facts:
        sessions = tuple(session_of(o) for o in f.origins)
        for v in set(f.origins + f.offer_addrs + f.answer_addrs + sessions):
            seen[v] = seen.get(v, 0) + 1
    return frozenset(v for v, n in seen.items() if n > SHARED_LIMIT)


Rule = Callable[[Leg, Leg, NumberPlan], "Evidence | None"]


def _ms(ns: int) -> str:
    return f"{ns / MS:+.1f} ms"


def _step(value: float, table: tuple[tuple[float, float], ...], default: float) -> float:
    """First weight whose bound ``value`` does not exceed (tables ascend)."""
    for bound, weight in table:
        if value <= bound:
            return weight
    return default


# -- explicit identifiers ---------------------------------------------------------------


def rule_id_header(a: Leg, b: Leg, plan: NumberPlan) -> Evidence | None:
    """X-CID / X-Call-ID style header: one leg names the other's Call-ID, or both carry
    the same value (the SBC copies the A-leg Call-ID into the B-leg)."""
    for x, y in ((b, a), (a, b)):
        for name, value in x.f.id_headers:
            if value in y.f.call_ids:
                return Evidence("id_header", name, y.f.call_id, value, 9.0)
    shared = set(a.f.id_headers) & set(b.f.id_headers)
    if shared:
        name, value = min(shared)
        return Evidence("id_header", name, value, value, 8.0)
    return None


def rule_session_id(a: Leg, b: Leg, plan: NumberPlan) -> Evidence | None:
    """RFC 7989 §6: a B2BUA passes the Session-ID UUIDs from one leg to the other."""
    shared = set(a.f.session_ids) & set(b.f.session_ids)
    if not shared:
        return None
    uuid = min(shared)
    return Evidence("session_id", "Session-ID", uuid, uuid, 8.0)


def rule_icid(a: Leg, b: Leg, plan: NumberPlan) -> Evidence | None:
    """RFC 7315 §4.6: the icid-value of P-Charging-Vector is kept along the session."""
    shared = set(a.f.icids) & set(b.f.icids)
    if not shared:
        return None
    icid = min(shared)
    return Evidence("icid", "P-Charging-Vector icid-value", icid, icid, 8.0)


def call_id_core(call_id: str) -> str:
    """The local part of a Call-ID (before ``@``): what SBCs prefix or suffix."""
    return call_id.split("@", 1)[0]


def rule_same_call_id(a: Leg, b: Leg, plan: NumberPlan) -> Evidence | None:
    """RFC 3261 §16.6: a proxy (or an SBC that keeps it) forwards the Call-ID unchanged;
    the same Call-ID seen as two legs is one call on two sides of that box."""
    shared = set(a.f.call_ids) & set(b.f.call_ids)
    if not shared:
        return None
    cid = min(shared)
    return Evidence("same_call_id", "Call-ID", cid, cid, 6.0)


def rule_call_id_relation(a: Leg, b: Leg, plan: NumberPlan) -> Evidence | None:
    """One Call-ID contains the other's local part (an SBC adding a prefix or suffix)."""
    ca, cb = call_id_core(a.f.call_id), call_id_core(b.f.call_id)
    if ca == cb or min(len(ca), len(cb)) < 8:
        return None
    if ca in cb or cb in ca:
        return Evidence("call_id_relation", "Call-ID", a.f.call_id, b.f.call_id, 6.0)
    return None


def rule_replaces(a: Leg, b: Leg, plan: NumberPlan) -> Evidence | None:
    """RFC 3891 §3: the new INVITE's Replaces names the dialog it takes over."""
    for cid in b.f.replaces:
        if cid in a.f.call_ids:
            return Evidence("replaces", "Replaces", a.f.call_id, cid, 9.0)
    return None


REFER_WINDOW = 32_000 * MS
"""A referred INVITE comes within this of its REFER (Timer B-ish bound)."""
REFER_PROMPT = 250 * MS
"""REFER -> INVITE gap at which the gap says nothing (``refer_gap`` weight 0)."""


def _referred(a: Leg, b: Leg, plan: NumberPlan) -> tuple[str | None, int] | None:
    """(Refer-To user, gap) of the REFER of ``a`` whose target ``b`` calls: the latest
    one before ``b``'s INVITE within :data:`REFER_WINDOW`."""
    best: tuple[str | None, int] | None = None
    for user, _replaces, ts in a.f.refers:
        gap = b.f.near.invite - ts
        if not 0 <= gap <= REFER_WINDOW or (best is not None and gap >= best[1]):
            continue
        target = normalise_user(user, plan)
        if target and target in b.targets:
            best = (user, gap)
    return best


def rule_refer(a: Leg, b: Leg, plan: NumberPlan) -> Evidence | None:
    """RFC 3515 §2.4.2: a REFER in ``a`` asks for a new INVITE to its Refer-To target,
    sent soon after it (RFC 3892 Referred-By on that INVITE names the referrer)."""
    for x, y in ((a, b), (b, a)):
        for _user, replaces, _ts in x.f.refers:
            if replaces and replaces in y.f.call_ids:
                return Evidence("refer", "Refer-To Replaces", y.f.call_id, replaces, 8.0)
    found = _referred(a, b, plan)
    if found is not None:
        weight = 5.0 + (1.0 if b.f.referred_by else 0.0)
        return Evidence("refer", "Refer-To", found[0], b.f.to_user, weight)
    for _user, replaces, ts in a.f.refers:
        if 0 <= b.f.near.invite - ts <= REFER_WINDOW and replaces and replaces in b.f.replaces:
            return Evidence("refer", "Refer-To Replaces", replaces, replaces, 8.0)
    return None


def rule_refer_gap(a: Leg, b: Leg, plan: NumberPlan) -> Evidence | None:
    """RFC 3515 §2.4.2 / RFC 5589 §6.1: the referee accepts the REFER (202) and sends the
    INVITE at once, while an unrelated INVITE to the same user is as likely at any time of
    the window: the log-odds fall with the log of the REFER -> INVITE gap,
    ln(:data:`REFER_PROMPT` / gap), within [-3, +3] (+3 up to 12 ms, 0 at 250 ms, -1.4 at
    1 s). Two transfers to one user at once: the nearest REFER wins."""
    found = _referred(a, b, plan)
    if found is None:
        return None
    gap = found[1]
    weight = max(-3.0, min(3.0, math.log(REFER_PROMPT / max(gap, MS // 10))))
    return Evidence("refer_gap", f"REFER -> INVITE {_ms(gap)}", "REFER", "INVITE", weight)


def rule_via_chain(a: Leg, b: Leg, plan: NumberPlan) -> Evidence | None:
    """RFC 3261 §16.6 step 8: a proxy pushes its Via above the ones it received, so the
    forwarded INVITE still carries the parent's branch below the top."""
    if a.f.far_branch and a.f.far_branch in b.f.vias[1:]:
        return Evidence("via_chain", "Via branch", a.f.far_branch, a.f.far_branch, 7.0)
    return None


def rule_same_dialog(a: Leg, b: Leg, plan: NumberPlan) -> Evidence | None:
    """RFC 3261 §16.6: a proxy leaves From (with its tag) and CSeq alone; a B2BUA makes
    its own. The same tag and CSeq under another Call-ID: a proxy hiding Call-IDs."""
    tag = a.f.from_tag
    if not tag or len(tag) < 4 or tag != b.f.from_tag:
        return None
    weight = 5.0 if a.f.cseq is not None and a.f.cseq == b.f.cseq else 3.0
    return Evidence(
        "same_dialog", "From tag, CSeq", f"{tag} {a.f.cseq}", f"{tag} {b.f.cseq}", weight
    )


# -- topology ---------------------------------------------------------------------------


def _addr_text(addr: tuple[str, int] | None) -> str | None:
    if addr is None:
        return None
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def rule_hop(a: Leg, b: Leg, plan: NumberPlan) -> Evidence | None:
    """The host the parent's INVITE went to sent the child's INVITE: from the same
    address and port (one SIP socket) counts more than the same address only."""
    dst, src = a.f.far.dst, b.f.near.src
    if dst is None or src is None or a.dst_host != b.src_host:
        return None
    # the same address, another port: one box with two SIP sockets (FreeSWITCH profiles)
    weight = 1.5 if dst == src else (-1.0 if _loopback(dst[0]) else 0.0)
    return Evidence("hop", "INVITE dst -> src", _addr_text(dst), _addr_text(src), weight)


def _loopback(ip: str) -> bool:
    """On loopback every program shares the address: only the port tells sockets apart."""
    return ip.startswith("127.") or ip == "::1"


def rule_back_to_caller(a: Leg, b: Leg, plan: NumberPlan) -> Evidence | None:
    """The child goes back to the endpoint that sent the parent. An SBC in front of a PBX
    does that (hairpin: doubt); a child from another port of the parent's destination
    address that goes back to the parent's sender is rather a second program on that
    host calling the same box (loopback test rigs): strong doubt."""
    if a.f.near.src is None or a.f.near.src != b.f.far.dst:
        return None
    text = _addr_text(a.f.near.src)
    weight = -1.0 if a.f.far.dst == b.f.near.src else -3.0
    return Evidence("back_to_caller", "caller = callee endpoint", text, text, weight)


def rule_swapped(a: Leg, b: Leg, plan: NumberPlan) -> Evidence | None:
    """Caller and callee swapped: a call the other way (a callback), not a continuation."""
    if not (a.caller and a.callee and b.caller and b.callee) or a.caller == a.callee:
        return None
    if same_number(a.caller, b.callee, plan) and same_number(a.callee, b.caller, plan):
        return Evidence("swapped", "From/To users", a.f.from_user, b.f.to_user, -4.0)
    return None


# -- timing -----------------------------------------------------------------------------

GAP = ((50 * MS, 2.0), (1000 * MS, 1.0), (10_000 * MS, 0.0))
MIRROR = ((5 * MS, 3.0), (50 * MS, 2.0), (500 * MS, 1.0), (2000 * MS, 0.0))
CAUSAL_SLACK = MS // 4
"""A relayed response leaves the box after it arrived: on one capture the parent's copy is
later. A quarter millisecond allows for timestamp noise; merged probes may need more."""
BYE = ((20 * MS, 2.5), (500 * MS, 1.5), (2000 * MS, 0.0))


def rule_invite_gap(a: Leg, b: Leg, plan: NumberPlan) -> Evidence | None:
    """A B2BUA sends the child INVITE soon after the parent's arrived."""
    gap = b.f.near.invite - a.f.far.invite
    if a.f.answer is not None and a.f.answer < b.f.near.invite:
        # IVR first, then dial: how soon after the parent's INVITE says little
        return Evidence("invite_gap", f"INVITE b-a {_ms(gap)}, a answered", "200", "INVITE", -1.0)
    if gap < -5 * MS:
        return Evidence("invite_gap", f"INVITE b-a {_ms(gap)}", "INVITE", "INVITE", -2.0)
    weight = _step(gap, GAP, -1.0)
    return Evidence("invite_gap", f"INVITE b-a {_ms(gap)}", "INVITE", "INVITE", weight)


def rule_ringing_mirror(a: Leg, b: Leg, plan: NumberPlan) -> Evidence | None:
    """The child's 18x is relayed to the parent at once (or the B2BUA rings on dialling)."""
    ra, rb = a.f.far.ringing, b.f.near.ringing
    if ra is None or rb is None or ra < b.f.near.invite - 5 * MS:
        return None
    weight = _step(abs(ra - rb), MIRROR, 0.0)
    if ra < rb - CAUSAL_SLACK:  # rang before the child did: the box's own ringback (weak)
        weight = min(weight, 1.0)
    return Evidence("ringing_mirror", f"first 18x a-b {_ms(ra - rb)}", "18x", "18x", weight)


def _final_weight(a: LegFacts, b: LegFacts) -> float:
    fa, fb, ca, cb = a.far.final, b.near.final, a.far.code, b.near.code
    if fa is None or fb is None or ca is None or cb is None:
        return 0.0
    if fa < b.near.invite:  # the parent was answered/failed before the child began (IVR)
        return 0.0
    a_ok, b_ok = ca < 300, cb < 300
    if a_ok and b_ok:
        if fa < fb - CAUSAL_SLACK:  # RFC 3261 §16.7 / a bridge: the child's 2xx comes first
            return -2.0
        return _step(abs(fa - fb), MIRROR, -2.0) + 1.0
    if not a_ok and not b_ok:
        return _step(abs(fa - fb), MIRROR, -1.0)
    return -3.0 if b_ok else 0.0  # child answered while the parent failed: contradiction


def rule_final_mirror(a: Leg, b: Leg, plan: NumberPlan) -> Evidence | None:
    """The child's final response is relayed to the parent (2xx: the bridge answers)."""
    fa, fb = a.f.far.final, b.f.near.final
    if fa is None or fb is None:
        return None
    text = f"{a.f.far.code} {_ms(fa - fb)}"
    return Evidence(
        "final_mirror", "final a - b", str(b.f.near.code), text, _final_weight(a.f, b.f)
    )


def rule_bye_mirror(a: Leg, b: Leg, plan: NumberPlan) -> Evidence | None:
    """A BYE on one leg is relayed to the other."""
    ea, eb = a.f.end, b.f.end
    if ea is None or eb is None:
        return None
    weight = _step(abs(ea - eb), BYE, -2.0)
    return Evidence("bye_mirror", f"BYE a-b {_ms(ea - eb)}", "BYE", "BYE", weight)


# -- parties and media ------------------------------------------------------------------


def rule_caller(a: Leg, b: Leg, plan: NumberPlan) -> Evidence | None:
    """The calling party is usually passed on (after number normalisation)."""
    same = same_number(a.caller, b.caller, plan)
    if same is None:
        return None
    both_numbers = bool(a.caller and b.caller and a.caller.isdigit() and b.caller.isdigit())
    weight = 1.5 if same else (-1.0 if both_numbers else 0.0)
    return Evidence("caller", "From user", a.f.from_user, b.f.from_user, weight)


def rule_callee(a: Leg, b: Leg, plan: NumberPlan) -> Evidence | None:
    """The called party: the child's target is the parent's (or the parent's target is in
    the child's History-Info / Diversion: the call was forwarded, RFC 7044 / RFC 5806)."""
    if not a.callee or not b.targets:
        return None
    if any(same_number(a.callee, t, plan) for t in b.targets):
        hist = a.callee not in {normalise_user(b.f.to_user or b.f.ruri_user, plan)}
        name = "History-Info/Diversion" if hist else "To user"
        return Evidence("callee", name, a.f.to_user, b.f.to_user, 2.0 if hist else 1.5)
    numbers = a.callee.isdigit() and bool(b.callee) and (b.callee or "").isdigit()
    if numbers:
        return Evidence("callee", "To user", a.f.to_user, b.f.to_user, -0.5)
    return None


def rule_sdp_origin(a: Leg, b: Leg, plan: NumberPlan) -> Evidence | None:
    """The same o= (RFC 8866 §5.2 username, sess-id, address): the SDP passed through;
    the same username and sess-id at another address: an SBC rewrote only the address."""
    shared = a.origins & b.origins
    if shared:
        o = min(shared)
        return Evidence("sdp_origin", "o=", o, o, 3.0)
    session = min(a.sessions & b.sessions, default=None)
    if session is None:
        return None
    oa = min((o for o in a.origins if session_of(o) == session), default=session)
    ob = min((o for o in b.origins if session_of(o) == session), default=session)
    return Evidence("sdp_origin", "o= (address rewritten)", oa, ob, 2.5)


def rule_media_addr(a: Leg, b: Leg, plan: NumberPlan) -> Evidence | None:
    """The same media address:port on both legs: direct media, or a proxy."""
    shared = a.media & b.media
    if not shared:
        return None
    addr = min(shared)
    return Evidence("media_addr", "c=/m= address", addr, addr, 2.0)


def rule_codecs(a: Leg, b: Leg, plan: NumberPlan) -> Evidence | None:
    """Offered codecs overlap (a transcoding B2BUA may still change them: weak)."""
    if not a.f.codecs or not b.f.codecs:
        return None
    common = set(a.f.codecs) & set(b.f.codecs)
    weight = 0.3 if common else -0.5
    return Evidence("codecs", "offered codecs", ",".join(a.f.codecs), ",".join(b.f.codecs), weight)


def rule_crypto(a: Leg, b: Leg, plan: NumberPlan) -> Evidence | None:
    """The same SRTP suite on both legs (RFC 4568); a B2BUA picks new keys, not suites."""
    if not a.f.crypto or not b.f.crypto:
        return None
    sa = {c.split("#")[0] for c in a.f.crypto}
    sb = {c.split("#")[0] for c in b.f.crypto}
    weight = 0.5 if sa & sb else -0.3
    return Evidence("crypto", "SRTP suite", ",".join(a.f.crypto), ",".join(b.f.crypto), weight)


RULES: dict[str, Rule] = {
    "id_header": rule_id_header,
    "session_id": rule_session_id,
    "icid": rule_icid,
    "same_call_id": rule_same_call_id,
    "call_id_relation": rule_call_id_relation,
    "replaces": rule_replaces,
    "refer": rule_refer,
    "refer_gap": rule_refer_gap,
    "via_chain": rule_via_chain,
    "same_dialog": rule_same_dialog,
    "hop": rule_hop,
    "back_to_caller": rule_back_to_caller,
    "swapped": rule_swapped,
    "invite_gap": rule_invite_gap,
    "ringing_mirror": rule_ringing_mirror,
    "final_mirror": rule_final_mirror,
    "bye_mirror": rule_bye_mirror,
    "caller": rule_caller,
    "callee": rule_callee,
    "sdp_origin": rule_sdp_origin,
    "media_addr": rule_media_addr,
    "codecs": rule_codecs,
    "crypto": rule_crypto,
}

PROXY_RULES = frozenset({"via_chain", "same_dialog", "same_call_id"})
"""Rules that say the child is the same dialog one proxy hop further (role ``hop n``)."""
TRANSFER_RULES = frozenset({"replaces", "refer", "refer_gap"})


def score(
    a: Leg, b: Leg, plan: NumberPlan, extra: tuple[Evidence, ...] = ()
) -> tuple[float, tuple[Evidence, ...]]:
    """Log-odds that ``b`` continues ``a``'s call, and the evidence behind it.

    The prior is for a pair found in a host-and-time window. A pair tied by an explicit
    identifier (a weight of :data:`STRONG` or more) was not drawn from a window, so it gets
    no prior, and header-free evidence can hold it back by at most :data:`STRONG_DOUBT`.
    """
    found = list(extra)
    for rule in RULES.values():
        ev = rule(a, b, plan)
        if ev is not None:
            found.append(ev)
    timing = min(sum(e.weight for e in found if e.rule in TIMING_RULES), TIMING_CAP)
    rest = sum(e.weight for e in found if e.rule not in TIMING_RULES)
    if any(e.weight >= STRONG for e in found):
        plus = sum(e.weight for e in found if e.weight > 0 and e.rule not in TIMING_RULES)
        minus = sum(e.weight for e in found if e.weight < 0 and e.rule not in TIMING_RULES)
        return plus + max(minus + min(timing, 0.0), STRONG_DOUBT) + max(timing, 0.0), tuple(found)
    return PRIOR + timing + rest, tuple(found)


def main_rule(evidence: tuple[Evidence, ...]) -> str:
    """The rule that carried the link: the heaviest positive piece of evidence."""
    best = max(evidence, key=lambda e: e.weight, default=None)
    return best.rule if best is not None and best.weight > 0 else "none"
