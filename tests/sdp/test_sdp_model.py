"""The lossless SDP model: byte-exact round trips, typed accessors, problems per line."""

from __future__ import annotations

import pytest
from sdp_flows import SEED, seed_messages

from sipflow.sdp.model import (
    Candidate,
    Connection,
    Direction,
    MediaDesc,
    Origin,
    ProblemKind,
    RtpMap,
    Timing,
    parse_sdp,
    serialise,
)
from sipflow.sdp.srtp import SetupRole

WEBRTC = (
    b"v=0\r\n"
    b"o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"t=0 0\r\n"
    b"a=group:BUNDLE 0 1\r\n"
    b"a=ice-options:trickle\r\n"
    b"a=fingerprint:sha-256 19:E2:1C:3B:4B:9F:81:E6:B8:5C:F4:A5:A8:D8:73:04:BB:05:2F:70:"
    b"9F:04:A9:0E:05:E9:26:33:E8:70:88:A2\r\n"
    b"m=audio 9 UDP/TLS/RTP/SAVPF 111 0 126\r\n"
    b"c=IN IP4 0.0.0.0\r\n"
    b"a=rtcp:9 IN IP4 0.0.0.0\r\n"
    b"a=ice-ufrag:EsAw\r\n"
    b"a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n"
    b"a=candidate:1 1 udp 2122260223 192.0.2.5 54321 typ host generation 0\r\n"
    b"a=setup:actpass\r\n"
    b"a=mid:0\r\n"
    b"a=sendrecv\r\n"
    b"a=rtcp-mux\r\n"
    b"a=rtpmap:111 opus/48000/2\r\n"
    b"a=fmtp:111 minptime=10;useinbandfec=1\r\n"
    b"a=rtpmap:126 telephone-event/8000\r\n"
    b"a=ptime:20\r\n"
    b"a=x-unknown-thing:keep me\r\n"
    b"m=video 0 UDP/TLS/RTP/SAVPF 96\r\n"
    b"a=mid:1\r\n"
    b"a=inactive\r\n"
    b"a=rtpmap:96 VP8/90000\r\n"
)


def test_typed_accessors_on_a_webrtc_offer() -> None:
    s = parse_sdp(WEBRTC)
    assert s.problems == ()
    assert s.version == "0"
    assert s.origin == Origin("-", "4611731400430051336", "2", "IN", "IP4", "127.0.0.1")
    assert s.session_name == "-"
    assert s.timing == Timing(0, 0)
    assert [(g.semantics, g.mids) for g in s.groups] == [("BUNDLE", ("0", "1"))]
    audio, video = s.media
    assert audio.m == MediaDesc(
        "audio", 9, None, "UDP/TLS/RTP/SAVPF", ("111", "0", "126"), (111, 0, 126)
    )
    assert audio.rtpmaps[111] == RtpMap(111, "opus", 48000, 2)
    assert audio.codec(0) == RtpMap(0, "PCMU", 8000, 1)  # RFC 3551 static, no rtpmap needed
    assert audio.fmtp(111) == "minptime=10;useinbandfec=1"
    assert audio.ptime == 20.0
    assert audio.rtcp_mux and not video.rtcp_mux
    assert audio.rtcp is not None and audio.rtcp.port == 9
    assert audio.ice_ufrag == "EsAw" and audio.ice_pwd == "P2uYro0UCOQ4zxjKXaWCBui1"
    assert audio.candidates == (
        Candidate("1", 1, "udp", 2122260223, "192.0.2.5", 54321, "host", ("generation", "0")),
    )
    assert audio.mid == "0" and video.mid == "1"
    assert s.connection_of(0) == Connection("IN", "IP4", "0.0.0.0")
    assert s.connection_of(1) is None
    assert s.direction_of(0) is Direction.SENDRECV and s.direction_of(1) is Direction.INACTIVE
    assert s.setup_of(0) is SetupRole.ACTPASS
    (fp,) = s.fingerprints_of(1)  # session-level fingerprint applies to every m-line
    assert fp.hash_func == "sha-256" and fp.octets == 32 == fp.expected_octets
    assert s.ice_of(0) and not s.ice_of(1)
    unknown = [a for a in audio.attributes if a.key == "x-unknown-thing"]
    assert unknown[0].value == "keep me"
    assert serialise(s) == WEBRTC


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"v=0",
        b"v=0\n",
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\ns=-\rt=0 0\r\n\r\n",  # mixed line endings
        b"v=0\r\ns=\xff\xfe not utf-8\r\n",
        b"\r\n\r\n",
        b"   v=0\r\n  m=audio\r\n",
        b"v=0\r\nm=audio 0 RTP/AVP\r\na=rtpmap:\r\na=crypto:x\r\na=setup:maybe",
        WEBRTC.replace(b"\r\n", b"\n"),
        WEBRTC + b"\r\n\r\n\r\n",
    ],
)
def test_serialise_is_byte_exact(data: bytes) -> None:
    assert serialise(parse_sdp(data)) == data


@pytest.mark.parametrize(
    "data",
    [
        b"v=0\r\ns=-\r\n",
        b"v=0\ns=-\n",
        b"v=0\rs=-\r",
        b"v=0\r\ns=-\nt=0 0\rm=x\r\n",
        b"v=0\n\rs=-\r\r\n\n",  # LF CR is two endings, not one
        b"v=0\r\n\r\ns=-",
        b"\n",
        b"\r",
    ],
)
def test_lines_split_on_every_ending_kind(data: bytes) -> None:
    """Each line's number, text and ending, against a split written out here: one ending
    is CRLF, or else a lone CR or LF (RFC 8866 §5 asks for CRLF; peers send all three)."""
    text, want, start, i = data.decode(), [], 0, 0
    while i < len(text):
        if text[i] in "\r\n":
            eol = "\r\n" if text[i : i + 2] == "\r\n" else text[i]
            want.append((len(want), text[start:i], eol))
            i += len(eol)
            start = i
        else:
            i += 1
    if start < len(text):
        want.append((len(want), text[start:], ""))
    assert [(ln.index, ln.text, ln.eol) for ln in parse_sdp(data).lines] == want


def test_every_truncation_of_a_real_sdp_round_trips() -> None:
    for n in range(len(WEBRTC) + 1):
        s = parse_sdp(WEBRTC[:n])
        assert serialise(s) == WEBRTC[:n]


def test_problems_name_the_line() -> None:
    data = (
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 '/**/OR/**/'1'\r\nt=0 0\r\n"
        b"m=audio 0 RTP/SAVP 19\r\na=rtpmap:19 \r\ngarbage here\r\nm=video 0 RTP/AVP\r\n\r\n"
    )
    s = parse_sdp(data)
    got = {(p.kind, p.line) for p in s.problems}
    assert (ProblemKind.VALUE, 3) in got  # c= with an injection attempt as address
    assert (ProblemKind.VALUE, 6) in got  # the empty rtpmap of the seed trace's answer
    assert (ProblemKind.SYNTAX, 7) in got
    assert (ProblemKind.VALUE, 8) in got  # m= with no formats is kept but reported
    assert (ProblemKind.BLANK, 9) in got
    assert len(s.media) == 2 and s.media[1].m is not None and s.media[1].m.fmts == ()
    assert serialise(s) == data


def test_a_well_formed_sdp_has_no_problems() -> None:
    s = parse_sdp(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")
    assert s.problems == ()


def test_structure_problems() -> None:
    s = parse_sdp(b"o=- 1 1 IN IP4 192.0.2.1\r\nx=1\r\nm=audio 1 RTP/AVP 0\r\n")
    details = " | ".join(p.detail for p in s.problems)
    assert "first line is not v=" in details
    assert "unknown line type 'x'" in details
    assert "lacks s=, t=" in details


def test_seed_trace_bodies_round_trip_and_parse() -> None:
    if not SEED.exists():
        pytest.skip(f"{SEED} absent (../shared not on this machine)")
    bodies = [m.body for m in seed_messages() if m.body]
    assert len(bodies) == 5
    for body in bodies:
        s = parse_sdp(body)
        assert serialise(s) == body
    offer = parse_sdp(bodies[1])
    assert [sec.m.proto for sec in offer.media if sec.m] == ["RTP/SAVP", "RTP/AVP"]
    tags = [c.tag for c in offer.media[0].crypto]
    assert tags == list(range(1, 10))


def _one_stream(m_line: str, *attrs: str) -> bytes:
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0", m_line]
    return ("\r\n".join([*lines, *attrs]) + "\r\n").encode()


def test_sections_with_the_same_attribute_lines_share_what_is_built_from_them() -> None:
    # only the port (and o=) differ from call to call: the formats are built once
    a = parse_sdp(_one_stream("m=audio 4000 RTP/AVP 8 101", "a=rtpmap:101 telephone-event/8000"))
    b = parse_sdp(_one_stream("m=audio 4002 RTP/AVP 8 101", "a=rtpmap:101 telephone-event/8000"))
    assert a.media[0].formats is b.media[0].formats
    assert [f.label for f in b.media[0].formats] == ["PCMA/8000", "telephone-event/8000"]
    assert (a.media[0].m, b.media[0].m) == (
        MediaDesc("audio", 4000, None, "RTP/AVP", ("8", "101"), (8, 101)),
        MediaDesc("audio", 4002, None, "RTP/AVP", ("8", "101"), (8, 101)),
    )
    assert b.serialise() == _one_stream(
        "m=audio 4002 RTP/AVP 8 101", "a=rtpmap:101 telephone-event/8000"
    )


@pytest.mark.parametrize(
    ("m_line", "labels"),
    [
        ("m=audio 4000 RTP/AVP 0 8", ["PCMU/8000", "PCMA/8000"]),  # other formats
        ("m=audio 4000 RTP/AVP 8", ["PCMA/8000"]),
        ("m=image 4000 udptl 8", ["8"]),  # not an RTP profile: "8" is a name, not PT 8
    ],
)
def test_sections_with_the_same_attributes_but_other_formats_are_not_mixed_up(
    m_line: str, labels: list[str]
) -> None:
    parse_sdp(_one_stream("m=audio 4000 RTP/AVP 8", "a=sendrecv"))  # the cached one
    sdp = parse_sdp(_one_stream(m_line, "a=sendrecv"))
    assert [f.label for f in sdp.media[0].formats] == labels
    assert sdp.direction_of(0) is Direction.SENDRECV
