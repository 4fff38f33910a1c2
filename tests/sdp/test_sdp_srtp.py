"""SDES crypto lines (RFC 4568) and DTLS-SRTP attributes (RFC 8122, RFC 4145)."""

from __future__ import annotations

import base64

import pytest

from sipflow.errors import ParseError
from sipflow.sdp.srtp import (
    SETUP_ANSWERS,
    SetupRole,
    parse_crypto,
    parse_fingerprint,
    parse_setup,
    suite_spec,
)


def key(n: int, pad: bool = True) -> str:
    text = base64.b64encode(bytes(range(n))).decode()
    return text if pad else text.rstrip("=")


@pytest.mark.parametrize(
    ("suite", "length"),
    [
        ("AES_CM_128_HMAC_SHA1_80", 30),
        ("AES_CM_128_HMAC_SHA1_32", 30),
        ("AES_CM_128_NULL_AUTH", 30),
        ("AES_192_CM_HMAC_SHA1_80", 38),
        ("AES_CM_192_HMAC_SHA1_80", 38),
        ("AES_256_CM_HMAC_SHA1_32", 46),
        ("AES_CM_256_HMAC_SHA1_80", 46),
        ("AEAD_AES_128_GCM", 28),
        ("AEAD_AES_128_GCM_8", 28),
        ("AEAD_AES_256_GCM", 44),
        ("AEAD_AES_256_GCM_8", 44),
    ],
)
def test_key_salt_length_per_suite(suite: str, length: int) -> None:
    spec = suite_spec(suite)
    assert spec is not None and spec.key_salt == length
    c = parse_crypto(f"1 {suite} inline:{key(length, pad=False)}")
    assert c.keys[0].key_salt_len == length


def test_unknown_suite_has_no_spec() -> None:
    assert suite_spec("MY_OWN_CIPHER") is None


def test_crypto_with_lifetime_mki_and_session_params_keeps_no_key() -> None:
    k = key(30)
    c = parse_crypto(f"3 AES_CM_128_HMAC_SHA1_80 inline:{k}|2^20|1:4 KDR=1 UNENCRYPTED_SRTCP")
    assert (c.tag, c.suite) == (3, "AES_CM_128_HMAC_SHA1_80")
    (kp,) = c.keys
    assert (kp.method, kp.key_salt_len, kp.lifetime, kp.mki) == ("inline", 30, "2^20", "1:4")
    assert c.session_params == ("KDR=1", "UNENCRYPTED_SRTCP")
    assert k not in repr(c) and k not in repr(c.to_dict())


def test_two_keys_and_a_bad_base64_key() -> None:
    c = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{key(30)}|1:4;inline:{key(30)}|2:4")
    assert [k.mki for k in c.keys] == ["1:4", "2:4"]
    assert parse_crypto("1 AES_CM_128_HMAC_SHA1_80 inline:@@@@").keys[0].key_salt_len is None


@pytest.mark.parametrize(
    "value",
    ["", "x AES_CM_128_HMAC_SHA1_80 inline:abc", "1 AES_CM_128_HMAC_SHA1_80", "1 S inline:a|zz"],
)
def test_malformed_crypto_raises_parse_error(value: str) -> None:
    with pytest.raises(ParseError):
        parse_crypto(value)


def test_fingerprint_and_setup() -> None:
    fp = parse_fingerprint("SHA-1 4a:ad:b9:b1:3f:82:18:3b:54:02:12:df:3e:5d:49:6b:19:e5:7c:ab")
    assert fp.hash_func == "SHA-1" and fp.octets == 20 == fp.expected_octets
    assert fp.value.startswith("4A:AD")
    with pytest.raises(ParseError):
        parse_fingerprint("sha-256 zz:11")
    assert parse_setup("ActPass") is SetupRole.ACTPASS
    with pytest.raises(ParseError):
        parse_setup("both")


def test_setup_answer_table() -> None:
    assert SETUP_ANSWERS[SetupRole.ACTPASS] == {SetupRole.ACTIVE, SetupRole.PASSIVE}
    assert SetupRole.ACTIVE not in SETUP_ANSWERS[SetupRole.ACTIVE]
    assert SetupRole.ACTPASS not in set().union(*SETUP_ANSWERS.values())


def test_dtls_profiles_are_rtp_and_sctp_over_dtls_not_msrp_over_tls() -> None:
    from sipflow.sdp.srtp import is_dtls_proto

    for proto in ("UDP/TLS/RTP/SAVPF", "UDP/TLS/RTP/SAVP", "TCP/TLS/RTP/SAVP", "UDP/DTLS/SCTP"):
        assert is_dtls_proto(proto), proto
    for proto in ("TCP/TLS/MSRP", "TCP/MSRP", "RTP/SAVP", "RTP/AVP"):
        assert not is_dtls_proto(proto), proto


def test_msrp_over_tls_gets_no_dtls_fingerprint_finding() -> None:
    """Blink's chat over MSRP (m=message ... TCP/TLS/MSRP, RFC 4975) in its SIP trace: 25
    sdp.dtls_fingerprint errors before, as if it were DTLS-SRTP."""
    from pathlib import Path

    from sipflow.api import analyze

    log = (
        Path(__file__).resolve().parents[3]
        / "shared/corpus/logs/blink_sip_client_trace_tls_publish_invite_msrp.log"
    )
    if not log.exists():
        pytest.skip(f"{log} is absent (shared corpus not available)")
    trace = analyze([log])
    assert not [f for f in trace.finding_list if f.code == "sdp.dtls_fingerprint"]
    msrp = [
        ln
        for m in trace.call_media
        for x in m.exchanges
        for ln in x.lines
        if ln.offer_proto == "TCP/TLS/MSRP"
    ]
    assert msrp and all(ln.srtp.value == "none" for ln in msrp)
