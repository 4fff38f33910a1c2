"""SDP offer/answer and SRTP negotiation: what each leg agreed, and the rules it broke.

How this works: :func:`media_for_call` pairs a call's offers and answers
(:func:`sipflow.sdp.offer_answer.track`), turns each exchange into a
:class:`MediaExchange` (per m-line: codecs, ptime, DTMF, direction, addresses, rtcp-mux,
ICE, SRTP method and the chosen suite, never a key) and runs two registries of rules:
:data:`DOCUMENT_RULES` on every distinct SDP body (malformed lines, key lengths) and
:data:`EXCHANGE_RULES` on every offer/answer pair (RFC 3264 §6 and friends). One rule is
one function with one stable code (documented in docs/findings.md); each Finding cites
the RFC section and the frames of the offer and/or answer. ``summary`` is one line for
the final exchange at the hop nearest the caller, e.g.
``PCMA/8000 20ms, DTMF 101, SRTP AES_CM_256_HMAC_SHA1_80 tag 3``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sipflow.errors import ParseError
from sipflow.findings import Finding, Ref, Severity
from sipflow.frozen import builder
from sipflow.sdp.media import (
    SDP_COLUMNS,
    CallMedia,
    Codec,
    MediaExchange,
    MediaLine,
    dtmf_of,
    first_ref,
    media_exchange,
    refs_of,
    sdp_rows,
)
from sipflow.sdp.model import Direction, MediaSection, ProblemKind, Sdp, parse_sdp
from sipflow.sdp.offer_answer import Exchange, Status, message_sdp, track
from sipflow.sdp.srtp import (
    SETUP_ANSWERS,
    CryptoAttr,
    SetupRole,
    is_dtls_proto,
    is_secure_proto,
)
from sipflow.sip.message import SipMessage

if TYPE_CHECKING:
    from sipflow.correlate.calls import CallRecord

__all__ = [
    "CODES",
    "DOCUMENT_RULES",
    "EXCHANGE_RULES",
    "SDP_COLUMNS",
    "CallMedia",
    "Codec",
    "MediaExchange",
    "MediaLine",
    "media_for_call",
    "sdp_rows",
]

W, E, NOTE = Severity.WARNING, Severity.ERROR, Severity.INFO
DEFAULT_EVENTS = "0-15"  # RFC 4733 §7.1.1: no fmtp means events 0-15
REJECT_MEDIA = (488, 606)  # RFC 3261 §21.4.26, §21.6.4: the session description is refused


# -- rules on one SDP body ------------------------------------------------------------------

DocRule = Callable[[Sdp, tuple[Ref, ...], str], list[Finding]]


def rule_malformed_line(sdp: Sdp, refs: tuple[Ref, ...], where: str) -> list[Finding]:
    """sdp.malformed_line: a line that does not follow RFC 8866 §5 / its attribute grammar."""
    out = []
    for p in sdp.problems:
        at = f"line {p.line + 1} {p.text[:60]!r}: " if p.line >= 0 else ""
        sev = NOTE if p.kind is ProblemKind.BLANK else W
        text = f"SDP in {where}: {at}{p.detail}"
        out.append(Finding("sdp.malformed_line", sev, text, "RFC 8866 §5", refs))
    return out


def rule_missing_rtpmap(sdp: Sdp, refs: tuple[Ref, ...], where: str) -> list[Finding]:
    """sdp.missing_rtpmap: a dynamic payload type (96-127) listed without a=rtpmap."""
    out = []
    for i, sec in enumerate(sdp.media):
        if sec.m is None or sec.m.port == 0:
            continue
        maps = sec.rtpmaps
        lost = [pt for pt in sec.m.payload_types if pt >= 96 and pt not in maps]
        if lost:
            text = (
                f"SDP in {where}: m-line {i + 1} lists dynamic payload type(s) "
                f"{', '.join(map(str, lost))} without an a=rtpmap"
            )
            out.append(Finding("sdp.missing_rtpmap", W, text, "RFC 8866 §6.6", refs))
    return out


def rule_sdes_key_length(sdp: Sdp, refs: tuple[Ref, ...], where: str) -> list[Finding]:
    """sdp.sdes_key_length: inline key||salt not the length its suite needs."""
    out = []
    for i, sec in enumerate(sdp.media):
        for c in sec.crypto:
            spec = c.spec
            if spec is None:
                continue
            for k in c.keys:
                if k.method.lower() != "inline" or k.key_salt_len == spec.key_salt:
                    continue
                got = "not valid base64" if k.key_salt_len is None else f"{k.key_salt_len} bytes"
                text = (
                    f"SDP in {where}: m-line {i + 1} crypto tag {c.tag} {c.suite}: key||salt is "
                    f"{got}, the suite needs {spec.key_salt} ({spec.key}+{spec.salt})"
                )
                out.append(Finding("sdp.sdes_key_length", E, text, spec.rfc, refs))
    return out


def rule_sdes_unknown_suite(sdp: Sdp, refs: tuple[Ref, ...], where: str) -> list[Finding]:
    """sdp.sdes_unknown_suite: a crypto suite sipflow cannot size (reported, not judged)."""
    out = []
    for i, sec in enumerate(sdp.media):
        for c in sec.crypto:
            if c.spec is None:
                text = f"SDP in {where}: m-line {i + 1} crypto tag {c.tag}: unknown suite {c.suite}"
                out.append(Finding("sdp.sdes_unknown_suite", NOTE, text, "RFC 4568 §6.2", refs))
    return out


DOCUMENT_RULES: dict[str, DocRule] = {
    "sdp.malformed_line": rule_malformed_line,
    "sdp.missing_rtpmap": rule_missing_rtpmap,
    "sdp.sdes_key_length": rule_sdes_key_length,
    "sdp.sdes_unknown_suite": rule_sdes_unknown_suite,
}


# -- rules on one offer/answer exchange -----------------------------------------------------

ExRule = Callable[[Exchange], list[Finding]]


def _both(ex: Exchange) -> tuple[Ref, ...]:
    return refs_of(ex.offer_msgs) + refs_of(ex.answer_msgs)


def _where(ex: Exchange) -> str:
    return f"{ex.offer_in} -> {ex.answer_in or '-'} on {ex.leg}"


_Pair = tuple[int, MediaSection, MediaSection]


@dataclass(frozen=True, slots=True)
class _Shape:
    """What the exchange rules ask of one exchange, worked out once for all of them."""

    pairs: list[_Pair]
    """(index, offered section, answered section) for each m-line both sides have."""
    accepted: list[_Pair]
    """The pairs whose answer accepted the stream (port not 0, RFC 3264 §6)."""
    crypto: bool
    """An a=crypto line on either side: without one the SDES rules have nothing to judge."""
    dtls: bool
    """A DTLS profile or an a=fingerprint on either side: else the DTLS rules stay quiet."""


# (exchange, its shape): the rules of one exchange run back to back and nearly all ask for
# it, so it is built once per exchange (the exchange is held, so the identity test cannot
# match a new object at a reused address)
_last: tuple[Exchange | None, _Shape | None] = (None, None)


def _shape(ex: Exchange) -> _Shape:
    global _last
    memo = _last  # one read: another thread may replace it meanwhile
    if memo[0] is not ex or memo[1] is None:
        pairs: list[_Pair] = []
        if ex.answer is not None:
            both = zip(ex.offer.media, ex.answer.media, strict=False)
            pairs = [(i, o, a) for i, (o, a) in enumerate(both)]
        accepted = [(i, o, a) for i, o, a in pairs if o.m and a.m and a.m.port != 0]
        crypto, dtls = _security(ex.offer)
        if ex.answer is not None and not (crypto and dtls):
            a_crypto, a_dtls = _security(ex.answer)
            crypto, dtls = crypto or a_crypto, dtls or a_dtls
        memo = _last = (ex, _new_shape(pairs, accepted, crypto, dtls))
    assert memo[1] is not None
    return memo[1]


_new_shape = builder(_Shape)  # one per exchange: without the frozen __init__


def _security(sdp: Sdp) -> tuple[bool, bool]:
    """(an a=crypto anywhere, a DTLS profile or an a=fingerprint anywhere) in one SDP."""
    crypto = "crypto" in sdp.session.by_key
    dtls = "fingerprint" in sdp.session.by_key
    for sec in sdp.media:
        crypto = crypto or "crypto" in sec.by_key
        dtls = dtls or "fingerprint" in sec.by_key or bool(sec.m and is_dtls_proto(sec.m.proto))
    return crypto, dtls


def _pairs(ex: Exchange) -> list[_Pair]:
    """(index, offered section, answered section) for each m-line both sides have."""
    return _shape(ex).pairs


def _accepted(ex: Exchange) -> list[_Pair]:
    """The pairs whose answer accepted the stream (port not 0, RFC 3264 §6)."""
    return _shape(ex).accepted


def rule_mline_count(ex: Exchange) -> list[Finding]:
    """sdp.mline_count_mismatch: the answer has not exactly one m-line per offered one."""
    if ex.answer is None or len(ex.answer.media) == len(ex.offer.media):
        return []
    text = (
        f"answer has {len(ex.answer.media)} m-line(s), the offer {len(ex.offer.media)} "
        f"({_where(ex)})"
    )
    return [Finding("sdp.mline_count_mismatch", E, text, "RFC 3264 §6", _both(ex))]


def rule_profile_mismatch(ex: Exchange) -> list[Finding]:
    """sdp.profile_mismatch: the answer's transport profile differs on an m-line."""
    out = []
    for i, o, a in _pairs(ex):
        if o.m is None or a.m is None or o.m.proto.upper() == a.m.proto.upper():
            continue
        rejected = " (stream rejected, port 0)" if a.m.port == 0 else ""
        text = f"m-line {i + 1}: offered {o.m.proto}, answered {a.m.proto}{rejected} ({_where(ex)})"
        sev = W if a.m.port == 0 else E
        out.append(Finding("sdp.profile_mismatch", sev, text, "RFC 3264 §6", _both(ex)))
    return out


def rule_codec_not_offered(ex: Exchange) -> list[Finding]:
    """sdp.answer_codec_not_offered: the answer lists formats the offer did not."""
    out = []
    for i, o, a in _accepted(ex):
        if a.formats is o.formats:  # one shared tuple (same m= formats and rtpmaps): all offered
            continue
        offered = {c.identity for c in o.formats}
        extra = [c for c in a.formats if c.identity not in offered]
        if not extra:
            continue
        none_common = len(extra) == len(a.m.fmts) if a.m else False
        names = ", ".join(c.label for c in extra)
        if none_common:
            text = f"m-line {i + 1}: no answered format was offered: {names} ({_where(ex)})"
        else:
            text = f"m-line {i + 1}: answer adds format(s) not offered: {names} ({_where(ex)})"
        sev = E if none_common else NOTE
        out.append(Finding("sdp.answer_codec_not_offered", sev, text, "RFC 3264 §6.1", _both(ex)))
    return out


def rule_pt_remapped(ex: Exchange) -> list[Finding]:
    """sdp.payload_type_remapped: one codec, a different dynamic payload type in the answer."""
    out = []
    for i, o, a in _accepted(ex):
        by_id = {c.identity: c.pt for c in o.formats if c.clock is not None}
        for c in a.formats:
            pt = by_id.get(c.identity)
            if c.clock is None or pt is None or pt == c.pt:
                continue
            text = (
                f"m-line {i + 1}: {c.label} offered as payload type {pt}, answered as {c.pt} "
                f"({_where(ex)})"
            )
            out.append(Finding("sdp.payload_type_remapped", W, text, "RFC 3264 §6.1", _both(ex)))
    return out


def rule_te_one_side(ex: Exchange) -> list[Finding]:
    """sdp.telephone_event_one_side: RFC 4733 events offered or answered, not both."""
    out = []
    for i, o, a in _accepted(ex):
        if o.m is None or o.m.media.lower() != "audio":
            continue
        po, _ = dtmf_of(o)
        pa, _ = dtmf_of(a)
        if (po is None) == (pa is None):
            continue
        side = "offer" if pa is None else "answer"
        text = (
            f"m-line {i + 1}: telephone-event only in the {side}; DTMF will not be sent as "
            f"RFC 4733 events ({_where(ex)})"
        )
        out.append(Finding("sdp.telephone_event_one_side", W, text, "RFC 4733 §7.1.1", _both(ex)))
    return out


def _events(fmtp: str | None) -> frozenset[int] | None:
    """Event codes of a telephone-event fmtp (``0-15,66``); None when unreadable."""
    out: set[int] = set()
    for part in (fmtp or DEFAULT_EVENTS).replace(" ", "").split(","):
        lo, dash, hi = part.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            return None
        out.update(range(int(lo), int(hi if dash else lo) + 1))
    return frozenset(out)


def _fmtp_text(fmtp: str | None) -> str:
    return fmtp or f"{DEFAULT_EVENTS} (no fmtp)"


DTMF_EVENTS = frozenset(range(16))
"""RFC 4733 §3.2: events 0-15 are the DTMF digits 0-9, *, #, A-D."""


def rule_te_mismatch(ex: Exchange) -> list[Finding]:
    """sdp.telephone_event_mismatch: offer and answer list different event ranges; a
    warning when a DTMF digit (0-15) is missing on one side, else (flash 16, tones 66...)
    a note."""
    out = []
    for i, o, a in _accepted(ex):
        po, fo = dtmf_of(o)
        pa, fa = dtmf_of(a) if po is not None else (None, None)
        if po is None or pa is None:
            continue
        eo, ea = _events(fo), _events(fa)
        if eo == ea:
            continue
        digits = eo is not None and ea is not None and eo & ea >= DTMF_EVENTS
        text = (
            f"m-line {i + 1}: telephone-event fmtp differs: offer {_fmtp_text(fo)}, "
            f"answer {_fmtp_text(fa)}"
            f"{'; both carry the DTMF digits 0-15' if digits else ''} ({_where(ex)})"
        )
        sev = NOTE if digits else W
        out.append(Finding("sdp.telephone_event_mismatch", sev, text, "RFC 4733 §7.1.1", _both(ex)))
    return out


# RFC 3264 §6.1: the directions an answer may take for each offered direction
DIRECTION_ANSWERS: dict[Direction, frozenset[Direction]] = {
    Direction.SENDRECV: frozenset(Direction),
    Direction.SENDONLY: frozenset({Direction.RECVONLY, Direction.INACTIVE}),
    Direction.RECVONLY: frozenset({Direction.SENDONLY, Direction.INACTIVE}),
    Direction.INACTIVE: frozenset({Direction.INACTIVE}),
}


def rule_direction(ex: Exchange) -> list[Finding]:
    """sdp.direction_conflict: e.g. sendonly answered by sendonly (RFC 3264 §6.1)."""
    out: list[Finding] = []
    answer = ex.answer
    for i, _, _ in _accepted(ex) if answer is not None else []:
        assert answer is not None
        do, da = ex.offer.direction_of(i), answer.direction_of(i)
        if da in DIRECTION_ANSWERS[do]:
            continue
        allowed = "/".join(sorted(d.value for d in DIRECTION_ANSWERS[do]))
        text = (
            f"m-line {i + 1}: {do.value} answered by {da.value} (allowed: {allowed}) ({_where(ex)})"
        )
        out.append(Finding("sdp.direction_conflict", W, text, "RFC 3264 §6.1", _both(ex)))
    return out


def _sdes_pairs(ex: Exchange) -> list[tuple[int, dict[int, CryptoAttr], CryptoAttr]]:
    out: list[tuple[int, dict[int, CryptoAttr], CryptoAttr]] = []
    if not _shape(ex).crypto:
        return out
    for i, o, a in _accepted(ex):
        if a.crypto:
            out.append((i, {c.tag: c for c in o.crypto}, a.crypto[0]))
    return out


def rule_sdes_tag(ex: Exchange) -> list[Finding]:
    """sdp.sdes_tag_not_offered: the answer's crypto tag is not one the offer listed."""
    out = []
    for i, offered, ans in _sdes_pairs(ex):
        if ans.tag in offered:
            continue
        tags = ", ".join(map(str, sorted(offered))) or "none"
        text = (
            f"m-line {i + 1}: answer crypto tag {ans.tag} ({ans.suite}) was not offered "
            f"(offered tags: {tags}) ({_where(ex)})"
        )
        out.append(Finding("sdp.sdes_tag_not_offered", E, text, "RFC 4568 §5.1.2", _both(ex)))
    return out


def rule_sdes_suite(ex: Exchange) -> list[Finding]:
    """sdp.sdes_suite_changed: the answer keeps the tag but changes its crypto suite."""
    out = []
    for i, offered, ans in _sdes_pairs(ex):
        was = offered.get(ans.tag)
        if was is None or was.suite == ans.suite:
            continue
        text = (
            f"m-line {i + 1}: crypto tag {ans.tag} offered as {was.suite}, answered as "
            f"{ans.suite} ({_where(ex)})"
        )
        out.append(Finding("sdp.sdes_suite_changed", E, text, "RFC 4568 §5.1.2", _both(ex)))
    return out


def rule_sdes_best_effort(ex: Exchange) -> list[Finding]:
    """sdp.sdes_best_effort: crypto offered on RTP/AVP (best-effort / opportunistic SRTP)."""
    out: list[Finding] = []
    if not _shape(ex).crypto:
        return out
    for i, sec in enumerate(ex.offer.media):
        if sec.m is None or not sec.crypto or is_secure_proto(sec.m.proto):
            continue
        text = (
            f"m-line {i + 1}: crypto offered on {sec.m.proto} (best-effort SRTP): the media "
            f"may flow unencrypted ({_where(ex)})"
        )
        refs = refs_of(ex.offer_msgs)
        out.append(Finding("sdp.sdes_best_effort", NOTE, text, "RFC 8643 §3", refs))
    return out


def rule_dtls_setup(ex: Exchange) -> list[Finding]:
    """sdp.dtls_setup_conflict: a=setup roles that leave no DTLS client/server."""
    out: list[Finding] = []
    if ex.answer is None or not _shape(ex).dtls:
        return out
    for i, o, _ in _accepted(ex):
        if not (is_dtls_proto(o.m.proto if o.m else "") or ex.offer.fingerprints_of(i)):
            continue
        so, sa = ex.offer.setup_of(i), ex.answer.setup_of(i)
        offered = so or SetupRole.ACTPASS  # RFC 8842 §5.2: the offerer uses actpass
        if sa is None or sa in SETUP_ANSWERS[offered]:
            continue
        text = (
            f"m-line {i + 1}: setup {offered.value} answered by {sa.value}: "
            f"no single DTLS client and server ({_where(ex)})"
        )
        out.append(Finding("sdp.dtls_setup_conflict", E, text, "RFC 5763 §5", _both(ex)))
    return out


def rule_dtls_fingerprint(ex: Exchange) -> list[Finding]:
    """sdp.dtls_fingerprint: DTLS without a usable fingerprint, or both ends the same one."""
    out: list[Finding] = []
    if not _shape(ex).dtls:
        return out
    sides = [("offer", ex.offer, ex.offer_msgs)]
    if ex.answer is not None:
        sides.append(("answer", ex.answer, ex.answer_msgs))
    for name, sdp, msgs in sides:
        for i, sec in enumerate(sdp.media):
            if sec.m is None or sec.m.port == 0 or not is_dtls_proto(sec.m.proto):
                continue
            out.extend(_fingerprint_problems(name, sdp, i, refs_of(msgs), ex))
    if ex.answer is not None:
        for i, _, _ in _accepted(ex):
            fo = set(ex.offer.fingerprints_of(i))
            if fo and fo & set(ex.answer.fingerprints_of(i)):
                text = f"m-line {i + 1}: the answer repeats the offer's fingerprint ({_where(ex)})"
                out.append(Finding("sdp.dtls_fingerprint", W, text, "RFC 8122 §5", _both(ex)))
    return out


def _fingerprint_problems(
    name: str, sdp: Sdp, i: int, refs: tuple[Ref, ...], ex: Exchange
) -> list[Finding]:
    fps = sdp.fingerprints_of(i)
    if not fps:
        m = sdp.media[i].m
        text = f"{name} m-line {i + 1} uses {m.proto if m else '?'} with no a=fingerprint "
        text += f"({_where(ex)})"
        return [Finding("sdp.dtls_fingerprint", E, text, "RFC 5763 §5", refs)]
    out = []
    for fp in fps:
        want = fp.expected_octets
        if want is not None and fp.octets != want:
            text = (
                f"{name} m-line {i + 1}: {fp.hash_func} fingerprint has {fp.octets} octets, "
                f"expected {want} ({_where(ex)})"
            )
            out.append(Finding("sdp.dtls_fingerprint", E, text, "RFC 8122 §5", refs))
    return out


def _codec_set(sdp: Sdp | None) -> str:
    if sdp is None:
        return ""
    labels = [c.label for sec in sdp.media for c in sec.formats]
    return ", ".join(dict.fromkeys(labels))


def rule_offer_rejected(ex: Exchange) -> list[Finding]:
    """sdp.offer_rejected: an offer refused with 488/606, with both sides' codec sets."""
    final = ex.final
    if ex.status is not Status.REJECTED or final is None or final.status not in REJECT_MEDIA:
        return []
    theirs = ""
    try:
        body = final.body and _final_sdp(final)
    except ParseError:
        body = None
    if body:
        theirs = _codec_set(parse_sdp(body))
    elif ex.peer_sdp is not None:
        theirs = f"{_codec_set(ex.peer_sdp)} (their last SDP on this leg)"
    warning = final.headers.get("warning")
    other = theirs or (f"not listed; Warning: {warning}" if warning else "not stated in the reply")
    text = (
        f"{ex.offer_in} offer refused with {final.status} {final.reason}: offered "
        f"{_codec_set(ex.offer) or 'no formats'} ({', '.join(_protos(ex.offer))}); "
        f"the other side's formats: {other} (on {ex.leg})"
    )
    rfc = "RFC 3261 §21.4.26" if final.status == 488 else "RFC 3261 §21.6.4"
    refs = refs_of(ex.offer_msgs) + refs_of([final])
    return [Finding("sdp.offer_rejected", W, text, rfc, refs)]


def _final_sdp(msg: SipMessage) -> bytes | None:
    return message_sdp(msg)


def _protos(sdp: Sdp) -> list[str]:
    return list(dict.fromkeys(s.m.proto for s in sdp.media if s.m is not None)) or ["no m-line"]


def rule_no_answer(ex: Exchange) -> list[Finding]:
    """sdp.no_answer: the message that had to carry the answer carried none."""
    if ex.status is not Status.UNANSWERED:
        return []
    where = "the ACK" if ex.offer_in.startswith("2") else "the 2xx"
    text = f"offer in {ex.offer_in} got no answer: {where} carried no SDP (on {ex.leg})"
    refs = refs_of(ex.offer_msgs) + (refs_of([ex.final]) if ex.final is not None else ())
    return [Finding("sdp.no_answer", E, text, "RFC 3261 §13.2.1", refs)]


EXCHANGE_RULES: dict[str, ExRule] = {
    "sdp.mline_count_mismatch": rule_mline_count,
    "sdp.profile_mismatch": rule_profile_mismatch,
    "sdp.answer_codec_not_offered": rule_codec_not_offered,
    "sdp.payload_type_remapped": rule_pt_remapped,
    "sdp.telephone_event_one_side": rule_te_one_side,
    "sdp.telephone_event_mismatch": rule_te_mismatch,
    "sdp.direction_conflict": rule_direction,
    "sdp.sdes_tag_not_offered": rule_sdes_tag,
    "sdp.sdes_suite_changed": rule_sdes_suite,
    "sdp.sdes_best_effort": rule_sdes_best_effort,
    "sdp.dtls_setup_conflict": rule_dtls_setup,
    "sdp.dtls_fingerprint": rule_dtls_fingerprint,
    "sdp.offer_rejected": rule_offer_rejected,
    "sdp.no_answer": rule_no_answer,
}

MALFORMED_BODY = "sdp.malformed_body"
CODES = (*DOCUMENT_RULES, *EXCHANGE_RULES, MALFORMED_BODY)
"""Every finding code this module can emit (each documented in docs/findings.md)."""


# -- entry points ---------------------------------------------------------------------------


def _document_findings(exchanges: list[Exchange]) -> list[Finding]:
    seen: set[tuple[tuple[tuple[int, int], ...], int]] = set()
    out: list[Finding] = []
    for ex in exchanges:
        docs = [(ex.offer, ex.offer_msgs, ex.offer_in)]
        if ex.answer is not None:
            docs.append((ex.answer, ex.answer_msgs, ex.answer_in or "?"))
        for sdp, msgs, where in docs:
            refs = first_ref(msgs)
            key = (tuple([(r.source, r.frame) for r in refs]), id(sdp))  # ints hash in C, Refs not
            if key in seen:
                continue
            seen.add(key)
            for rule in DOCUMENT_RULES.values():
                out.extend(rule(sdp, refs, where))
    return out


def _nearest_leg(exchanges: list[Exchange]) -> object:
    invites = [x for x in exchanges if x.method == "INVITE"]
    pool = invites or exchanges
    return min(pool, key=lambda x: x.via_count).leg_key if pool else None


def _summary(views: list[MediaExchange]) -> str:
    near = [v for v in views if v.nearest] or views
    answered = [v for v in near if v.status == Status.ANSWERED.value]
    pick = answered[-1] if answered else (near[-1] if near else None)
    return pick.summary() if pick is not None else ""


def media_for_call(call: CallRecord) -> CallMedia:
    """Offer/answer exchanges of one call, their findings and a one-line summary."""
    tr = track(call.transactions, call.caller_tag)
    nearest = _nearest_leg(tr.exchanges)
    views = [media_exchange(x, x.leg_key == nearest) for x in tr.exchanges]
    findings = _document_findings(tr.exchanges)
    for ex in tr.exchanges:
        for rule in EXCHANGE_RULES.values():
            findings.extend(rule(ex))
    for msg, err in tr.unreadable:
        text = f"body of {_label(msg)} could not be read: {err}"
        findings.append(Finding(MALFORMED_BODY, W, text, "RFC 2046 §5.1.1", refs_of([msg])))
    skipped = tuple(sorted(tr.skipped.items())) if tr.skipped else ()
    return _new_call_media(tuple(views), tuple(findings), _summary(views), skipped)


_new_call_media = builder(CallMedia)  # one per call: without the frozen __init__


def _label(msg: SipMessage) -> str:
    if msg.is_request:
        return str(getattr(msg, "method", "request"))
    return str(getattr(msg, "status", "response"))
