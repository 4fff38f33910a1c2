"""Ordered headers: canonical names, compact forms, comma lists (RFC 3261 §7.3)."""

from __future__ import annotations

from sipflow.sip.headers import Header, Headers, canonical, split_commas
from sipflow.sip.message import parse_message


def test_canonical_names() -> None:
    assert canonical("Call-ID") == canonical("i") == canonical(" CALL-id ") == "call-id"
    assert canonical("v") == "via" and canonical("X-Custom") == "x-custom"
    assert Header("f", "x").key == "from"  # built in code: key computed on demand


def test_split_commas_outside_quotes_and_brackets() -> None:
    value = '"Doe, J." <sip:a@b;x=1,2>;q=0.5 , <sip:c@d>,sip:e@f, "x\\",y" <sip:g@h>'
    assert split_commas(value) == [
        '"Doe, J." <sip:a@b;x=1,2>;q=0.5',
        "<sip:c@d>",
        "sip:e@f",
        '"x\\",y" <sip:g@h>',
    ]
    assert split_commas("  single  ") == ["single"] and split_commas(" ") == []
    assert split_commas("a,,b") == ["a", "b"]


def test_lookup_keeps_wire_order_and_case() -> None:
    hs = Headers(
        (
            Header("Via", "SIP/2.0/UDP a, SIP/2.0/UDP b"),
            Header("v", "SIP/2.0/UDP c"),
            Header("WWW-Authenticate", 'Digest realm="x", nonce="y"'),
            Header("To", "t"),
        )
    )
    assert hs.get("VIA") == "SIP/2.0/UDP a, SIP/2.0/UDP b"
    assert hs.get_all("via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b", "SIP/2.0/UDP c"]
    assert hs.count("Via") == 2 and hs.get("nope") is None
    assert hs.get_all("www-authenticate") == ['Digest realm="x", nonce="y"']  # not a list
    assert [h.name for h in hs] == ["Via", "v", "WWW-Authenticate", "To"]
    assert hs.keys() == ["via", "www-authenticate", "to"]


def test_parsed_headers_keep_raw_lines() -> None:
    data = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\n"
        b"Subject: one\r\n two\r\nTo: <sip:a@b>;tag=1\r\nFrom: <sip:c@d>;tag=2\r\n"
        b"Call-ID: x\r\nCSeq: 1 INVITE\r\n\r\n"
    )
    msg = parse_message(data)
    subject = next(h for h in msg.headers if h.key == "subject")
    assert (subject.name, subject.value, subject.raw) == (
        "Subject",
        "one two",
        "Subject: one\r\n two",
    )
    assert msg.problems == ()
