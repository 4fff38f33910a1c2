"""A small per-leg summary, taken when a call is released, that leg correlation runs on.

How this works: the CLI drops a call's transactions as soon as it is released, so
:func:`facts_of` reads what correlation needs while they are still there and keeps it in a
frozen :class:`LegFacts` of plain strings, numbers and tuples (no SipMessage). Per leg:
the INVITE hop nearest the caller and the one farthest from it (``near``/``far``: endpoints
and the times of INVITE, first 18x, final), the parties' user parts, From tag and CSeq,
Via branches, BYE time, the explicit linking headers (X-CID-style headers with configurable
names, Session-ID RFC 7989, P-Charging-Vector icid RFC 7315, History-Info RFC 7044,
Diversion RFC 5806, Referred-By RFC 3892, Replaces RFC 3891, Refer-To RFC 3515 of REFERs
inside the leg) and SDP facts of the first offer/answer (codecs, ptime, SRTP suites,
media addresses, the o= line). A call whose transactions were already dropped still gives
facts from its summary fields (hops, times, URIs), just fewer of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import unquote

from sipflow.correlate.normalise import user_of
from sipflow.findings import Ref
from sipflow.frozen import builder
from sipflow.sip.headers import canonical, split_commas
from sipflow.sip.message import SipResponse
from sipflow.sip.transaction import ref_of

if TYPE_CHECKING:
    from sipflow.correlate.calls import CallRecord
    from sipflow.sdp.media import CallMedia, MediaExchange
    from sipflow.sip.message import SipMessage, SipRequest
    from sipflow.sip.transaction import TransactionRecord

Addr = tuple[str, int]
"""(ip, port) of a SIP endpoint."""

DEFAULT_ID_HEADERS = ("X-CID", "X-Call-ID", "X-Original-Call-ID", "X-Orig-Call-ID")
"""Headers whose value is another leg's Call-ID (or a value shared by the legs)."""

_NULL_UUID = "0" * 32  # RFC 7989 §7: the null UUID of a Session-ID not yet known


@dataclass(frozen=True, slots=True)
class FactsOptions:
    """Which vendor headers carry a correlation id (names compare case-insensitively)."""

    id_headers: tuple[str, ...] = DEFAULT_ID_HEADERS


@dataclass(frozen=True, slots=True)
class HopTimes:
    """One INVITE hop of a leg: its endpoints and the times (ns) its transaction saw."""

    src: Addr | None
    dst: Addr | None
    invite: int
    ringing: int | None
    """First 18x."""
    final: int | None
    code: int | None


@dataclass(frozen=True)
class LegFacts:
    """Everything leg correlation compares about one leg (one CallRecord).

    :func:`facts_of` builds it without the frozen ``__init__`` (one ``object.__setattr__``
    per field was a third of its cost); the value is frozen all the same.
    """

    call_id: str
    call_ids: tuple[str, ...]
    start: int
    """The call's start (first INVITE at the hop nearest the caller)."""
    near: HopTimes
    """The INVITE hop nearest the caller (fewest Vias), the attempt that got the final."""
    far: HopTimes
    """The INVITE hop farthest from the caller (most Vias); ``near`` when only one."""
    answer: int | None
    end: int | None
    """First BYE of an answered leg, else None."""
    outcome: str
    final_code: int | None
    from_user: str | None
    to_user: str | None
    ruri_user: str | None
    from_tag: str | None
    cseq: int | None
    vias: tuple[str, ...] = ()
    """Via branches of the nearest INVITE, top first."""
    far_branch: str | None = None
    """Top Via branch of the farthest INVITE."""
    id_headers: tuple[tuple[str, str], ...] = ()
    """(lower-case header name, value) of configured X-CID-style headers."""
    session_ids: tuple[str, ...] = ()
    """Non-null UUIDs of Session-ID headers (RFC 7989 §4: local and remote)."""
    icids: tuple[str, ...] = ()
    """P-Charging-Vector icid-value (RFC 7315 §4.6)."""
    history: tuple[str, ...] = ()
    """Users of History-Info targets (RFC 7044)."""
    diversion: tuple[str, ...] = ()
    """Users of Diversion entries (RFC 5806)."""
    referred_by: str | None = None
    """User of Referred-By (RFC 3892) on the initial INVITE."""
    replaces: tuple[str, ...] = ()
    """Call-IDs named by Replaces (RFC 3891) on the initial INVITE."""
    refers: tuple[tuple[str | None, str | None, int], ...] = ()
    """REFERs sent inside the leg: (Refer-To user, Call-ID of its Replaces, time)."""
    codecs: tuple[str, ...] = ()
    """Offered codecs of the first offer (``pcmu/8000``), in order."""
    ptime: float | None = None
    crypto: tuple[str, ...] = ()
    """SRTP suites of the answered crypto lines (RFC 4568), ``suite#tag``."""
    srtp: str | None = None
    offer_addrs: tuple[str, ...] = ()
    answer_addrs: tuple[str, ...] = ()
    origins: tuple[str, ...] = ()
    """``o=`` username, sess-id and address of the first offer and answer (RFC 8866 §5.2)."""
    refs: tuple[Ref, ...] = ()
    """Frame of the nearest INVITE (for findings)."""


# -- helpers ----------------------------------------------------------------------------


def parse_addr(text: str) -> Addr | None:
    """``ip:port`` or ``[v6]:port`` as written in ``hops``."""
    text = text.strip()
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


def _hop_of(text: str) -> tuple[Addr | None, Addr | None]:
    src, _, dst = text.partition(" -> ")
    return parse_addr(src), parse_addr(dst)


def _addr(ep: object) -> Addr | None:
    ip = getattr(ep, "ip", None)
    port = getattr(ep, "port", None)
    return (ip, port) if isinstance(ip, str) and isinstance(port, int) else None


def _param(value: str, name: str, first: int = 1) -> str | None:
    """A ``;name=value`` parameter (``first=0``: the value is a parameter list only)."""
    for part in value.split(";")[first:]:
        key, _, val = part.partition("=")
        if key.strip().lower() == name:
            return val.strip().strip('"') or None
    return None


def _bracketed_uri(value: str) -> str:
    value = value.strip()
    lt = value.find("<")
    if lt >= 0:
        return value[lt + 1 : value.find(">", lt + 1) if ">" in value[lt:] else None]
    return value.split(";", 1)[0]


def _users(values: Iterable[str]) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for v in values:
        user = user_of(_bracketed_uri(v).split("?", 1)[0])
        if user:
            out[user] = None
    return tuple(out)


def session_uuids(value: str) -> list[str]:
    """RFC 7989 §4: ``sess-uuid *(SEMI remote-param)``, remote=uuid; nulls dropped."""
    local = value.split(";", 1)[0].strip().lower()
    remote = (_param(value, "remote") or "").lower()
    return [u for u in (local, remote) if u and u != _NULL_UUID]


def replaces_call_id(value: str) -> str | None:
    """RFC 3891 §6.1: ``callid *(SEMI replaces-param)``."""
    cid = unquote(value).split(";", 1)[0].strip()
    return cid or None


def refer_target(value: str) -> tuple[str | None, str | None]:
    """Refer-To (RFC 3515 §2.1): the target user and the Call-ID of an embedded Replaces."""
    uri = _bracketed_uri(value)
    base, _, query = uri.partition("?")
    replaces = None
    for part in query.split("&"):
        name, _, val = part.partition("=")
        if name.lower() == "replaces":
            replaces = replaces_call_id(val)
    return user_of(base), replaces


def _origin(body: bytes) -> str | None:
    """``o=`` without the version (RFC 8866 §5.2): the same session keeps it across hops."""
    at = body.find(b"o=")
    if at < 0 or (at > 0 and body[at - 1] not in b"\r\n"):
        at = body.find(b"\no=")
        if at < 0:
            return None
        at += 1
    end = body.find(b"\n", at)
    line = body[at + 2 : end if end >= 0 else None]
    parts = line.decode("utf-8", "replace").split()
    if len(parts) < 6:
        return None
    return f"{parts[0]} {parts[1]} {parts[5]}"


# -- from the transactions --------------------------------------------------------------


def _initial_invites(call: CallRecord) -> list[TransactionRecord]:
    return [
        t
        for t in call.transactions
        if t.method == "INVITE" and t.request is not None and not t.request.to_tag
    ]


def _attempts(invites: list[TransactionRecord]) -> tuple[TransactionRecord, TransactionRecord]:
    """The attempts that decided the call at the nearest and the farthest hop (one and
    the same when every INVITE has as many Vias)."""
    vias = [t.via_count for t in invites]
    near, far = min(vias), max(vias)
    near_tx = _attempt(invites, near)
    return near_tx, near_tx if far == near else _attempt(invites, far)


def _attempt(invites: list[TransactionRecord], vias: int) -> TransactionRecord:
    """The attempt that decided the call at the hop whose INVITEs have ``vias`` Vias."""
    pool = sorted((t for t in invites if t.via_count == vias), key=lambda t: t.first_ts)
    ok = [t for t in pool if t.final_status is not None and t.final_status < 300]
    return ok[0] if ok else pool[-1]


_new_hop = builder(HopTimes)


def _hop_times(t: TransactionRecord) -> HopTimes:
    return _new_hop(
        _addr(t.hop[0]), _addr(t.hop[1]), t.first_ts, t.first_18x_ts, t.final_ts, t.final_status
    )


def _summary_hops(call: CallRecord) -> tuple[HopTimes, HopTimes]:
    """Hops from the summary alone (transactions dropped): times known at the caller only."""
    hops = [_hop_of(h) for h in call.hops] or [(None, None)]
    ringing = call.start + int(call.pdd_ms * 1e6) if call.pdd_ms is not None else None
    final = call.answer if call.answer is not None else call.end
    first = _new_hop(hops[0][0], hops[0][1], call.start, ringing, final, call.final_code)
    last = _new_hop(hops[-1][0], hops[-1][1], call.start, ringing, final, call.final_code)
    return first, last


def _collect(msgs: Iterable[SipMessage], wanted: frozenset[str]) -> dict[str, list[str]]:
    """Values of the ``wanted`` headers (canonical names), one pass over each message."""
    out: dict[str, list[str]] = {}
    for m in msgs:
        for h in m.headers:
            key = h.canon or canonical(h.name)
            if key in wanted:
                out.setdefault(key, []).append(h.value)
    return out


def _list(found: dict[str, list[str]], name: str) -> list[str]:
    """Comma-separated values split (RFC 3261 §7.3.1)."""
    return [v for value in found.get(name, ()) for v in split_commas(value)]


def _requests(invites: list[TransactionRecord]) -> list[SipRequest]:
    return [t.request for t in invites if t.request is not None]


def _refers(call: CallRecord) -> tuple[tuple[str | None, str | None, int], ...]:
    out = []
    for t in call.transactions:
        if t.method == "REFER" and t.request is not None:
            for value in t.request.headers.get_all("refer-to"):
                user, replaces = refer_target(value)
                out.append((user, replaces, t.first_ts))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _Headers:
    id_headers: tuple[tuple[str, str], ...]
    session_ids: tuple[str, ...]
    icids: tuple[str, ...]
    history: tuple[str, ...]
    diversion: tuple[str, ...]
    referred_by: str | None
    replaces: tuple[str, ...]


_new_headers = builder(_Headers)
_NO_HEADERS = _Headers((), (), (), (), (), None, ())

_REQUEST_HEADERS = frozenset(
    {"history-info", "diversion", "referred-by", "replaces", "session-id", "p-charging-vector"}
)
_RESPONSE_HEADERS = frozenset({"session-id", "p-charging-vector"})


@lru_cache(maxsize=8)
def _id_names(id_headers: tuple[str, ...]) -> tuple[dict[str, str], frozenset[str]]:
    """(canonical name -> label, every request header wanted); the same for every call of
    a run, so built once (callers only read the dict)."""
    names = {canonical(n): n.lower() for n in id_headers}
    return names, _REQUEST_HEADERS | names.keys()


def _headers(invites: list[TransactionRecord], opts: FactsOptions) -> _Headers:
    reqs = _requests(invites)
    names, wanted = _id_names(tuple(opts.id_headers))  # hashable even if given a list
    found = _collect(reqs, wanted)
    # RFC 7989 §6: the final response carries the remote UUID; provisionals add nothing.
    responses = [
        m for t in invites for m in t.messages if isinstance(m, SipResponse) and m.status >= 200
    ]
    for key, values in _collect(responses, _RESPONSE_HEADERS).items():
        found.setdefault(key, []).extend(values)
    if not found:
        return _NO_HEADERS  # most legs carry none of these headers
    ids = {
        (label, v.strip()): None
        for key, label in names.items()
        for v in found.get(key, ())
        if v.strip()
    }
    uuids: dict[str, None] = {}
    for v in found.get("session-id", ()):
        uuids.update(dict.fromkeys(session_uuids(v)))
    icids = {
        i: None for v in found.get("p-charging-vector", ()) if (i := _param(v, "icid-value", 0))
    }
    refby = _users(found.get("referred-by", ()))
    replaces = {c: None for v in found.get("replaces", ()) if (c := replaces_call_id(v))}
    return _new_headers(
        tuple(ids),
        tuple(uuids),
        tuple(icids),
        _users(_list(found, "history-info")),
        _users(_list(found, "diversion")),
        refby[0] if refby else None,
        tuple(replaces),
    )


# -- from the SDP -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Sdp:
    codecs: tuple[str, ...] = ()
    ptime: float | None = None
    crypto: tuple[str, ...] = ()
    srtp: str | None = None
    offer_addrs: tuple[str, ...] = ()
    answer_addrs: tuple[str, ...] = ()


_new_sdp = builder(_Sdp)
_NO_SDP = _Sdp()


def _first_exchange(media: CallMedia | None) -> MediaExchange | None:
    if media is None or not media.exchanges:
        return None
    pool = [x for x in media.exchanges if x.nearest] or list(media.exchanges)
    answered = [x for x in pool if x.status == "answered"]
    return (answered or pool)[0]


def _sdp(media: CallMedia | None) -> _Sdp:
    ex = _first_exchange(media)
    if ex is None:
        return _NO_SDP
    lines = [ln for ln in ex.lines if not ln.rejected] or list(ex.lines)
    codecs = {f"{c.encoding.lower()}/{c.clock}": None for ln in lines for c in ln.offered}
    crypto = {f"{ln.crypto.suite}#{ln.crypto.tag}": None for ln in lines if ln.crypto}
    ptime = next((ln.ptime for ln in lines if ln.ptime), None)
    return _new_sdp(
        tuple(codecs),
        ptime,
        tuple(crypto),
        lines[0].srtp.value if lines else None,
        tuple(a for ln in lines if (a := ln.offer_addr)),
        tuple(a for ln in lines if (a := ln.answer_addr)),
    )


def _origins(invites: list[TransactionRecord]) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for t in invites:
        for m in t.messages:
            if not m.body or (isinstance(m, SipResponse) and m.status >= 300):
                continue
            if o := _origin(m.body):
                out[o] = None
    return tuple(out)


# -- the facts --------------------------------------------------------------------------

_FIELDS = frozenset(LegFacts.__dataclass_fields__)


def _build(**values: object) -> LegFacts:
    """``LegFacts(**values)`` minus the per-field ``object.__setattr__`` of a frozen init."""
    missing = _FIELDS - values.keys()
    if missing:
        raise TypeError(f"LegFacts fields missing: {sorted(missing)}")
    facts = object.__new__(LegFacts)
    facts.__dict__.update(values)
    return facts


def facts_of(
    call: CallRecord, media: CallMedia | None = None, options: FactsOptions | None = None
) -> LegFacts:
    """The correlation summary of one released call (cheap; no message kept)."""
    opts = options or FactsOptions()
    invites = _initial_invites(call)
    if invites:
        near_tx, far_tx = _attempts(invites)
        near = _hop_times(near_tx)
        far = near if far_tx is near_tx else _hop_times(far_tx)
        req = near_tx.request
        heads = _headers([near_tx, far_tx] if far_tx is not near_tx else [near_tx], opts)
        origins = _origins([near_tx])
        vias = tuple(v.branch or "" for v in req.vias) if req is not None else ()
        far_top = far_tx.request.top_via if far_tx.request is not None else None
        far_branch = far_top.branch if far_top is not None else None
    else:
        near, far = _summary_hops(call)
        req, heads, origins, vias, far_branch = None, None, (), (), None
    refs = ref_of(req) if req is not None else ()
    sdp = _sdp(media)
    cseq = req.cseq.seq if req is not None and req.cseq is not None else None
    return _build(
        call_id=call.call_ids[0] if call.call_ids else "",
        call_ids=call.call_ids,
        start=call.start,
        near=near,
        far=far,
        answer=call.answer,
        end=call.end if call.answer is not None else None,
        outcome=call.outcome.value,
        final_code=call.final_code,
        from_user=user_of(call.caller),
        to_user=user_of(call.callee),
        ruri_user=user_of(call.request_uri),
        from_tag=call.caller_tag,
        cseq=cseq,
        vias=vias,
        far_branch=far_branch,
        id_headers=heads.id_headers if heads else (),
        session_ids=heads.session_ids if heads else (),
        icids=heads.icids if heads else (),
        history=heads.history if heads else (),
        diversion=heads.diversion if heads else (),
        referred_by=heads.referred_by if heads else None,
        replaces=heads.replaces if heads else (),
        refers=_refers(call),
        codecs=sdp.codecs,
        ptime=sdp.ptime,
        crypto=sdp.crypto,
        srtp=sdp.srtp,
        offer_addrs=sdp.offer_addrs,
        answer_addrs=sdp.answer_addrs,
        origins=origins,
        refs=refs,
    )


__all__ = [
    "DEFAULT_ID_HEADERS",
    "Addr",
    "FactsOptions",
    "HopTimes",
    "LegFacts",
    "facts_of",
    "parse_addr",
    "refer_target",
    "replaces_call_id",
    "session_uuids",
]
