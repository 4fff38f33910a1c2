"""Transaction machines (RFC 3261 §17, RFC 6026) and the observer's tracker.

The paths below are written from the RFC figures (Figure 5-8, RFC 6026 §7/§8), not from
the table: walking them must visit every row of ``TRANSITIONS`` and nothing else.
"""

from __future__ import annotations

import pytest

from sipflow.ingest.types import Endpoint, Transport
from sipflow.sip.message import Origin, SipMessage, parse_message
from sipflow.sip.transaction import (
    COMPACT_SLACK,
    OBSERVED,
    T1,
    TIMEOUTS,
    TRANSITIONS,
    Disposition,
    TransactionTracker,
    TxEvent,
    TxKind,
    TxState,
    key_of,
    step,
)

PATHS = {
    TxKind.INVITE_CLIENT: [
        "init request calling timer-a calling request-retransmit calling 1xx proceeding "
        "1xx proceeding 3xx-6xx completed 3xx-6xx completed ack completed timer-d terminated",
        "calling timer-b terminated",
        "calling transport-error terminated",
        "calling 2xx accepted 2xx accepted timer-m terminated",
        "calling 3xx-6xx completed transport-error terminated",
        "calling 1xx proceeding 2xx accepted",
        "proceeding timer-c terminated",
    ],
    TxKind.NON_INVITE_CLIENT: [
        "init request trying timer-e trying request-retransmit trying 1xx proceeding timer-e "
        "proceeding request-retransmit proceeding 1xx proceeding 2xx completed 2xx completed "
        "3xx-6xx completed timer-k terminated",
        "trying timer-f terminated",
        "trying transport-error terminated",
        "trying 2xx completed",
        "trying 3xx-6xx completed",
        "proceeding 3xx-6xx completed",
        "proceeding timer-f terminated",
        "proceeding transport-error terminated",
    ],
    TxKind.INVITE_SERVER: [
        "init request proceeding request-retransmit proceeding 1xx proceeding 3xx-6xx completed "
        "request-retransmit completed timer-g completed 3xx-6xx completed ack confirmed "
        "ack confirmed timer-i terminated",
        "proceeding 2xx accepted request-retransmit accepted 2xx accepted ack accepted "
        "timer-l terminated",
        "proceeding transport-error terminated",
        "completed timer-h terminated",
        "completed transport-error terminated",
    ],
    TxKind.NON_INVITE_SERVER: [
        "init request trying request-retransmit trying 1xx proceeding request-retransmit "
        "proceeding 1xx proceeding 2xx completed request-retransmit completed timer-j terminated",
        "trying 2xx completed",
        "trying 3xx-6xx completed",
        "trying transport-error terminated",
        "proceeding 3xx-6xx completed",
        "proceeding transport-error terminated",
        "completed transport-error terminated",
    ],
    TxKind.ACK_2XX: ["init request completed request-retransmit completed timer-m terminated"],
}


def test_rfc_paths_visit_every_row_and_only_those() -> None:
    visited = set()
    for kind, paths in PATHS.items():
        for path in paths:
            words = path.split()
            state = TxState(words[0])
            for event_name, expected in zip(words[1::2], words[2::2], strict=True):
                event = TxEvent(event_name)
                got = step(kind, state, event, observer=False)
                assert got is TxState(expected), (kind, state, event)
                visited.add((kind, state, event))
                state = got
    assert visited == set(TRANSITIONS)


@pytest.mark.parametrize("row", sorted(OBSERVED, key=str))
def test_observer_rows_are_not_in_the_rfc_table(row: tuple[TxKind, TxState, TxEvent]) -> None:
    kind, state, event = row
    assert step(kind, state, event, observer=False) is None
    assert step(kind, state, event, observer=True) is state  # a crossing retransmission


def test_terminated_is_final_and_timers_follow_the_rfc() -> None:
    assert not [row for row in TRANSITIONS if row[1] is TxState.TERMINATED]
    assert TIMEOUTS[(TxKind.INVITE_CLIENT, TxState.CALLING)][1] == 32_000_000_000  # B
    assert TIMEOUTS[(TxKind.INVITE_CLIENT, TxState.COMPLETED)][1:] == (32_000_000_000, 0)  # D
    assert TIMEOUTS[(TxKind.NON_INVITE_CLIENT, TxState.COMPLETED)][1:] == (5_000_000_000, 0)
    # every timer event in TIMEOUTS is a legal row, leading to Terminated
    for (kind, state), (event, _, _) in TIMEOUTS.items():
        assert step(kind, state, event, observer=False) is TxState.TERMINATED, (kind, state)


# -- the tracker on synthetic messages ----------------------------------------------------

A = Endpoint("192.0.2.1", 5060)
B = Endpoint("192.0.2.2", 5060)
MS = 1_000_000


def msg(
    start: str,
    ts_ms: int,
    frame: int,
    *,
    branch: str = "z9hG4bKabc",
    method: str = "INVITE",
    to_tag: str = "",
    cseq: int = 1,
    transport: Transport = Transport.UDP,
) -> SipMessage:
    request = not start.startswith("SIP/")
    to = "<sip:bob@b.example>" + (f";tag={to_tag}" if to_tag else "")
    via_branch = f";branch={branch}" if branch else ""
    text = (
        f"{start}\r\nVia: SIP/2.0/{transport.value} 192.0.2.1:5060{via_branch}\r\n"
        f"From: <sip:alice@a.example>;tag=a1\r\nTo: {to}\r\nCall-ID: c1@a\r\n"
        f"CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
    src, dst = (A, B) if request else (B, A)
    return parse_message(text.encode(), Origin(0, (frame,), ts_ms * MS, src, dst, transport))


INVITE = "INVITE sip:bob@b.example SIP/2.0"
ACK = "ACK sip:bob@b.example SIP/2.0"


def feed_all(t: TransactionTracker, msgs: list[SipMessage]) -> list:
    return [t.feed(m, m.ts) for m in msgs]


def test_invite_rejected_retransmissions_and_timer_d() -> None:
    t = TransactionTracker()
    res = feed_all(
        t,
        [
            msg(INVITE, 0, 1),
            msg(INVITE, 500, 2),
            msg("SIP/2.0 100 Trying", 600, 3),
            msg("SIP/2.0 180 Ringing", 700, 4, to_tag="b1"),
            msg("SIP/2.0 486 Busy Here", 900, 5, to_tag="b1"),
            msg(ACK, 901, 6, method="ACK", to_tag="b1"),
            msg("SIP/2.0 486 Busy Here", 1400, 7, to_tag="b1"),
            msg(ACK, 1401, 8, method="ACK", to_tag="b1"),
        ],
    )
    assert [r.disposition for r in res] == [
        Disposition.NEW_REQUEST,
        Disposition.REQUEST_RETRANSMISSION,
        Disposition.RESPONSE,
        Disposition.RESPONSE,
        Disposition.RESPONSE,
        Disposition.ACK_NON2XX,
        Disposition.RESPONSE_RETRANSMISSION,
        Disposition.ACK_NON2XX,
    ]
    assert t.next_deadline() == 900 * MS + 32_000 * MS  # Timer D from entering Completed
    assert t.expire(900 * MS + 31_999 * MS) == ([], [])
    done, findings = t.expire(900 * MS + 32_000 * MS)
    assert findings == [] and len(done) == 1
    rec = done[0]
    assert [s for _, s in rec.states] == [
        TxState.CALLING,
        TxState.PROCEEDING,
        TxState.COMPLETED,
        TxState.TERMINATED,
    ]
    assert (rec.final_status, rec.provisional, rec.to_tags) == (486, (100, 180), ("b1",))
    assert (rec.request_retransmissions, rec.response_retransmissions) == (2, 1)  # INVITE, ACK
    assert len(rec.messages) == 8 and rec.ended == "timer-d" and rec.first_18x_ts == 700 * MS


def test_timer_b_times_out_an_unanswered_invite() -> None:
    t = TransactionTracker()
    feed_all(t, [msg(INVITE, 0, 1), msg(INVITE, 500, 2), msg(INVITE, 1500, 3)])
    done, findings = t.expire(64 * T1)
    assert len(done) == 1 and done[0].timed_out and done[0].final_status is None
    assert [f.code for f in findings] == ["sip.invite_timeout"]
    assert findings[0].rfc == "RFC 3261 §17.1.1.2" and findings[0].refs[0].frame == 1


def test_ack_to_2xx_is_its_own_transaction_and_reliable_timers_are_zero() -> None:
    t = TransactionTracker()
    res = feed_all(
        t,
        [
            msg(INVITE, 0, 1, transport=Transport.TCP),
            msg("SIP/2.0 200 OK", 10, 2, to_tag="b1", transport=Transport.TCP),
            msg(
                ACK, 20, 3, method="ACK", branch="z9hG4bKack", to_tag="b1", transport=Transport.TCP
            ),
        ],
    )
    assert res[1].state is TxState.ACCEPTED and res[2].disposition is Disposition.ACK_2XX
    assert res[2].key is not None and res[2].key.method == "ACK"
    done, _ = t.expire(20 * MS + 64 * T1)  # Timer M (RFC 6026), and the ACK's 64*T1 window
    assert sorted(r.method for r in done) == ["ACK", "INVITE"]
    # RFC 3261 §17.1.1.2: Timer D is zero on a reliable transport
    t2 = TransactionTracker()
    feed_all(
        t2,
        [
            msg(INVITE, 0, 1, transport=Transport.TCP),
            msg("SIP/2.0 486 Busy", 7, 2, to_tag="b", transport=Transport.TCP),
        ],
    )
    assert t2.next_deadline() == 7 * MS


def test_cancel_ties_to_its_invite_and_late_cancel_is_reported() -> None:
    t = TransactionTracker()
    cancel = "CANCEL sip:bob@b.example SIP/2.0"
    res = feed_all(
        t,
        [
            msg(INVITE, 0, 1),
            msg("SIP/2.0 180 Ringing", 100, 2, to_tag="b1"),
            msg(cancel, 200, 3, method="CANCEL"),
            msg("SIP/2.0 200 OK", 210, 4, method="CANCEL"),
            msg("SIP/2.0 487 Request Terminated", 220, 5, to_tag="b1"),
            msg(cancel, 230, 6, method="CANCEL", branch="z9hG4bKother"),
        ],
    )
    assert res[2].key != res[0].key and res[3].key == res[2].key
    assert [f.code for f in res[5].findings] == ["sip.cancel_unknown"]
    recs = t.finish()
    invite = next(r for r in recs if r.method == "INVITE")
    assert invite.cancelled_ts == 200 * MS and invite.final_status == 487
    t2 = TransactionTracker()
    res2 = feed_all(
        t2,
        [
            msg(INVITE, 0, 1),
            msg("SIP/2.0 486 Busy", 5, 2, to_tag="x"),
            msg(cancel, 9, 3, method="CANCEL"),
        ],
    )
    assert [f.code for f in res2[2].findings] == ["sip.cancel_after_final"]


def test_orphan_fork_rfc2543_and_illegal_transition() -> None:
    t = TransactionTracker()
    orphan = t.feed(msg("SIP/2.0 200 OK", 0, 1, to_tag="z"), 0)
    assert orphan.disposition is Disposition.ORPHAN_RESPONSE and orphan.key is None
    assert [f.code for f in orphan.findings] == ["sip.orphan_response"]
    # RFC 2543 peer: no branch; the 180s of two forks are both new responses
    res = feed_all(
        t,
        [
            msg(INVITE, 10, 2, branch=""),
            msg("SIP/2.0 180 Ringing", 20, 3, branch="", to_tag="f1"),
            msg("SIP/2.0 180 Ringing", 30, 4, branch="", to_tag="f2"),
            msg("SIP/2.0 486 Busy", 40, 5, branch="", to_tag="f1"),
            msg("SIP/2.0 183 Late", 50, 6, branch="", to_tag="f1"),
        ],
    )
    assert res[0].key is not None and res[0].key.rfc2543
    assert key_of(res_msg := msg("SIP/2.0 180 Ringing", 0, 9, branch="")) == res[0].key, res_msg
    assert [r.disposition for r in res[1:4]] == [Disposition.RESPONSE] * 3
    assert [f.code for f in res[4].findings] == ["sip.transaction_unexpected"]  # 1xx after final
    assert res[4].state is TxState.COMPLETED and t.stats().illegal_transitions == 1
    rec = t.finish()[0]
    assert rec.to_tags == ("f1", "f2") and rec.provisional == (180, 180, 183)


def test_unmatchable_message_is_counted_not_raised() -> None:
    t = TransactionTracker()
    bad = parse_message(b"OPTIONS sip:x@y SIP/2.0\r\nCall-ID: q\r\n\r\n", Origin(0, (1,), 0))
    res = t.feed(bad, 0)
    assert res.disposition is Disposition.UNMATCHABLE and t.stats().unmatchable == 1
    assert res.findings[0].code == "sip.unmatchable"


def test_non_invite_timer_f_and_k() -> None:
    t = TransactionTracker()
    opt = "OPTIONS sip:bob@b.example SIP/2.0"
    t.feed(msg(opt, 0, 1, method="OPTIONS", branch="z9hG4bK1"), 0)
    t.feed(msg(opt, 0, 2, method="OPTIONS", branch="z9hG4bK2"), 0)
    t.feed(msg("SIP/2.0 200 OK", 5, 3, method="OPTIONS", branch="z9hG4bK2"), 5 * MS)
    done, findings = t.expire(5 * MS + 5000 * MS)  # Timer K = T4 for the answered one
    assert [r.key.branch for r in done] == ["z9hG4bK2"] and findings == []
    done, findings = t.expire(64 * T1)
    assert done[0].timed_out and [f.code for f in findings] == ["sip.non_invite_timeout"]


def test_timer_heap_stays_bounded_by_open_transactions() -> None:
    """600 rejected INVITEs over TCP, 100 ms apart (60 s): each leaves Calling (Timer B,
    32 s) and Proceeding (Timer C, 3 min) behind and ends at once (Timer D is 0 on a
    reliable transport, RFC 3261 §17.1.1.2). The timers of states left are stale: the
    heap must not keep them for their full time, only what the open transactions need;
    and no live timer may be lost (every transaction still ends by Timer D)."""
    t = TransactionTracker()
    tcp = Transport.TCP
    records, worst = [], 0
    for n in range(600):
        at, b = n * 100, f"z9hG4bKrej{n}"
        for m in (
            msg(INVITE, at, 4 * n + 1, branch=b, transport=tcp),
            msg("SIP/2.0 100 Trying", at + 1, 4 * n + 2, branch=b, transport=tcp),
            msg("SIP/2.0 180 Ringing", at + 2, 4 * n + 3, branch=b, to_tag="t", transport=tcp),
            msg("SIP/2.0 486 Busy Here", at + 3, 4 * n + 4, branch=b, to_tag="t", transport=tcp),
        ):
            records += t.feed(m, m.ts).finished
            assert t.held_timers() <= 2 * t.open_count() + COMPACT_SLACK
            worst = max(worst, t.held_timers())
    assert t.open_count() <= 1 and worst <= 2 + COMPACT_SLACK
    done, findings = t.expire(600 * 100 * MS + 180_000 * MS)  # past every Timer C
    records += done
    assert findings == [] and t.open_count() == 0 and t.held_timers() == 0
    assert len(records) == 600 and {r.ended for r in records} == {"timer-d"}
    assert {r.final_status for r in records} == {486}


def test_a_response_after_timer_f_is_late_not_an_orphan() -> None:
    """sngrep's aaa capture: a CANCEL's 408 comes 33 s after the CANCEL, 1 s after Timer F
    ended its transaction: one timeout and one late response, no orphan."""
    from pathlib import Path

    from sipflow.api import analyze

    path = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "pcaps" / "sngrep__aaa.pcap"
    if not path.exists():
        pytest.skip(f"{path} is absent (shared corpus not available)")
    findings = analyze([path]).finding_list
    (late,) = [f for f in findings if f.code == "sip.late_response"]
    assert late.message.startswith("408 response to CANCEL came 1.0 s after")
    assert late.refs and not [f for f in findings if f.code == "sip.orphan_response"]
    assert [f.code for f in findings if f.code == "sip.non_invite_timeout"] == [
        "sip.non_invite_timeout"
    ]
