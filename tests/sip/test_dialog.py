"""Dialog table (RFC 3261 §12, §13.2.2.4, §15) and the Dialogs set of one call."""

from __future__ import annotations

from sipflow.ingest.types import Endpoint
from sipflow.sip.dialog import TRANSITIONS, DialogEvent, Dialogs, DialogState, step
from sipflow.sip.message import Origin, SipRequest, SipResponse, parse_message

# Paths written from the RFC text; walking them must visit every row of the table.
PATHS = [
    "init 1xx-with-tag early 1xx-with-tag early request early 2xx confirmed 2xx confirmed "
    "1xx-with-tag confirmed other-fork-2xx confirmed request confirmed bye terminating "
    "bye terminating request terminating 2xx terminating other-fork-2xx terminating "
    "1xx-with-tag terminating bye-final terminated bye-final terminated",
    "init 2xx confirmed 481-or-408 terminated",
    "early 3xx-6xx terminated",
    "early other-fork-2xx terminated",
    "early bye terminating 481-or-408 terminated",
    "early 481-or-408 terminated",
]


def test_paths_visit_every_row() -> None:
    visited = set()
    for path in PATHS:
        words = path.split()
        state = DialogState(words[0])
        for ev, expected in zip(words[1::2], words[2::2], strict=True):
            got = step(state, DialogEvent(ev))
            assert got is DialogState(expected), (state, ev)
            visited.add((state, DialogEvent(ev)))
            state = got
    assert visited == set(TRANSITIONS)
    # nothing leaves Terminated but the final to a BYE seen at another hop
    assert [e for (s, e) in TRANSITIONS if s is DialogState.TERMINATED] == [DialogEvent.BYE_DONE]


def _m(text: str, ts: int, frame: int = 1) -> SipRequest | SipResponse:
    a, b = Endpoint("192.0.2.1", 5060), Endpoint("192.0.2.2", 5060)
    msg = parse_message(text.replace("\n", "\r\n").encode(), Origin(0, (frame,), ts, a, b))
    assert isinstance(msg, SipRequest | SipResponse)
    return msg


def resp(status: str, tag: str, ts: int, method: str = "INVITE", seq: int = 1) -> SipResponse:
    r = _m(
        f"SIP/2.0 {status}\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:a@x>;tag=A\n"
        f"To: <sip:b@y>;tag={tag}\nCall-ID: c\nCSeq: {seq} {method}\n\n",
        ts,
    )
    assert isinstance(r, SipResponse)
    return r


def req(method: str, from_tag: str, to_tag: str, ts: int, seq: int = 2) -> SipRequest:
    r = _m(
        f"{method} sip:b@y SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK{seq}\n"
        f"From: <sip:x@x>;tag={from_tag}\nTo: <sip:y@y>;tag={to_tag}\nCall-ID: c\n"
        f"CSeq: {seq} {method}\n\n",
        ts,
    )
    assert isinstance(r, SipRequest)
    return r


def test_fork_one_answered_others_end_and_callee_bye() -> None:
    d = Dialogs("c", "A")
    assert d.invite_response(resp("100 Trying", "", 1), 1) == []  # no dialog from a 100
    d.invite_response(resp("180 Ringing", "f1", 2), 2)
    d.invite_response(resp("183 Progress", "f2", 3), 3)
    assert d.invite_response(resp("200 OK", "f2", 4), 4) == []
    states = {r.id.callee_tag: r.state for r in d.records()}
    assert states == {"f1": DialogState.TERMINATED, "f2": DialogState.CONFIRMED}
    assert d.records()[0].ended_why == "fork-lost"
    did, _ = d.request(req("ACK", "A", "f2", 5, seq=1), 5)
    assert did is not None and did.callee_tag == "f2"
    did, _ = d.request(req("BYE", "f2", "A", 9), 9)  # from the callee: tags swapped
    assert did is not None and not d.all_ended()
    d.response(resp("200 OK", "f2", 10, method="BYE", seq=2), 10)
    assert d.all_ended() and d.first_bye() == (9, "callee")
    assert d.check_acks(10, final=True) == []


def test_reject_ends_early_dialogs_unknown_dialog_481_and_no_ack() -> None:
    d = Dialogs("c", "A")
    d.invite_response(resp("180 Ringing", "t", 1), 1)
    d.invite_response(resp("486 Busy Here", "t", 2), 2)
    assert d.all_ended() and d.records()[0].ended_why == "rejected"
    assert d.request(req("BYE", "A", "nobody", 3), 3) == (None, [])
    # a confirmed dialog: re-INVITE answered 2xx and never ACKed; then 481 to an INFO
    e = Dialogs("c", "A")
    e.invite_response(resp("200 OK", "t", 1), 1)
    e.request(req("ACK", "A", "t", 2, seq=1), 2)
    e.request(req("INVITE", "A", "t", 3, seq=2), 3)
    e.response(resp("200 OK", "t", 4, seq=2), 4)
    found = e.response(resp("481 Call Does Not Exist", "t", 5, method="INFO", seq=3), 5)
    assert [f.code for f in found] == ["sip.dialog_481"] and e.all_ended()
    assert e.records()[0].reinvites == 1 and e.records()[0].ended_why == "481"
    assert [f.code for f in e.check_acks(5, final=False)] == ["sip.no_ack"]


def test_unexpected_event_is_a_finding_not_an_exception() -> None:
    d = Dialogs("c", "A")
    d.invite_response(resp("200 OK", "t", 1), 1)
    d.response(resp("481 Gone", "t", 2, method="INFO", seq=2), 2)
    found = d.invite_response(resp("200 OK", "t", 3), 3)  # 2xx after the dialog ended
    assert [f.code for f in found] == ["sip.dialog_unexpected"]
    assert d.records()[0].state is DialogState.TERMINATED
