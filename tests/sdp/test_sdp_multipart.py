"""Finding the SDP in a body: application/sdp, multipart/mixed and /alternative, nesting."""

from __future__ import annotations

import pytest

from sipflow.errors import ParseError
from sipflow.sdp.multipart import media_type, parse_multipart, sdp_body

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
XML = b'<?xml version="1.0"?>\r\n<recording xmlns="urn:ietf:params:xml:ns:recording:1"/>\r\n'


def siprec(boundary: str = "foobar") -> bytes:
    # RFC 7866 §8.1.1 layout: SDP part, then the recording metadata part
    return (
        f"--{boundary}\r\nContent-Type: application/sdp\r\n\r\n".encode()
        + SDP
        + f"\r\n--{boundary}\r\nContent-Type: application/rs-metadata+xml\r\n"
        "Content-Disposition: recording-session\r\n\r\n".encode()
        + XML
        + f"\r\n--{boundary}--\r\n".encode()
    )


def test_plain_sdp_and_missing_content_type() -> None:
    assert sdp_body("application/SDP", SDP) == SDP
    assert sdp_body(None, SDP) == SDP
    assert sdp_body(None, b"hello") is None
    assert sdp_body("application/pidf+xml", XML) is None
    assert sdp_body("application/sdp", b"") is None


def test_siprec_multipart_mixed() -> None:
    ct = 'multipart/mixed;boundary="foobar"'
    parts = parse_multipart(ct, siprec())
    assert [p.content_type for p in parts] == ["application/sdp", "application/rs-metadata+xml"]
    assert parts[1].body == XML
    assert sdp_body(ct, siprec()) == SDP


def test_nested_alternative_with_preamble_and_lf_endings() -> None:
    inner = siprec("in").replace(b"\r\n", b"\n")
    outer = (
        b"preamble text\r\n--out\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b'--out\r\nContent-Type: multipart/alternative; boundary="in"\r\n\r\n'
        + inner
        + b"\r\n--out--\r\n"
    )
    found = sdp_body("multipart/mixed; boundary=out", outer)
    assert found == SDP.replace(b"\r\n", b"\n")


def test_parameters_with_quotes() -> None:
    assert media_type('Multipart/Mixed; boundary="a;b"; x=1') == (
        "multipart/mixed",
        {"boundary": "a;b", "x": "1"},
    )


@pytest.mark.parametrize(
    ("ct", "body"),
    [("multipart/mixed", b"--x\r\n\r\nv=0\r\n--x--"), ("multipart/mixed; boundary=zz", SDP)],
)
def test_unreadable_multipart_raises_parse_error(ct: str, body: bytes) -> None:
    with pytest.raises(ParseError):
        sdp_body(ct, body)
