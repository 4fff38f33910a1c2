"""Timeline merge and duplicate-capture removal (engine.merge)."""

from __future__ import annotations

from sipflow.engine.merge import DUPLICATE_WINDOW_NS, drop_duplicates, merge_timeline
from sipflow.ingest.types import Endpoint, Transport
from sipflow.sip.message import Origin, SipMessage, parse_message

A = Endpoint("192.0.2.1", 5060)
B = Endpoint("192.0.2.2", 5060)
C = Endpoint("2001:db8::3", 5060)

OPTIONS = (
    b"OPTIONS sip:b@192.0.2.2 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-%d\r\n"
    b"From: <sip:a@192.0.2.1>;tag=1\r\nTo: <sip:b@192.0.2.2>\r\n"
    b"Call-ID: c%d\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def msg(n: int, ts: int, src: Endpoint = A, dst: Endpoint = B, tr: Transport = Transport.UDP,
        source: int = 0) -> SipMessage:  # fmt: skip
    return parse_message(OPTIONS % (n, n), Origin(source, (ts,), ts, src, dst, tr))


def run(msgs: list[SipMessage]) -> tuple[list[SipMessage], list[SipMessage]]:
    dropped: list[SipMessage] = []
    return list(drop_duplicates(iter(msgs), dropped.append)), dropped


def test_copy_within_window_dropped() -> None:
    first, copy = msg(1, 1000), msg(1, 1000 + DUPLICATE_WINDOW_NS - 1, source=1)
    kept, dropped = run([first, copy])
    assert kept == [first] and kept[0] is first
    assert dropped == [copy] and dropped[0] is copy


def test_copy_after_window_is_a_retransmission() -> None:
    first, later = msg(1, 1000), msg(1, 1000 + DUPLICATE_WINDOW_NS + 1)
    kept, dropped = run([first, later])
    assert [m.ts for m in kept] == [first.ts, later.ts] and not dropped


def test_window_runs_from_the_first_copy() -> None:
    """A dropped copy does not extend the window: the third copy is compared with the first."""
    w = DUPLICATE_WINDOW_NS
    copies = [msg(1, 0), msg(1, w // 2), msg(1, w + 1)]
    kept, dropped = run(copies)
    assert [m.ts for m in kept] == [0, w + 1] and [m.ts for m in dropped] == [w // 2]


def test_same_bytes_other_path_or_transport_kept() -> None:
    base = msg(1, 0)
    others = [msg(1, 1, src=C), msg(1, 2, dst=C), msg(1, 3, tr=Transport.TCP), msg(2, 4)]
    kept, dropped = run([base, *others])
    assert len(kept) == 5 and not dropped
    no_origin = parse_message(OPTIONS % (1, 1))
    kept, dropped = run([base, no_origin, parse_message(OPTIONS % (1, 1))])
    assert len(kept) == 2 and len(dropped) == 1  # no origin: compared by bytes alone


def test_merge_timeline_orders_sources() -> None:
    s0 = [msg(1, 10, source=0), msg(2, 30, source=0)]
    s1 = [msg(3, 20, source=1), msg(4, 30, source=1)]
    out = list(merge_timeline([iter(s0), iter(s1)]))
    assert [m.ts for m in out] == [10, 20, 30, 30]
    assert out[2] is s0[1]  # stable: source 0 first on equal times


def test_rotated_sources_are_opened_when_the_timeline_reaches_them() -> None:
    """With start times, a source is first read LATE_OPEN_NS before its start; the
    timeline is the one heapq.merge gives (equal times in source order)."""
    import heapq
    from collections.abc import Iterator

    from sipflow.engine.merge import LATE_OPEN_NS
    from sipflow.engine.shard import Tick

    s = 1_000_000_000
    times = [[0, 1 * s, 5 * s], [5 * s, 9 * s], [20 * s, 21 * s], [3 * s, 4 * s]]
    opened: dict[int, int] = {}  # source -> how many items were out when it was first read
    out: list[Tick] = []

    def source(i: int) -> Iterator[Tick]:
        opened[i] = len(out)
        yield from (Tick(t) for t in times[i])

    starts = [t[0] for t in times[:3]] + [None]  # the last: start unknown, read at once
    merged = merge_timeline([source(i) for i in range(4)], starts)
    for item in merged:
        assert isinstance(item, Tick)
        out.append(item)
    expected = list(heapq.merge(*([Tick(t) for t in ts] for ts in times), key=lambda m: m.ts))
    assert [m.ts for m in out] == [m.ts for m in expected]
    assert opened[0] == 0 and opened[3] == 0
    # source 1 starts at 5 s: opened once the timeline passed 5 s - LATE_OPEN_NS = 3 s
    assert 5 * s - LATE_OPEN_NS == 3 * s and opened[1] == 2
    assert opened[2] == len([t for ts in times for t in ts if t < 20 * s - LATE_OPEN_NS])
