"""Digest authentication against the worked examples of RFC 2617 §3.5 and RFC 7616 §3.9.1."""

from __future__ import annotations

import pytest

from sipflow.errors import ParseError
from sipflow.sip.auth import (
    Algorithm,
    authorization,
    challenge_value,
    digest_response,
    parse_challenge,
    parse_credentials,
    verify,
)

# RFC 7616 §3.9.1 (same values for MD5 and SHA-256)
RFC7616 = dict(
    user="Mufasa",
    realm="http-auth@example.org",
    password="Circle of Life",
    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    method="GET",
    uri="/dir/index.html",
    qop="auth",
    nc="00000001",
    cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
)


@pytest.mark.parametrize(
    ("alg", "expected"),
    [
        (Algorithm.MD5, "8ca523f5e9506fed4657c9700eebdbec"),
        (Algorithm.SHA256, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_examples(alg: Algorithm, expected: str) -> None:
    assert digest_response(alg, **RFC7616) == expected


def test_rfc2617_example() -> None:
    got = digest_response(
        Algorithm.MD5,
        "Mufasa",
        "testrealm@host.com",
        "Circle Of Life",
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "GET",
        "/dir/index.html",
        "auth",
        "00000001",
        "0a4f113b",
    )
    assert got == "6629fae49393a05397450978507c4ef1"


def test_rfc7616_challenge_parses() -> None:
    ch = parse_challenge(
        'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    assert ch.algorithm is Algorithm.SHA256
    assert ch.qop == ("auth", "auth-int")
    assert ch.opaque == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


@pytest.mark.parametrize("alg", [Algorithm.MD5, Algorithm.SHA256, Algorithm.SHA256_SESS])
@pytest.mark.parametrize("qop", [True, False])
def test_round_trip_client_to_server(alg: Algorithm, qop: bool) -> None:
    value = challenge_value("sipflow.test", "abc123", alg)
    if not qop:
        value = value.replace(', qop="auth"', "")
    ch = parse_challenge(value)
    line = authorization(ch, "alice", "secret", "INVITE", "sip:100@example.org", "c0ffee")
    cred = parse_credentials(line)
    assert cred.algorithm is alg and (cred.qop == "auth") is qop
    assert verify(cred, "secret", "INVITE")
    assert not verify(cred, "wrong", "INVITE")
    assert not verify(cred, "secret", "BYE")


@pytest.mark.parametrize(
    "bad",
    ["Basic realm=x", 'Digest realm="x"', "Digest realm=x, nonce=y, algorithm=SHA-1", "Digest ==="],
)
def test_malformed_challenges_raise_parse_error(bad: str) -> None:
    with pytest.raises(ParseError):
        parse_challenge(bad)
