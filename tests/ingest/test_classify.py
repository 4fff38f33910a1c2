"""SIP recognised by content: exact classification and the vectorised prefilter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sipflow.ingest.classify import (
    Kind,
    classify_payload,
    is_websocket_upgrade,
    prefilter,
)
from sipflow.ingest.decode import Packet, decode_frame
from sipflow.ingest.pcap import open_capture

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus" / "pcaps"

CASES = [
    (b"INVITE sip:bob@example.com SIP/2.0\r\nVia: x\r\n\r\n", Kind.SIP),
    (b"ACK sip:bob@example.com SIP/2.0\r\n", Kind.SIP),
    (b"BYE sip:bob@example.com SIP/2.0\n", Kind.SIP),  # bare LF
    (b"FOOBAR sip:x SIP/2.0\r\n", Kind.SIP),  # extension method (RFC 3261 §27.4)
    (b"SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\n\r\n", Kind.SIP),
    (b"SIP/2.0 180\r\n", Kind.SIP),  # empty reason phrase
    (b"sip/2.0 486 Busy Here\r\n", Kind.SIP),  # version is case-insensitive (§7.1)
    (b"INVITE sip:bob@example.com SIP/3.0\r\n", Kind.MALFORMED_SIP),
    (b"INVITE\r\n", Kind.MALFORMED_SIP),
    (b"SIP/2.0 2000 OK\r\n", Kind.MALFORMED_SIP),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Kind.OTHER),  # HTTP on 5060
    (b"HTTP/1.1 200 OK\r\n\r\n", Kind.OTHER),
    (b"\x80\x00\x00\x01" + bytes(168), Kind.OTHER),  # RTP
    (b"\r\n\r\n", Kind.KEEPALIVE_PING),  # RFC 5626 §4.4.1
    (b"\r\n", Kind.KEEPALIVE_PONG),
    (b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12), Kind.STUN),  # RFC 5389 binding request
    (b"", Kind.OTHER),
]


@pytest.mark.parametrize(("payload", "kind"), CASES)
def test_classify_payload(payload: bytes, kind: Kind) -> None:
    assert classify_payload(payload) is kind


def test_classification_is_the_same_when_the_first_line_is_remembered() -> None:
    """classify_payload remembers the kind of each first line (classify._LINE_KINDS): every
    case classified again, in reverse and with another body, gives the same kind."""
    for payload, kind in [*CASES, *reversed(CASES)]:
        assert classify_payload(payload) is kind
        if b"\n" in payload and kind in (Kind.SIP, Kind.MALFORMED_SIP, Kind.OTHER):
            assert classify_payload(payload + b"other body\r\n") is kind


def test_prefilter_never_drops_what_classify_accepts() -> None:
    payloads = [p for p, _ in CASES]
    buf = np.frombuffer(b"".join(payloads) + bytes(16), np.uint8)
    lengths = np.array([len(p) for p in payloads], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    kinds = prefilter(buf, offsets, lengths)
    for p, k in zip(payloads, kinds.tolist(), strict=True):
        exact = classify_payload(p)
        if exact in (Kind.SIP, Kind.MALFORMED_SIP):
            assert k == Kind.CANDIDATE, p
        elif exact in (Kind.KEEPALIVE_PING, Kind.KEEPALIVE_PONG, Kind.STUN):
            assert k == exact, p
        elif k != Kind.CANDIDATE:
            assert k == Kind.OTHER


@pytest.mark.corpus
def test_prefilter_on_every_corpus_udp_payload() -> None:
    """Over every UDP payload of the corpus: whatever the exact check calls SIP passed the
    prefilter, and the prefilter lets few non-SIP payloads through."""
    if not CORPUS.is_dir():
        pytest.skip("shared corpus absent")
    payloads = []
    for path in sorted(CORPUS.glob("*.pcap*")):
        with open_capture(str(path)) as cap:
            for ch in cap.chunks():
                for i in range(len(ch)):
                    res = decode_frame(int(ch.link_type[i]), ch.data(i))
                    if isinstance(res, Packet) and res.protocol == 17:
                        payloads.append(res.payload)
    buf = np.frombuffer(b"".join(payloads) + bytes(16), np.uint8)
    lengths = np.array([len(p) for p in payloads], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    kinds = prefilter(buf, offsets, lengths).tolist()
    sip = [classify_payload(p) in (Kind.SIP, Kind.MALFORMED_SIP) for p in payloads]
    assert sum(sip) > 900
    assert all(k == Kind.CANDIDATE for k, s in zip(kinds, sip, strict=True) if s)
    false_candidates = sum(k == Kind.CANDIDATE and not s for k, s in zip(kinds, sip, strict=True))
    assert false_candidates < 0.01 * len(payloads)


def test_websocket_upgrade() -> None:
    req = (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
    )
    assert is_websocket_upgrade(req)
    assert not is_websocket_upgrade(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not is_websocket_upgrade(b"INVITE sip:x SIP/2.0\r\n")
