"""StreamFramer: RFC 3261 §18.3 Content-Length framing over a byte stream."""

from __future__ import annotations

import pytest

from sipflow.ingest.types import Datagram, Endpoint, Transport
from sipflow.sip.framing import ByteFrames, FramedMessage, StreamFramer

A = Endpoint("192.0.2.1", 5060)
B = Endpoint("192.0.2.2", 5060)

BODY = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK1\r\n"
    b"Call-ID: a1\r\nCSeq: 1 INVITE\r\n"
    b"l :  " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)
OK = (
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK1\r\n"
    b"CONTENT-LENGTH:" + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)
ACK = b"ACK sip:bob@example.com SIP/2.0\r\nCall-ID: a1\r\nContent-Length: 0\r\n\r\n"
STREAM = INVITE + OK + ACK


def dg(payload: bytes, frame: int, ts: int | None = None, gap: bool = False) -> Datagram:
    ts = frame * 1000 if ts is None else ts
    return Datagram(A, B, Transport.TCP, payload, (frame,), ts, stream=1, gap=gap)


def feed_chunks(framer: StreamFramer, chunks: list[bytes], gap_at: int = -1) -> list[FramedMessage]:
    out: list[FramedMessage] = []
    for i, chunk in enumerate(chunks, start=1):
        out += framer.feed(dg(chunk, i, gap=i == gap_at))
    return out + framer.flush()


def test_one_message_per_segment() -> None:
    f = StreamFramer()
    msgs = feed_chunks(f, [INVITE, OK, ACK])
    assert [m.data for m in msgs] == [INVITE, OK, ACK]
    assert [m.frames for m in msgs] == [(1,), (2,), (3,)]
    assert [m.ts for m in msgs] == [1000, 2000, 3000]
    assert all(m.complete for m in msgs)
    assert f.problems == [] and f.skipped_bytes == 0 and f.messages == 3


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_every_split_point(cut: int) -> None:
    f = StreamFramer()
    msgs = feed_chunks(f, [STREAM[:cut], STREAM[cut:]])
    assert [m.data for m in msgs] == [INVITE, OK, ACK]
    bounds = [0, len(INVITE), len(INVITE) + len(OK), len(STREAM)]
    for m, start, end in zip(msgs, bounds[:-1], bounds[1:], strict=True):
        expect = tuple(sorted({1 if start < cut else 2, 1 if end - 1 < cut else 2}))
        assert m.frames == expect
        assert m.ts == (1000 if end - 1 < cut else 2000)
    assert f.problems == []


def test_byte_at_a_time() -> None:
    f = StreamFramer()
    msgs = feed_chunks(f, [STREAM[i : i + 1] for i in range(len(STREAM))])
    assert [m.data for m in msgs] == [INVITE, OK, ACK]
    first = 1
    for m in msgs:
        assert m.frames == tuple(range(first, first + len(m.data)))
        assert m.ts == (first + len(m.data) - 1) * 1000
        first += len(m.data)
    assert f.problems == [] and f.skipped_bytes == 0


def test_hundred_coalesced_in_one_segment() -> None:
    f = StreamFramer()
    msgs = feed_chunks(f, [STREAM * 34])
    assert len(msgs) == 102
    assert {m.frames for m in msgs} == {(1,)}
    assert b"".join(m.data for m in msgs) == STREAM * 34


def test_keepalives_skipped_and_counted() -> None:
    f = StreamFramer()
    chunks = [b"\r\n\r\n", INVITE, b"\r\n", b"\r", b"\n\r\n", OK + b"\r\n\r\n" + ACK, b"\r\n"]
    msgs = feed_chunks(f, chunks)
    assert [m.data for m in msgs] == [INVITE, OK, ACK]
    assert f.keepalives == 5  # ping, pong, ping split over two segments, ping, pong at the end
    assert f.skipped_bytes == 0 and f.problems == []


def test_no_content_length_is_a_problem_and_body_empty() -> None:
    bare = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: z\r\n\r\n"
    f = StreamFramer()
    msgs = feed_chunks(f, [bare + ACK])
    assert [m.data for m in msgs] == [bare, ACK]
    assert len(f.problems) == 1 and "Content-Length" in f.problems[0][1]


@pytest.mark.parametrize("value", [b"-5", b"abc", b"70000", b"12 34", b""])
def test_absurd_content_length_resyncs(value: bytes) -> None:
    bad_head = b"MESSAGE sip:x SIP/2.0\r\nContent-Length: " + value + b"\r\n\r\n"
    f = StreamFramer()
    msgs = feed_chunks(f, [bad_head + b"some body text\r\n", INVITE, OK])
    assert [m.data for m in msgs] == [bad_head, INVITE, OK]
    assert [m.complete for m in msgs] == [False, True, True]
    assert f.skipped_bytes == len(b"some body text\r\n")
    assert any("unusable Content-Length" in text for _, text in f.problems)


def test_garbage_before_first_message_is_skipped() -> None:
    junk = b"\x16\x03\x01 binary junk\r\nmore junk without sense\r\n"
    f = StreamFramer()
    msgs = feed_chunks(f, [junk + INVITE[:50], INVITE[50:]])
    assert [m.data for m in msgs] == [INVITE]
    assert msgs[0].frames == (1, 2)
    assert f.skipped_bytes == len(junk)
    assert [p for p in f.problems if "skipped" in p[1]] == [
        ((1,), f"skipped {len(junk)} bytes that are not SIP to resynchronise")
    ]


def test_gap_cuts_message_and_resyncs() -> None:
    f = StreamFramer()
    # INVITE's tail is lost; after the gap the stream resumes mid-line, then OK and ACK.
    msgs = feed_chunks(
        f, [INVITE[:100], b"ITE sip:bob@example.com SIP/2.0\r\nx\r\n\r\n" + OK, ACK], gap_at=2
    )
    assert msgs[0].data == INVITE[:100] and not msgs[0].complete and msgs[0].frames == (1,)
    assert [m.data for m in msgs[1:]] == [OK, ACK]
    assert f.incomplete == 1
    assert f.skipped_bytes == len(b"ITE sip:bob@example.com SIP/2.0\r\nx\r\n\r\n")


def test_gap_at_message_boundary_keeps_known_method() -> None:
    f = StreamFramer()
    msgs = feed_chunks(f, [INVITE, OK, ACK], gap_at=2)
    assert [m.data for m in msgs] == [INVITE, OK, ACK]
    assert f.skipped_bytes == 0


def test_flush_returns_trailing_partial_flagged() -> None:
    f = StreamFramer()
    msgs = feed_chunks(f, [INVITE + OK[:-10]])
    assert [m.complete for m in msgs] == [True, False]
    assert msgs[1].data == OK[:-10]
    assert f.incomplete == 1 and "stream ended" in f.problems[-1][1]


def test_body_that_looks_like_a_message_is_not_split() -> None:
    frag = b"SIP/2.0 200 OK\r\n"
    notify = (
        b"NOTIFY sip:a SIP/2.0\r\nEvent: refer\r\nContent-Type: message/sipfrag\r\n"
        b"Content-Length: " + str(len(frag)).encode() + b"\r\n\r\n" + frag
    )
    f = StreamFramer()
    assert [m.data for m in feed_chunks(f, [notify + ACK])] == [notify, ACK]


def test_bare_lf_line_endings() -> None:
    msg = b"BYE sip:a SIP/2.0\nCall-ID: q\nContent-Length: 2\n\nhi"
    f = StreamFramer()
    assert [m.data for m in feed_chunks(f, [msg, msg])] == [msg, msg]


def test_byte_frames_multi_frame_runs() -> None:
    bf = ByteFrames()
    bf.add(3, (1,), 10)
    bf.add(2, (2, 3), 20)
    bf.add(4, (4,), 30)
    assert bf.take(3) == ((1,), 10)
    assert bf.take(3) == ((2, 3, 4), 30)
    assert bf.take(3) == ((4,), 30)
    assert len(bf) == 0


@pytest.mark.timeout(20)
def test_endless_header_block_is_dropped_not_looped_on() -> None:
    """A valid start line followed by more than max_head bytes with no empty line: the
    framer reports it, skips it and finds the next message (it once looped forever)."""
    e = Endpoint("127.0.0.1", 5060)
    framer = StreamFramer()
    junk = b"OPTIONS sip:x@h SIP/2.0\r\nX-Pad: " + b"a" * 70000
    follow = b"OPTIONS sip:y@h SIP/2.0\r\nCall-ID: 2\r\nContent-Length: 0\r\n\r\n"
    out = framer.feed(Datagram(e, e, Transport.TCP, junk, (1,), 0))
    out += framer.feed(Datagram(e, e, Transport.TCP, b"\r\n" + follow, (2,), 1))
    assert [m.data for m in out if m.complete] == [follow]
    assert any("without an end" in why for _, why in framer.problems)
