"""The media view of offer/answer exchanges: per m-line what was negotiated.

How this works: :func:`media_exchange` turns one :class:`~sipflow.sdp.offer_answer.Exchange`
into a :class:`MediaExchange`: per m-line the offered and negotiated formats, ptime, the
telephone-event payload type and both fmtp ranges, directions, ``address:port`` per side,
rtcp-mux, ICE, SRTP method (none / SDES / DTLS) and the answer's crypto line without its
key (the keys themselves ride along, in memory only, in ``MediaLine.sdes`` for SRTP
decryption: :class:`~sipflow.sdp.srtp.SdesKeys`). :class:`CallMedia` holds a call's
exchanges, findings and one-line summary; :func:`sdp_rows` flattens it for the
``trace.sdp`` DataFrame. Pure values, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sipflow.findings import Finding, Ref
from sipflow.frozen import builder
from sipflow.sdp.model import Format, MediaSection, Sdp
from sipflow.sdp.offer_answer import Exchange, Status
from sipflow.sdp.srtp import (
    CryptoAttr,
    SdesKeys,
    SrtpMethod,
    is_dtls_proto,
    is_secure_proto,
    sdes_keys,
)
from sipflow.sip.message import SipMessage

TELEPHONE_EVENT = "telephone-event"

# -- values ---------------------------------------------------------------------------------


Codec = Format
"""A negotiated or offered media format (see :class:`sipflow.sdp.model.Format`)."""


@dataclass(frozen=True, slots=True)
class MediaLine:
    """One m-line of an exchange, offer and answer side by side."""

    index: int
    media: str
    offer_proto: str
    answer_proto: str | None
    offer_addr: str | None
    """``address:port`` the offerer will receive on (c= and m= port)."""
    answer_addr: str | None
    rejected: bool
    """Answer port 0 (RFC 3264 §6), or no answer at all."""
    offered: tuple[Codec, ...]
    codecs: tuple[Codec, ...]
    """Negotiated: the answer's formats that were also offered, in the answer's order."""
    ptime: float | None
    dtmf_pt: int | None
    dtmf_offer_fmtp: str | None
    dtmf_answer_fmtp: str | None
    direction_offer: str
    direction_answer: str | None
    rtcp_mux: bool
    """Both sides listed a=rtcp-mux (RFC 5761 §5.1.1)."""
    ice: bool
    srtp: SrtpMethod
    crypto: CryptoAttr | None
    """The answer's crypto line (keys are never kept)."""
    setup: str | None
    """DTLS ``offer-setup/answer-setup``, e.g. ``actpass/active``."""
    sdes: SdesKeys | None = field(default=None, repr=False, compare=False)
    """SDES key material of both sides, in memory only, for SRTP decryption
    (:mod:`sipflow.rtp.decrypt`); never in ``to_dict`` or any other output."""

    def to_dict(self) -> dict[str, Any]:
        crypto = self.crypto
        return {
            "index": self.index,
            "media": self.media,
            "rejected": self.rejected,
            "proto": {"offer": self.offer_proto, "answer": self.answer_proto},
            "addr": {"offer": self.offer_addr, "answer": self.answer_addr},
            "offered": [c.to_dict() for c in self.offered],
            "codecs": [c.to_dict() for c in self.codecs],
            "ptime": self.ptime,
            "dtmf": {
                "pt": self.dtmf_pt,
                "offer_fmtp": self.dtmf_offer_fmtp,
                "answer_fmtp": self.dtmf_answer_fmtp,
            },
            "direction": {"offer": self.direction_offer, "answer": self.direction_answer},
            "rtcp_mux": self.rtcp_mux,
            "ice": self.ice,
            "srtp": {
                "method": self.srtp.value,
                "suite": crypto.suite if crypto else None,
                "tag": crypto.tag if crypto else None,
                "params": crypto.to_dict() if crypto else None,
                "setup": self.setup,
            },
        }

    def summary(self) -> str:
        if self.rejected:
            return f"{self.media} rejected"
        head = self.codecs[0].label if self.codecs else "no common codec"
        if self.ptime:
            head += f" {self.ptime:g}ms"
        parts = [head if self.media == "audio" else f"{self.media} {head}"]
        if self.dtmf_pt is not None:
            parts.append(f"DTMF {self.dtmf_pt}")
        if self.srtp is SrtpMethod.SDES and self.crypto is not None:
            parts.append(f"SRTP {self.crypto.suite} tag {self.crypto.tag}")
        elif self.srtp is SrtpMethod.DTLS:
            parts.append("DTLS-SRTP")
        if self.direction_answer and self.direction_answer != "sendrecv":
            parts.append(self.direction_answer)
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class MediaExchange:
    """One offer/answer exchange on one leg."""

    leg: str
    nearest: bool
    """On the hop nearest the caller (fewest Vias on its INVITE)."""
    method: str
    offer_in: str
    answer_in: str | None
    offerer: str
    status: str
    final_status: int | None
    offer_frames: tuple[Ref, ...]
    answer_frames: tuple[Ref, ...]
    lines: tuple[MediaLine, ...]
    summary_text: str
    """:meth:`summary`, written once by :func:`media_exchange` (the call's summary, the
    JSON and the ladder all show it)."""

    def summary(self) -> str:
        return self.summary_text

    def to_dict(self) -> dict[str, Any]:
        return {
            "leg": self.leg,
            "nearest_caller": self.nearest,
            "method": self.method,
            "offer_in": self.offer_in,
            "answer_in": self.answer_in,
            "offerer": self.offerer,
            "status": self.status,
            "final_status": self.final_status,
            "offer_frames": [_ref_dict(r) for r in self.offer_frames],
            "answer_frames": [_ref_dict(r) for r in self.answer_frames],
            "summary": self.summary_text,
            "streams": [ln.to_dict() for ln in self.lines],
        }


@dataclass(frozen=True, slots=True)
class CallMedia:
    """What the SDP of one call negotiated, and the findings about it."""

    exchanges: tuple[MediaExchange, ...]
    findings: tuple[Finding, ...]
    summary: str
    skipped: tuple[tuple[str, int], ...] = ()
    """SDP bodies seen where no offer/answer can be, by reason."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "exchanges": [x.to_dict() for x in self.exchanges],
            "skipped": dict(self.skipped),
        }


def _ref_dict(r: Ref) -> dict[str, int]:
    return {"source": r.source, "frame": r.frame}


# built without the frozen __init__ (sipflow.frozen): one of each per m-line, exchange or frame
_new_ref = builder(Ref)
_new_line = builder(MediaLine)
_new_exchange = builder(MediaExchange)


# -- building the media view ----------------------------------------------------------------


def refs_of(msgs: Iterable[SipMessage]) -> tuple[Ref, ...]:
    """Each message's last frame, in order, once each."""
    out: dict[tuple[int, int], Ref] = {}  # keyed by ints: they hash in C, a Ref does not
    for m in msgs:
        o = m.origin
        if o is not None and o.frames:
            key = (o.source, o.frames[-1])
            if key not in out:
                out[key] = _new_ref(*key)
    return tuple(out.values())


def first_ref(msgs: tuple[SipMessage, ...]) -> tuple[Ref, ...]:
    """``refs_of(msgs[:1])`` without the slice and the dict (once per SDP document)."""
    o = msgs[0].origin if msgs else None
    return (_new_ref(o.source, o.frames[-1]),) if o is not None and o.frames else ()


def _addr(sdp: Sdp, i: int) -> str | None:
    sec = sdp.media[i]
    conn = sdp.connection_of(i)
    if sec.m is None:
        return None
    host = conn.address if conn is not None else "?"
    return f"[{host}]:{sec.m.port}" if ":" in host else f"{host}:{sec.m.port}"


def dtmf_of(sec: MediaSection) -> tuple[int | None, str | None]:
    for rm in sec.rtpmaps.values():
        if rm.encoding.lower() == TELEPHONE_EVENT and sec.m and rm.pt in sec.m.payload_types:
            return rm.pt, sec.fmtp(rm.pt)
    return None, None


def _srtp(offer: Sdp, answer: Sdp | None, i: int) -> tuple[SrtpMethod, CryptoAttr | None]:
    side = answer if answer is not None else offer
    sec = side.media[i]
    proto = sec.m.proto if sec.m else ""
    if is_dtls_proto(proto) or (is_secure_proto(proto) and side.fingerprints_of(i)):
        return SrtpMethod.DTLS, None
    if sec.crypto:
        return SrtpMethod.SDES, sec.crypto[0] if answer is not None else None
    return SrtpMethod.NONE, None


def _setup(offer: Sdp, answer: Sdp | None, i: int) -> str | None:
    if not (_says("setup", offer, i) or (answer is not None and _says("setup", answer, i))):
        return None  # no a=setup on either side (all but DTLS-SRTP): nothing to read
    a = offer.setup_of(i)
    b = answer.setup_of(i) if answer is not None and i < len(answer.media) else None
    if a is None and b is None:
        return None
    return f"{a.value if a else '-'}/{b.value if b else '-'}"


def _says(key: str, sdp: Sdp, i: int) -> bool:
    """An ``a=<key>`` line in m-line ``i`` or at the session level (cheaper than reading it)."""
    return key in sdp.session.by_key or (i < len(sdp.media) and key in sdp.media[i].by_key)


def _line(ex: Exchange, i: int) -> MediaLine:
    offer, answer = ex.offer, ex.answer
    osec = offer.media[i]
    asec = answer.media[i] if answer is not None and i < len(answer.media) else None
    ans = answer if asec is not None else None
    om, am = osec.m, asec.m if asec is not None else None
    offered = osec.formats
    rejected = am is None or am.port == 0
    codecs: tuple[Codec, ...] = ()
    if asec is not None and not rejected:
        if asec.formats is offered:  # one shared tuple (same m= formats and rtpmaps)
            codecs = offered
        else:
            want = {c.identity for c in offered}
            codecs = tuple([c for c in asec.formats if c.identity in want])
    dtmf_o, fmtp_o = dtmf_of(osec)
    dtmf_a, fmtp_a = dtmf_of(asec) if asec is not None else (None, None)
    method, crypto = _srtp(offer, ans, i)
    # positional, in field order: keywords cost as much again as the build (one per m-line)
    return _new_line(
        i,  # index
        om.media if om else "?",  # media
        om.proto if om else "?",  # offer_proto
        am.proto if am else None,  # answer_proto
        _addr(offer, i),  # offer_addr
        _addr(ans, i) if ans is not None else None,  # answer_addr
        rejected,
        offered,
        codecs,
        (asec.ptime if asec is not None else None) or osec.ptime,  # ptime
        dtmf_a if asec is not None else dtmf_o,  # dtmf_pt
        fmtp_o,  # dtmf_offer_fmtp
        fmtp_a,  # dtmf_answer_fmtp
        offer.direction_of(i).value,  # direction_offer
        ans.direction_of(i).value if ans is not None else None,  # direction_answer
        osec.rtcp_mux and asec is not None and asec.rtcp_mux,  # rtcp_mux
        offer.ice_of(i) or (ans is not None and ans.ice_of(i)),  # ice
        method,  # srtp
        crypto,
        _setup(offer, ans, i),  # setup
        _sdes(osec, asec) if method is SrtpMethod.SDES else None,  # sdes
    )


def _sdes(osec: MediaSection, asec: MediaSection | None) -> SdesKeys | None:
    """The keys of both sides' ``a=crypto`` lines (RFC 4568), kept apart from the output."""
    answer = tuple(a.value for a in asec.attrs("crypto")) if asec is not None else ()
    return sdes_keys(tuple(a.value for a in osec.attrs("crypto")), answer)


def exchange_summary(status: str, final_status: int | None, lines: tuple[MediaLine, ...]) -> str:
    """One line for an exchange: ``PCMA/8000 20ms, DTMF 101`` per accepted m-line, or why
    nothing was negotiated."""
    if status != Status.ANSWERED.value:
        offered = ", ".join(dict.fromkeys(c.label for ln in lines for c in ln.offered))
        what = f"{status} {final_status}" if final_status else status
        return f"{what} (offered {offered or 'nothing'})"
    if not lines:
        return "no media streams"
    accepted = [ln.summary() for ln in lines if not ln.rejected]
    return "; ".join(accepted) if accepted else "all streams rejected"


def media_exchange(ex: Exchange, nearest: bool) -> MediaExchange:
    status = ex.status.value
    final_status = ex.final.status if ex.final is not None else None
    lines = tuple([_line(ex, i) for i in range(len(ex.offer.media))])
    return _new_exchange(  # positional, in field order (see _line)
        ex.leg,
        nearest,
        ex.method,
        ex.offer_in,
        ex.answer_in,
        ex.offerer.value,  # offerer
        status,
        final_status,
        refs_of(ex.offer_msgs),  # offer_frames
        refs_of(ex.answer_msgs),  # answer_frames
        lines,
        exchange_summary(status, final_status, lines),  # summary_text
    )


SDP_COLUMNS = (
    "call",
    "exchange",
    "leg",
    "nearest_caller",
    "offerer",
    "offer_in",
    "answer_in",
    "status",
    "final_status",
    "m_index",
    "media",
    "rejected",
    "offer_proto",
    "answer_proto",
    "codec",
    "pt",
    "codecs",
    "offered",
    "ptime",
    "dtmf_pt",
    "dtmf_offer_fmtp",
    "dtmf_answer_fmtp",
    "direction_offer",
    "direction_answer",
    "offer_addr",
    "answer_addr",
    "rtcp_mux",
    "ice",
    "srtp",
    "suite",
    "tag",
    "key_salt_len",
    "setup",
    "offer_frame",
    "answer_frame",
)


def sdp_rows(call_index: int, media: CallMedia) -> list[dict[str, Any]]:
    """Rows of ``trace.sdp``: one per m-line per exchange (columns :data:`SDP_COLUMNS`)."""
    rows = []
    for n, x in enumerate(media.exchanges):
        for ln in x.lines:
            first = ln.codecs[0] if ln.codecs else None
            key = ln.crypto.keys[0].key_salt_len if ln.crypto and ln.crypto.keys else None
            rows.append(
                {
                    "call": call_index,
                    "exchange": n,
                    "leg": x.leg,
                    "nearest_caller": x.nearest,
                    "offerer": x.offerer,
                    "offer_in": x.offer_in,
                    "answer_in": x.answer_in,
                    "status": x.status,
                    "final_status": x.final_status,
                    "m_index": ln.index,
                    "media": ln.media,
                    "rejected": ln.rejected,
                    "offer_proto": ln.offer_proto,
                    "answer_proto": ln.answer_proto,
                    "codec": first.label if first else None,
                    "pt": first.pt if first else None,
                    "codecs": ", ".join(c.label for c in ln.codecs),
                    "offered": ", ".join(c.label for c in ln.offered),
                    "ptime": ln.ptime,
                    "dtmf_pt": ln.dtmf_pt,
                    "dtmf_offer_fmtp": ln.dtmf_offer_fmtp,
                    "dtmf_answer_fmtp": ln.dtmf_answer_fmtp,
                    "direction_offer": ln.direction_offer,
                    "direction_answer": ln.direction_answer,
                    "offer_addr": ln.offer_addr,
                    "answer_addr": ln.answer_addr,
                    "rtcp_mux": ln.rtcp_mux,
                    "ice": ln.ice,
                    "srtp": ln.srtp.value,
                    "suite": ln.crypto.suite if ln.crypto else None,
                    "tag": ln.crypto.tag if ln.crypto else None,
                    "key_salt_len": key,
                    "setup": ln.setup,
                    "offer_frame": x.offer_frames[0].frame if x.offer_frames else None,
                    "answer_frame": x.answer_frames[0].frame if x.answer_frames else None,
                }
            )
    return rows
