"""Test helpers: SIP messages and calls for the SDP tests, and the seed FreeSWITCH trace.

``seed_messages`` reads the SIP messages of /work/shared/seed/call-routing-article.txt
(lines 1-593: a FreeSWITCH siptrace pasted HTML-escaped into an article) directly from the
text, until the PBX log reader lands: each ``send|recv N bytes to|from proto/[addr]:port at
hh:mm:ss.us:`` block, un-indented, ``&gt; &lt; &amp;`` un-escaped, lines joined with CRLF.
The log line of the block's first line is used as its "frame" (a log-line reference).
``flow`` builds small synthetic calls (INVITE/1xx/200/ACK ...) for rule unit tests.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from sipflow.correlate.calls import BuilderOutput, CallBuilder, CallRecord
from sipflow.ingest.types import Endpoint, Transport
from sipflow.sip.message import Origin, SipMessage, parse_message

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
SEED = SHARED / "seed" / "call-routing-article.txt"
PCAPS = SHARED / "corpus" / "pcaps"
SEED_LINES = 593
DAY_NS = 1553248500 * 10**9 - (9 * 3600 + 55 * 60) * 10**9  # 2019-03-22 00:00 UTC, roughly

_HEAD = re.compile(
    r"(send|recv) \d+ bytes (?:to|from) (\w+)/\[?([^\]\s]+?)\]?:(\d+) at (\d+):(\d+):([\d.]+):"
)
_DASHES = re.compile(r"\s*-{20,}\s*")
LOCAL = Endpoint("via_addr", 5080)


def run_calls(msgs: list[SipMessage]) -> list[CallRecord]:
    b = CallBuilder()
    out = BuilderOutput()
    for m in msgs:
        out.extend(b.feed(m))
    out.extend(b.finish())
    return sorted(out.calls, key=lambda c: c.start)


def seed_messages(path: Path = SEED) -> list[SipMessage]:
    lines = path.read_text(encoding="utf-8").splitlines()[:SEED_LINES]
    out = []
    i = 0
    while i < len(lines):
        m = _HEAD.search(lines[i])
        if m is None or i + 1 >= len(lines) or not _DASHES.fullmatch(lines[i + 1]):
            i += 1
            continue
        j = i + 2
        while j < len(lines) and not _DASHES.fullmatch(lines[j]):
            j += 1
        block = [html.unescape(x[3:] if x.startswith("   ") else x) for x in lines[i + 2 : j]]
        out.append(_seed_message(m, block, i + 3))
        i = j + 1
    return out


def _seed_message(m: re.Match[str], block: list[str], line_no: int) -> SipMessage:
    direction, proto, addr, port, hh, mm, ss = m.groups()
    ts = DAY_NS + (int(hh) * 3600 + int(mm) * 60) * 10**9 + round(float(ss) * 1e9)
    remote = Endpoint(addr, int(port))
    src, dst = (remote, LOCAL) if direction == "recv" else (LOCAL, remote)
    transport = Transport.TLS if proto == "tls" else Transport.TCP
    while block and not block[-1].strip():
        block.pop()
    head_end = block.index("") if "" in block else len(block)
    data = "\r\n".join(block[:head_end]) + "\r\n\r\n"
    body = "".join(x + "\r\n" for x in block[head_end + 1 :])
    origin = Origin(0, (line_no,), ts, src, dst, transport)
    return parse_message((data + body).encode(), origin)


# -- synthetic flows ------------------------------------------------------------------------

A = Endpoint("192.0.2.1", 5060)
B = Endpoint("192.0.2.2", 5060)


def sdp(*media: str, session: str = "", addr: str = "192.0.2.10") -> str:
    """An SDP body: session lines, then the given media sections (each 'm=...\\r\\na=...')."""
    head = f"v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n{session}"
    return head + "".join(m if m.endswith("\r\n") else m + "\r\n" for m in media)


def audio(port: int = 4000, proto: str = "RTP/AVP", fmts: str = "8 101", *attrs: str) -> str:
    lines = [f"m=audio {port} {proto} {fmts}", *attrs]
    return "\r\n".join(lines) + "\r\n"


PCMA_TE = ("a=rtpmap:8 PCMA/8000", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15")


def message(start: str, headers: list[str], body: str | None, frame: int, src: Endpoint,
            dst: Endpoint, content_type: str = "application/sdp") -> SipMessage:  # fmt: skip
    raw_body = (body or "").encode()
    lines = [start, *headers]
    if body:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(raw_body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode() + raw_body
    return parse_message(data, Origin(0, (frame,), frame * 10**6, src, dst))


_REQ_CSEQ = {"ACK": 0, "PRACK": 10, "UPDATE": 20}
_RESP_TO = {"": ("INVITE", 0), "U": ("UPDATE", 20), "P": ("PRACK", 10)}


def flow(
    steps: list[tuple[str, str | None]], call_id: str = "c1", ctype: str = "application/sdp"
) -> list[SipMessage]:
    """Messages of one dialog between A (caller) and B from (what, sdp body) steps.

    ``what``: ``INVITE``, ``reINVITE`` (next CSeq), ``ACK``, ``PRACK``, ``UPDATE`` (requests
    from A); a status answers the current INVITE (``183r``: reliable, with RSeq), ``U200``
    the UPDATE, ``P200`` the PRACK."""
    out: list[SipMessage] = []
    cseq, to_tag = 1, ""
    frm = "From: <sip:a@x>;tag=ft"
    for n, (what, body) in enumerate(steps, start=1):
        common = [f"Call-ID: {call_id}"]
        if what in ("INVITE", "reINVITE"):
            cseq += what == "reINVITE"
            hdrs = [f"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKINVITE{cseq}", frm]
            hdrs += [f"To: <sip:b@y>{to_tag}", f"CSeq: {cseq} INVITE", *common]
            hdrs.append("Max-Forwards: 70")
            out.append(message("INVITE sip:b@y SIP/2.0", hdrs, body, n, A, B, ctype))
        elif what in _REQ_CSEQ:
            num = cseq + _REQ_CSEQ[what]
            hdrs = [f"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK{what}{num}", frm]
            hdrs += [f"To: <sip:b@y>{to_tag}", f"CSeq: {num} {what}", *common, "Max-Forwards: 70"]
            if what == "PRACK":
                hdrs.append(f"RAck: 1 {cseq} INVITE")
            out.append(message(f"{what} sip:b@y SIP/2.0", hdrs, body, n, A, B, ctype))
        else:
            prefix = what[0] if what[0] in "UP" else ""
            method, offset = _RESP_TO[prefix]
            status = int(what.removeprefix(prefix).rstrip("r"))
            if status > 100 and not to_tag:
                to_tag = ";tag=tt"
            num = cseq + offset
            hdrs = [f"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK{method}{num}", frm]
            hdrs += [f"To: <sip:b@y>{to_tag}", f"CSeq: {num} {method}", *common]
            if what.endswith("r"):
                hdrs += ["Require: 100rel", "RSeq: 1"]
            out.append(message(f"SIP/2.0 {status} X", hdrs, body, n, B, A, ctype))
    return out
