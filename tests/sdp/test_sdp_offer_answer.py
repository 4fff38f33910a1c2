"""Offer/answer pairing per dialog and leg (RFC 3264, RFC 3261 §13, RFC 3262, RFC 3311).

Each flow is a real message sequence (parsed SIP, fed through the CallBuilder like a
capture would be); what the tracker must find is written next to each flow.
"""

from __future__ import annotations

from sdp_flows import PCMA_TE, audio, flow, run_calls, sdp

from sipflow.sdp.model import Direction
from sipflow.sdp.offer_answer import Party, Status, Tracking, track

OFFER = sdp(audio(4000, "RTP/AVP", "8 101", *PCMA_TE))
ANSWER = sdp(audio(5000, "RTP/AVP", "8 101", *PCMA_TE), addr="192.0.2.20")
ANSWER2 = sdp(audio(5002, "RTP/AVP", "8", "a=rtpmap:8 PCMA/8000"), addr="192.0.2.20")


def tracked(steps: list[tuple[str, str | None]]) -> Tracking:
    (call,) = run_calls(flow(steps))
    return track(call.transactions, call.caller_tag)


def frames(msgs: tuple[object, ...]) -> list[int]:
    return [m.origin.frames[0] for m in msgs]  # type: ignore[attr-defined]


def test_offer_in_invite_answer_in_200() -> None:
    t = tracked([("INVITE", OFFER), ("100", None), ("180", None), ("200", ANSWER), ("ACK", None)])
    (x,) = t.exchanges
    assert (x.method, x.offer_in, x.answer_in, x.status) == (
        "INVITE",
        "INVITE",
        "200",
        Status.ANSWERED,
    )
    assert x.offerer is Party.CALLER
    assert frames(x.offer_msgs) == [1] and frames(x.answer_msgs) == [4]
    assert x.answer is not None and x.answer.media[0].m.port == 5000  # type: ignore[union-attr]
    assert x.leg == "192.0.2.1:5060 -> 192.0.2.2:5060"
    assert not t.skipped and not t.unreadable


def test_late_offer_in_200_answer_in_ack() -> None:
    t = tracked([("INVITE", None), ("200", ANSWER), ("ACK", OFFER)])
    (x,) = t.exchanges
    assert (x.offer_in, x.answer_in, x.offerer) == ("200", "ACK", Party.CALLEE)
    assert frames(x.offer_msgs) == [2] and frames(x.answer_msgs) == [3]


def test_late_offer_with_ack_without_answer_is_unanswered() -> None:
    (x,) = tracked([("INVITE", None), ("200", ANSWER), ("ACK", None)]).exchanges
    assert x.status is Status.UNANSWERED


def test_answer_in_reliable_183_then_prack_and_200_without_sdp() -> None:
    steps = [("INVITE", OFFER), ("183r", ANSWER), ("PRACK", None), ("P200", None)]
    t = tracked([*steps, ("200", None), ("ACK", None)])
    (x,) = t.exchanges
    assert (x.offer_in, x.answer_in, x.status) == ("INVITE", "183", Status.ANSWERED)


def test_offer_in_reliable_183_answer_in_prack() -> None:
    steps = [("INVITE", None), ("183r", ANSWER), ("PRACK", OFFER), ("P200", None)]
    (x,) = tracked([*steps, ("200", None), ("ACK", None)]).exchanges
    assert (x.offer_in, x.answer_in, x.offerer) == ("183", "PRACK", Party.CALLEE)


def test_unreliable_183_sdp_without_offer_is_counted_not_paired() -> None:
    t = tracked([("INVITE", None), ("183", ANSWER), ("200", ANSWER), ("ACK", OFFER)])
    assert t.skipped == {"SDP in an unreliable 1xx to an INVITE without offer": 1}
    (x,) = t.exchanges
    assert x.offer_in == "200"


def test_update_and_reinvite_hold() -> None:
    hold = sdp(audio(4000, "RTP/AVP", "8", "a=sendonly"))
    held = sdp(audio(5000, "RTP/AVP", "8", "a=recvonly"), addr="192.0.2.20")
    steps = [("INVITE", OFFER), ("200", ANSWER), ("ACK", None), ("UPDATE", OFFER)]
    steps += [("U200", ANSWER2), ("reINVITE", hold), ("200", held), ("ACK", None)]
    t = tracked(steps)
    assert [(x.method, x.answer_in) for x in t.exchanges] == [
        ("INVITE", "200"),
        ("UPDATE", "200"),
        ("INVITE", "200"),
    ]
    last = t.exchanges[-1]
    assert last.offer.direction_of(0) is Direction.SENDONLY
    assert last.answer is not None and last.answer.direction_of(0) is Direction.RECVONLY
    # the peer's formats known before the re-INVITE: its UPDATE answer
    assert last.peer_sdp is not None and last.peer_sdp.media[0].m.port == 5002  # type: ignore[union-attr]


def test_rejected_offer_keeps_the_final() -> None:
    (x,) = tracked([("INVITE", OFFER), ("488", None), ("ACK", None)]).exchanges
    assert x.status is Status.REJECTED and x.final is not None and x.final.status == 488
    assert x.answer is None


def test_200_without_answer_is_unanswered() -> None:
    (x,) = tracked([("INVITE", OFFER), ("200", None), ("ACK", None)]).exchanges
    assert x.status is Status.UNANSWERED


def test_retransmitted_200_joins_the_exchange() -> None:
    t = tracked([("INVITE", OFFER), ("200", ANSWER), ("200", ANSWER), ("ACK", None)])
    (x,) = t.exchanges
    assert frames(x.answer_msgs) == [2, 3]


def test_early_answer_then_different_final_answer_gives_two_exchanges() -> None:
    t = tracked([("INVITE", OFFER), ("183", ANSWER), ("200", ANSWER2), ("ACK", None)])
    assert [(x.answer_in, x.status) for x in t.exchanges] == [
        ("183", Status.ANSWERED),
        ("200", Status.ANSWERED),
    ]
    t = tracked([("INVITE", OFFER), ("183", ANSWER), ("200", ANSWER), ("ACK", None)])
    (x,) = t.exchanges
    assert frames(x.answer_msgs) == [2, 3]


def test_sdp_in_ack_with_nothing_pending_is_counted() -> None:
    t = tracked([("INVITE", OFFER), ("200", ANSWER), ("ACK", ANSWER)])
    assert t.skipped == {"SDP in an ACK with no offer pending": 1}
    assert len(t.exchanges) == 1


def test_pending_when_the_input_ends() -> None:
    (x,) = tracked([("INVITE", OFFER), ("100", None)]).exchanges
    assert x.status is Status.PENDING
