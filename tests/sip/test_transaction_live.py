"""Live transactions (a UA sending and answering): retransmission timers and terminations.

Times are passed in; the expected instants are written from RFC 3261 §17 (Timer A/E/G
intervals, Timers B/F/H/D/K/I/J), not read from the tables.
"""

from __future__ import annotations

from sipflow.sip.live_tx import LiveTransactions, Retransmit, TxTerminated, Verdict
from sipflow.sip.transaction import COMPACT_SLACK, MS, T1, T2, T4, TxEvent, TxKey, TxState

KEY = TxKey("z9hG4bKlive", "127.0.0.1:5060", "INVITE")
NKEY = TxKey("z9hG4bKlive2", "127.0.0.1:5060", "OPTIONS")


def drain(t: LiveTransactions[str], until: int) -> list[tuple[int, Retransmit[str] | TxTerminated]]:
    out = []
    while (d := t.next_deadline()) is not None and d <= until:
        out += [(d, x) for x in t.expire(d)]
    return out


def test_invite_client_timer_a_doubles_until_timer_b() -> None:
    t: LiveTransactions[str] = LiveTransactions()
    t.send_request(KEY, "INVITE", b"INVITE", "peer", False, 0)
    got = drain(t, 64 * T1)
    rtx = [d for d, x in got if isinstance(x, Retransmit)]
    # §17.1.1.2: A fires at T1, then 2*T1, 4*T1, ... after the previous one
    assert rtx == [T1 * (2**n - 1) for n in range(1, 7)]
    end = [x for _, x in got if isinstance(x, TxTerminated)]
    assert len(end) == 1 and end[0].event is TxEvent.TIMER_B and end[0].timed_out
    assert got[-1][0] == 64 * T1 and len(t) == 0


def test_reliable_transport_has_no_retransmissions() -> None:
    t: LiveTransactions[str] = LiveTransactions()
    t.send_request(KEY, "INVITE", b"INVITE", "peer", True, 0)
    got = drain(t, 100 * T1)
    assert [type(x) for _, x in got] == [TxTerminated]


def test_non_invite_timer_e_caps_at_t2_and_uses_t2_in_proceeding() -> None:
    t: LiveTransactions[str] = LiveTransactions()
    t.send_request(NKEY, "OPTIONS", b"OPTIONS", "peer", False, 0)
    got = drain(t, 8 * T1)
    assert [d for d, _ in got] == [T1, 3 * T1, 7 * T1]  # T1, 2T1, 4T1 apart
    got = drain(t, 7 * T1 + T2 + 1)
    assert [d for d, _ in got] == [7 * T1 + T2]  # capped at T2 (§17.1.2.2)
    assert t.receive_response(NKEY, 100, 7 * T1 + T2 + 1)[0] is Verdict.NEW
    assert t.state_of(NKEY) is TxState.PROCEEDING
    got = drain(t, 7 * T1 + 2 * T2 + 1)
    assert [d for d, _ in got] == [7 * T1 + T2 + 1 + T2]
    assert t.receive_response(NKEY, 200, 20 * T1)[0] is Verdict.NEW
    assert t.receive_response(NKEY, 200, 20 * T1 + 1)[0] is Verdict.RETRANSMISSION
    got = drain(t, 20 * T1 + T4)
    assert [(d, x.event) for d, x in got if isinstance(x, TxTerminated)] == [
        (20 * T1 + T4, TxEvent.TIMER_K)
    ]


def test_non_2xx_final_is_acked_again_for_each_retransmission() -> None:
    t: LiveTransactions[str] = LiveTransactions()
    t.send_request(KEY, "INVITE", b"INVITE", "peer", False, 0)
    assert t.receive_response(KEY, 486, 10 * MS) == (Verdict.NEW, [])
    t.ack_sent(KEY, b"ACK", 10 * MS)
    verdict, again = t.receive_response(KEY, 486, 20 * MS)
    assert verdict is Verdict.RETRANSMISSION and [r.data for r in again] == [b"ACK"]
    got = drain(t, 10 * MS + 32_000 * MS)  # Timer D >= 32 s on UDP
    assert [(d, x.event) for d, x in got if isinstance(x, TxTerminated)] == [
        (10 * MS + 32_000 * MS, TxEvent.TIMER_D)
    ]


def test_invite_server_timer_g_until_ack_then_timer_i() -> None:
    t: LiveTransactions[str] = LiveTransactions()
    assert t.receive_request(KEY, "INVITE", "caller", False, 0) == (Verdict.NEW, [])
    verdict, resend = t.receive_request(KEY, "INVITE", "caller", False, 1)
    assert verdict is Verdict.RETRANSMISSION and resend == []  # nothing sent yet
    assert t.send_response(KEY, 180, b"180", 2)
    assert [r.data for r in t.receive_request(KEY, "INVITE", "caller", False, 3)[1]] == [b"180"]
    t.send_response(KEY, 486, b"486", 10)
    got = drain(t, 10 + 7 * T1)
    assert [d for d, _ in got] == [10 + T1, 10 + 3 * T1, 10 + 7 * T1]  # Timer G
    assert all(isinstance(x, Retransmit) and x.data == b"486" for _, x in got)
    assert t.receive_ack(KEY, 10 + 7 * T1 + 1) is Verdict.NEW
    assert t.state_of(KEY) is TxState.CONFIRMED
    got = drain(t, 10 + 7 * T1 + 1 + T4)
    assert [x.event for _, x in got if isinstance(x, TxTerminated)] == [TxEvent.TIMER_I]


def test_invite_server_no_ack_ends_with_timer_h() -> None:
    t: LiveTransactions[str] = LiveTransactions()
    t.receive_request(KEY, "INVITE", "caller", False, 0)
    t.send_response(KEY, 500, b"500", 0)
    end = [x for _, x in drain(t, 64 * T1) if isinstance(x, TxTerminated)]
    assert [(e.event, e.timed_out) for e in end] == [(TxEvent.TIMER_H, True)]


def test_2xx_resent_until_ack_even_on_tcp_then_timer_l() -> None:
    t: LiveTransactions[str] = LiveTransactions()
    t.receive_request(KEY, "INVITE", "caller", True, 0)
    t.send_response(KEY, 200, b"200", 0)
    got = drain(t, 3 * T1)
    assert [(d, x.data) for d, x in got if isinstance(x, Retransmit)] == [
        (T1, b"200"),
        (3 * T1, b"200"),
    ]
    assert t.receive_ack(KEY, 3 * T1 + 1) is Verdict.NEW
    assert t.receive_ack(KEY, 3 * T1 + 2) is Verdict.RETRANSMISSION
    got = drain(t, 64 * T1)
    assert [x.event for _, x in got if isinstance(x, TxTerminated)] == [TxEvent.TIMER_L]


def test_transport_error_and_unknown() -> None:
    t: LiveTransactions[str] = LiveTransactions()
    t.send_request(NKEY, "OPTIONS", b"O", "peer", True, 0)
    end = t.transport_error(NKEY, 5)
    assert [(e.event, e.timed_out) for e in end] == [(TxEvent.TRANSPORT_ERROR, True)]
    assert t.receive_response(NKEY, 200, 6) == (Verdict.UNKNOWN, [])
    assert t.receive_ack(KEY, 7) is Verdict.UNKNOWN
    assert t.next_deadline() is None


def test_timer_heap_stays_bounded_by_open_transactions() -> None:
    """A B2BUA's two sides over TCP, 600 calls 100 ms apart, each rejected: the client
    INVITE leaves Calling (Timer B) and Proceeding (Timer C, 3 min) and ends at once
    (Timer D = 0); the server INVITE leaves Completed (Timer H, 32 s) on the ACK and ends
    (Timer I = 0). Every 10 s an OPTIONS probe to a dead peer over UDP retransmits (Timer
    E) until Timer F, so a live timer is always due first and ``next_deadline`` cannot
    pop the stale entries behind it. They must not stay for their full time."""
    t: LiveTransactions[str] = LiveTransactions()
    ended: list[TxEvent] = []
    worst = 0
    for n in range(600):
        now = n * 100 * MS
        if n % 100 == 0:
            probe = TxKey(f"z9hG4bKo{n}", "127.0.0.1:5060", "OPTIONS")
            t.send_request(probe, "OPTIONS", b"OPTIONS", "dead-peer", False, now)
        client = TxKey(f"z9hG4bKc{n}", "127.0.0.1:5060", "INVITE")
        server = TxKey(f"z9hG4bKs{n}", "127.0.0.1:5062", "INVITE")
        t.receive_request(server, "INVITE", "caller", True, now)
        t.send_request(client, "INVITE", b"INVITE", "callee", True, now)
        t.receive_response(client, 100, now + 1)
        t.receive_response(client, 486, now + 2)
        t.send_response(server, 486, b"486", now + 3)
        t.receive_ack(server, now + 4)
        ended += [x.event for _, x in drain(t, now + 5) if isinstance(x, TxTerminated)]
        assert t.held_timers() <= 2 * 2 * len(t) + COMPACT_SLACK
        worst = max(worst, t.held_timers())
    assert len(t) <= 4 and worst <= 4 * 5 + COMPACT_SLACK
    ended += [x.event for _, x in drain(t, 10**15) if isinstance(x, TxTerminated)]
    expected = [TxEvent.TIMER_D, TxEvent.TIMER_I] * 600 + [TxEvent.TIMER_F] * 6
    assert sorted(ended) == sorted(expected)
    assert len(t) == 0 and t.held_timers() == 0 and t.next_deadline() is None
