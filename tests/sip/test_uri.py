"""URIs, name-addr / addr-spec values and Via values (RFC 3261 §19.1, §20.10, §20.42, §25)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sipflow.errors import ParseError
from sipflow.sip import uri
from sipflow.sip.uri import parse_name_addr, parse_uri, parse_via, split_hostport


def test_sip_uri_parts() -> None:
    u = parse_uri(
        "sips:alice:secret@Atlanta.Example.COM:5061;transport=TLS;lr;maddr=[::1]?subject=hi&x="
    )
    assert (u.scheme, u.user, u.password, u.host, u.port) == (
        "sips",
        "alice",
        "secret",
        "atlanta.example.com",
        5061,
    )
    assert u.params == {"transport": "TLS", "lr": "", "maddr": "[::1]"}
    assert u.headers == {"subject": "hi", "x": ""}


def test_user_part_with_reserved_characters_and_escapes() -> None:
    u = parse_uri("sip:user;par=u%40example.net@example.com")
    assert (u.user, u.host, u.params) == ("user;par=u%40example.net", "example.com", {})
    u = parse_uri("sip:%00%00@host5.example.com")
    assert u.user == "%00%00"
    u = parse_uri("sip:+1-212-555-1212:1234@gateway.com;user=phone")
    assert (u.user, u.password, u.params) == ("+1-212-555-1212", "1234", {"user": "phone"})


def test_ipv6_references() -> None:
    u = parse_uri("sip:[2001:DB8::10]:5070;transport=udp")
    assert (u.host, u.port) == ("[2001:db8::10]", 5070)
    assert split_hostport("[::1]") == ("[::1]", None)
    assert split_hostport("example.com:5060") == ("example.com", 5060)


@pytest.mark.parametrize(
    "bad",
    [
        "sip:user@example.com; lr",
        "no-scheme",
        "sip:",
        "sip:a@b:99999",
        "sip:a@b;;lr",
        "sip:a b@c",
        "sip:user@[2001:db8::1",
        "sip:us<er@host",
        "sip:a@b?h",
    ],
)
def test_bad_uris_raise_parse_error_naming_the_rule(bad: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_uri(bad)
    assert "RFC 3261" in str(info.value)


def test_tel_and_other_schemes() -> None:
    t = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert (t.scheme, t.user, t.params) == (
        "tel",
        "+1-201-555-0123",
        {"phone-context": "example.com"},
    )
    o = parse_uri("soap.beep://192.0.2.103:3002")
    assert (o.scheme, o.user, o.host) == ("soap.beep", None, "//192.0.2.103:3002")


def test_name_addr_forms() -> None:
    n = parse_name_addr('"Alice \\"A\\" <x>" <sip:alice@a.example;lr>;tag=88;x="a;b"')
    assert n.display == 'Alice \\"A\\" <x>' and n.uri == "sip:alice@a.example;lr"
    assert n.params == {"tag": "88", "x": '"a;b"'} and n.issues == ()
    n = parse_name_addr("caller<sip:caller@example.com>;tag=323")
    assert (n.display, n.uri, n.tag) == ("caller", "sip:caller@example.com", "323")


def test_addr_spec_parameters_belong_to_the_header() -> None:
    # RFC 3261 §20.10: without <>, ";" starts header parameters, not URI parameters
    n = parse_name_addr("sip:+19725552222@gw1.example.net;unknownparam;tag=1")
    assert n.uri == "sip:+19725552222@gw1.example.net"
    assert n.params == {"unknownparam": "", "tag": "1"}
    assert parse_name_addr("sip:u@h?Route=x").issues  # "?" needs <>


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("Bell, Alexander <sip:a@b>", "display-name"),
        ('"W" < sip:t@example.org >', "LWS inside"),
        ("<sip:a@b>;;tag=1", "empty parameter"),
        ("<sip:a@b>;tag=1 2", "malformed parameter"),
    ],
)
def test_name_addr_issues(value: str, fragment: str) -> None:
    n = parse_name_addr(value)
    assert any(fragment in i and "§" in i for i in n.issues), n.issues


@pytest.mark.parametrize(
    "bad", ['"Mr. J. User <sip:j@e.com>', '"x" sip:a@b', "<sip:a@b", "<>", ";tag=1"]
)
def test_name_addr_errors(bad: str) -> None:
    with pytest.raises(ParseError):
        parse_name_addr(bad)


def test_via_forms() -> None:
    v = parse_via(
        "SIP  /   2.0\t/UDP    192.0.2.2 : 5070 ;branch = z9hG4bK1 ; rport ;received=10.0.0.1"
    )
    assert (v.protocol, v.transport, v.host, v.port) == ("SIP/2.0", "UDP", "192.0.2.2", 5070)
    assert (v.branch, v.rport, v.received, v.issues) == ("z9hG4bK1", None, "10.0.0.1", ())
    v = parse_via(
        "SIP/2.0/TLS [2001:db8::9:1]:5061;branch=z9hG4bKas;received=[2001:db8::9:255];rport=4"
    )
    assert (v.sent_by, v.received, v.rport) == ("[2001:db8::9:1]:5061", "2001:db8::9:255", 4)
    v = parse_via("SIP/2.0/UDP h;received=not-an-ip")
    assert v.issues and "via-received" in v.issues[0]


@pytest.mark.parametrize("bad", ["SIP/2.0 host", "SIP/2.0/UDP", "SIP/2.0/UDP ;branch=1", ";"])
def test_via_errors(bad: str) -> None:
    with pytest.raises(ParseError):
        parse_via(bad)


# uri._last_param: a value whose last parameter is new (a tag, a branch) reuses the parse
# of the rest. Each value here must parse exactly as the whole value does from scratch.
_NAME_ADDRS = [
    '"Alice" <sip:alice@atlanta.example.com>',
    "Bob Smith <sip:bob@biloxi.example.com>;x=1",
    "<sip:carol@chicago.example.com>",
    "sip:dave@example.com",
    "tel:+15551234",
    '<sip:a@b>;p="q;r"',
    "<sip:a@b> ",
    "<sip:a@b>\x0c",  # not SWS: the whole value is refused by the fast regex
    "<sip:a b@c>",
    '"unterminated <sip:a@b>',
    "<sip:a@b>;",
    "",
]
_VIAS = [
    "SIP/2.0/UDP 192.0.2.1:5060",
    "SIP / 2.0 / TCP client.example.com ",
    "SIP/2.0/UDP 192.0.2.1\x0c",
    "SIP/2.0/UDP [2001:db8::1]:5070;rport",
    "SIP/2.0/UDP host:99999",
    'SIP/2.0/UDP h;x="a;b"',
    "SIP/2.0/UDP h;received=10.0.0.1",
    "SIP/2.0/UDP",
]
_TAILS = [";tag=1", ";TAG=Ab.c-9", ";branch=z9hG4bK-1", ";tag=1;tag=2", ";lr", ';tag="q"']


def _outcome(parse: Callable[[], object]) -> object:
    try:
        value = parse()
    except ParseError as exc:
        return str(exc)
    return repr(value), list(getattr(value, "params", {}).items())  # params in order too


@pytest.mark.parametrize("tail", _TAILS)
@pytest.mark.parametrize("base", _NAME_ADDRS)
def test_name_addr_with_a_new_last_param_parses_as_from_scratch(base: str, tail: str) -> None:
    _outcome(lambda: parse_name_addr(f"{base};tag=earlier"))  # memo warm
    text = (base + tail).strip()
    scratch = _outcome(lambda: uri._name_addr_fast(text) or uri._name_addr_slow(text))
    assert _outcome(lambda: parse_name_addr(base + tail)) == scratch


@pytest.mark.parametrize("tail", _TAILS)
@pytest.mark.parametrize("base", _VIAS)
def test_via_with_a_new_last_param_parses_as_from_scratch(base: str, tail: str) -> None:
    _outcome(lambda: parse_via(f"{base};branch=earlier"))  # memo warm
    text = (base + tail).strip()
    fast = uri._via_fast(text) if "received" not in text else None
    scratch = _outcome(lambda: fast or uri._via_slow(text))
    assert _outcome(lambda: parse_via(base + tail)) == scratch
