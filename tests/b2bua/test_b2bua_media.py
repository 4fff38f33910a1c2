"""SDES on an SRTP leg: the offer, the answer's choice, and pylibsrtp round trips."""

from __future__ import annotations

import random
import struct

import pylibsrtp
import pytest

from sipflow.b2bua.media import SUITES, answer_sdes, crypto_line, offer_sdes, selected, srtp_pair
from sipflow.b2bua.ua import sdp
from sipflow.sdp.srtp import parse_crypto, suite_spec

RTP = struct.pack("!BBHII", 0x80, 0, 1, 160, 0x1234ABCD) + bytes(range(160))


def test_offer_carries_every_suite_with_its_key_size() -> None:
    rnd = random.Random(1)
    body, offered = offer_sdes(sdp("a", "127.0.0.1", 4000), rnd.randbytes)
    text = body.decode()
    assert "m=audio 4000 RTP/SAVP 0 8 101" in text
    lines = [ln for ln in text.split("\r\n") if ln.startswith("a=crypto:")]
    assert [parse_crypto(ln[9:]).suite for ln in lines] == list(SUITES)
    for ln, c in zip(lines, offered, strict=True):
        attr = parse_crypto(ln[9:])
        spec = suite_spec(attr.suite)
        assert spec is not None and attr.keys[0].key_salt_len == spec.key_salt == len(c.key)


@pytest.mark.parametrize("first", range(len(SUITES)))
def test_negotiated_keys_protect_and_unprotect(first: int) -> None:
    rnd = random.Random(first)
    body, offered = offer_sdes(sdp("a", "127.0.0.1", 4000), rnd.randbytes)
    # the answerer takes the suite at position `first` (drop the ones before it)
    trimmed = b"\r\n".join(
        ln
        for ln in body.split(b"\r\n")
        if not any(ln.startswith(f"a=crypto:{i + 1} ".encode()) for i in range(first))
    )
    choice = answer_sdes(trimmed, rnd.randbytes)
    assert choice is not None and choice.suite == SUITES[first]
    answer = sdp("b", "127.0.0.1", 5000, crypto=True) + crypto_line(choice)
    got = selected(answer)
    assert got == choice
    ours = next(c for c in offered if c.tag == choice.tag)
    a_out, a_in = srtp_pair(ours, got)
    b_out, b_in = srtp_pair(choice, ours)
    protected = a_out.protect(RTP)
    assert protected != RTP and len(protected) > len(RTP)
    assert b_in.unprotect(protected) == RTP
    assert a_in.unprotect(b_out.protect(RTP)) == RTP
    tampered = protected[:-1] + bytes([protected[-1] ^ 1])
    with pytest.raises(pylibsrtp.Error):
        srtp_pair(choice, ours)[1].unprotect(tampered)
