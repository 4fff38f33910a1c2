"""parse_message / serialise: framing, start lines, Content-Length, problems, and real
captures cross-checked field by field against tshark 4.0 (the independent oracle)."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from sipflow.errors import ParseError
from sipflow.ingest.types import Transport
from sipflow.sip.message import (
    Origin,
    ProblemCode,
    SipRequest,
    SipResponse,
    parse_message,
    serialise,
)

PCAPS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus" / "pcaps"

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def _codes(data: bytes, origin: Origin | None = None) -> set[ProblemCode]:
    return set(parse_message(data, origin).problem_codes)


def test_clean_invite() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, SipRequest)
    assert (msg.method, msg.uri, msg.version) == ("INVITE", "sip:bob@biloxi.example.com", "SIP/2.0")
    assert msg.problems == () and msg.problem_codes == ()
    assert msg.body == b"v=0\n" and msg.is_request
    assert msg.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert msg.from_tag == "1928301774" and msg.to_tag is None
    assert msg.top_via is not None and msg.top_via.branch == "z9hG4bK776asdhds"
    assert serialise(msg) == INVITE


def test_response_and_empty_reason() -> None:
    msg = parse_message(
        INVITE.replace(b"INVITE sip:bob@biloxi.example.com SIP/2.0", b"SIP/2.0 180 ")
    )
    assert isinstance(msg, SipResponse)
    assert (msg.status, msg.reason, msg.is_request) == (180, "", False)
    assert "sip.missing_header" not in {c.value for c in msg.problem_codes}  # no Max-F. rule


def test_not_sip_raises_parse_error() -> None:
    for junk in (
        b"",
        b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00\x01\x02",
        b"SIP/2.0 20 OK\r\n\r\n",
        b"SIP/2.0 099 Low\r\n\r\n",
        b"SIP/2.0 700 High\r\n\r\n",
        b"INVITE sip:a@b\r\n\r\n",
    ):
        with pytest.raises(ParseError):
            parse_message(junk)


def test_folding_compact_forms_and_case() -> None:
    data = (
        b"OPTIONS sip:a@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP h1.example.com;branch=z9hG4bK1,\r\n"
        b"\tSIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bK2;received=2001:db8::9;rport=5062\r\n"
        b"i:   \r\n  folded-call-id\r\n"
        b"s: folded\r\n\t  subject\r\n"
        b"f: <sip:x@example.com>;tag=ab\r\n"
        b"T: sip:y@example.com\r\n"
        b"cSeQ: 7 OPTIONS\r\n"
        b"MAX-FORWARDS: 5\r\n"
        b"l: 0\r\n\r\n"
    )
    msg = parse_message(data)
    assert msg.problems == ()
    assert msg.call_id == "folded-call-id"
    assert msg.headers.get("Subject") == "folded subject"
    assert [v.sent_by for v in msg.vias] == ["h1.example.com", "[2001:db8::1]:5061"]
    assert (msg.vias[1].received, msg.vias[1].rport, msg.vias[1].transport) == (
        "2001:db8::9",
        5062,
        "TCP",
    )
    assert msg.headers.count("via") == 1 and len(msg.headers.get_all("Via")) == 2
    assert serialise(msg) == data


def test_bare_lf_message_from_a_log() -> None:
    data = INVITE.replace(b"\r\n", b"\n")
    msg = parse_message(data)
    assert msg.eol == "\n" and msg.problems == () and serialise(msg) == data


def test_content_length_rules_for_datagrams() -> None:
    # RFC 3261 §18.3: extra octets after Content-Length are discarded, and reported
    longer = parse_message(INVITE + b"garbage")
    assert longer.body == b"v=0\n" and set(longer.problem_codes) == {ProblemCode.TRAILING_OCTETS}
    assert serialise(longer) == INVITE + b"garbage"
    # a body shorter than Content-Length (truncated datagram / capture)
    short = INVITE[:-2]
    assert _codes(short) == {ProblemCode.CONTENT_LENGTH_MISMATCH}
    assert parse_message(short).body == b"v="
    assert _codes(INVITE.replace(b"Content-Length: 4", b"Content-Length: four")) == {
        ProblemCode.BAD_CONTENT_LENGTH
    }


def test_missing_content_length_matters_on_streams_only() -> None:
    data = INVITE.replace(b"Content-Length: 4\r\n", b"")
    assert _codes(data) == set()
    tcp = Origin(source=0, frames=(1,), ts=0, transport=Transport.TCP)
    assert _codes(data, tcp) == {ProblemCode.MISSING_CONTENT_LENGTH}


def test_problem_codes_name_the_rule() -> None:
    cases = {
        b"CSeq: 314159 INVITE": (b"CSeq: 314159 BYE", ProblemCode.CSEQ_METHOD),
        b"Max-Forwards: 70": (b"Max-Forwards: 256", ProblemCode.BAD_MAX_FORWARDS),
        b"Via: SIP/2.0/UDP pc33": (b"Via: SIP/2.0 pc33", ProblemCode.BAD_VIA),
        b"To: Bob <sip:bob@": (b'To: "Bob <sip:bob@', ProblemCode.BAD_ADDRESS),
        b"Call-ID: a84b": (b"Call-ID: a 84b", ProblemCode.BAD_CALL_ID),
        b"From: Alice": (b"From: Alice\r\nFrom: Alice", ProblemCode.DUPLICATE_HEADER),
        b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n": (b"", ProblemCode.MISSING_HEADER),
        b"Contact: <sip": (b"Contact <sip", ProblemCode.HEADER_LINE),
        b"sip:bob@biloxi.example.com SIP": (b"sip:bob@[::1 SIP", ProblemCode.BAD_URI),
        b"SIP/2.0\r\nVia": (b"SIP/3.0\r\nVia", ProblemCode.VERSION),
        b"INVITE sip": (b"INVITE  sip", ProblemCode.START_LINE),
    }
    for old, (new, code) in cases.items():
        assert old in INVITE
        msg = parse_message(INVITE.replace(old, new, 1))
        assert set(msg.problem_codes) == {code}, (new, msg.problems)
        (text,) = msg.problems
        assert "RFC" in text and "§" in text
        assert serialise(msg) == INVITE.replace(old, new, 1)


def test_start_lines_are_judged_for_every_message() -> None:
    """Clean start lines are remembered (message._STARTS); a line with a problem is not,
    so every message carrying it reports it, and a response line keeps its own fields."""
    for old, new, code in (
        (b"SIP/2.0\r\nVia", b"SIP/3.0\r\nVia", ProblemCode.VERSION),
        (b"INVITE sip", b"INVITE  sip", ProblemCode.START_LINE),
    ):
        for _ in range(3):
            assert _codes(INVITE.replace(old, new, 1)) == {code}
    for _ in range(2):
        assert parse_message(INVITE).problem_codes == ()
        ok = parse_message(
            INVITE.replace(b"INVITE sip:bob@biloxi.example.com SIP/2.0", b"SIP/2.0 200 OK")
        )
        assert isinstance(ok, SipResponse) and (ok.status, ok.reason) == (200, "OK")


def test_unterminated_header_block() -> None:
    data = INVITE.split(b"\r\n\r\n")[0] + b"\r\n"
    msg = parse_message(data)
    assert ProblemCode.UNTERMINATED in msg.problem_codes and serialise(msg) == data


def test_invalid_utf8_is_kept_losslessly() -> None:
    data = INVITE.replace(b"Bob <", b"B\xff\xfe\xc3b <")
    msg = parse_message(data)
    assert msg.to is not None and serialise(msg) == data
    assert msg.to.display is not None
    assert msg.to.display.encode("utf-8", "surrogateescape") == b"B\xff\xfe\xc3b"


def test_origin_and_ts() -> None:
    origin = Origin(source=2, frames=(7, 8), ts=1_700_000_000_123_456_789)
    msg = parse_message(INVITE, origin)
    assert msg.origin is origin and msg.ts == origin.ts


# --- real captures against tshark ------------------------------------------------------------

FIELDS = (
    "frame.number",
    "udp.payload",
    "sip.Call-ID",
    "sip.CSeq.seq",
    "sip.CSeq.method",
    "sip.from.tag",
    "sip.to.tag",
    "sip.Via.branch",
)
CAPTURES = (
    "goffinet__SIP-Call-with-Proxy-Server.pcap",
    "goffinet__private-test-sip.pcapng",  # IPv4-fragmented INVITE
    "goffinet__sip-2phones-B2BUA-Asterisk.pcapng",
    "goffinet__voip-extension2downata.pcap",
    "goffinet__branch-scenario-sipp.pcapng",  # 8,989 SIPp messages
    "heplify__erspan_sip_ipv4_udp.pcapng",  # control bytes inside To tags
    "heplify__sip_ipv6_udp.pcap",  # IPv6 addresses without [] (invalid)
    "heplify__FAX-Call-t38-CA-TDM-SIP-FB-1.pcap",
    "sngrep__aaa.pcap",
    "suricata__sip_compact_form.pcap",
    "suricata__sip_header_multi_val.pcap",
    "voipshark__SIP-RTP-Normal_Call_two_parties.pcap",
    "zeek__invalid-content-length.pcap",
)
_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


@cache
def _tshark_rows(name: str) -> list[list[str]]:
    if not PCAPS.is_dir():
        pytest.skip(f"{PCAPS} is absent (../shared corpus not on this machine)")
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    argv = [
        "tshark",
        "-n",
        "-r",
        str(PCAPS / name),
        "-Y",
        "sip && udp",
        "-T",
        "fields",
        "-E",
        "separator=|",
    ]
    for f in FIELDS:
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout
    return [line.split("|") for line in out.splitlines()]


def _as_tshark(value: str | None) -> str:
    """Our text rendered as tshark prints it: invalid UTF-8 replaced, C escapes."""
    if not value:
        return ""
    text = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return "".join(_ESCAPES.get(c, c) for c in text)


@pytest.mark.corpus
@pytest.mark.parametrize("name", CAPTURES)
def test_capture_agrees_with_tshark(name: str) -> None:
    rows = _tshark_rows(name)
    assert rows, f"tshark found no SIP over UDP in {name}"
    for frame, payload, call_id, seq, method, ftag, ttag, branches in rows:
        data = bytes.fromhex(payload.split(",")[-1])
        msg = parse_message(data)
        assert serialise(msg) == data, frame
        first = [v.split(",")[0] for v in (call_id, seq, method, ftag, ttag)]
        cseq = msg.cseq
        got = [
            _as_tshark(msg.call_id),
            str(cseq.seq) if cseq else "",
            cseq.method if cseq else "",
            _as_tshark(msg.from_tag),
            _as_tshark(msg.to_tag),
        ]
        assert got == first, f"{name} frame {frame}: {msg.problems}"
        ours = msg.top_via.branch if msg.top_via and msg.top_via.branch else ""
        theirs = branches.split(",")[0]
        if ours != theirs:
            # tshark gives up on a Via it cannot read; we read it and must say it is bad
            assert theirs == "" and ProblemCode.BAD_VIA in msg.problem_codes, (name, frame)


@pytest.mark.corpus
def test_capture_problems_are_the_real_defects() -> None:
    """Known defects in corpus captures are reported, with the right code."""
    expect = {
        "zeek__invalid-content-length.pcap": ProblemCode.BAD_CONTENT_LENGTH,
        "suricata__sip_header_multi_val.pcap": ProblemCode.DUPLICATE_HEADER,
        "heplify__sip_ipv6_udp.pcap": ProblemCode.BAD_URI,
    }
    for name, code in expect.items():
        found = {
            c
            for row in _tshark_rows(name)
            for c in parse_message(bytes.fromhex(row[1].split(",")[-1])).problem_codes
        }
        assert code in found, name
