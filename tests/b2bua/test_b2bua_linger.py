"""What an ended call keeps for 64*T1, and that late retransmissions are answered from it.

Once a call has ended, the B2BUA keeps transaction keys (RFC 3261 §17), not dialogs:
a re-sent BYE gets the same 200 again (§17.2.2), a re-sent 2xx on the B leg the same ACK
(§13.2.2.4), a re-sent INVITE is absorbed (RFC 6026 §7.1), and nothing else of the call
stays in memory. Checked on the sans-IO core with time passed in, and on the real
``sipflow b2bua`` process over loopback UDP with raw sockets as caller and callee.
"""

from __future__ import annotations

import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from peers.harness import Proc, port_bound, wait_for
from test_b2bua_core import SDP, A, B, answer, core, invite, sends

from sipflow.b2bua.core import B2BUA, LINGER, Send
from sipflow.ingest.types import Transport
from sipflow.sip.message import SipRequest, SipResponse, parse_message
from sipflow.sip.transaction import MS, T1

UDP = Transport.UDP


def in_dialog(method: str, to_tag: str, branch: str, cseq: int = 2) -> bytes:
    """A request from the caller (A) inside the call's dialog."""
    return (
        f"{method} sip:b2bua@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        'From: "Alice" <sip:alice@10.9.9.9>;tag=atag\r\n'
        f"To: <sip:100@127.0.0.1>;tag={to_tag}\r\n"
        "Call-ID: a-call@10.9.9.9\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def answered_call(c: B2BUA, ack: bool = True) -> tuple[SipRequest, bytes, bytes, str]:
    """An answered call: (our INVITE to B, B's 200, the ACK we sent B, A's To tag)."""
    out = sends(c.receive(invite(), A, UDP, 0))
    binv = out[1][1]
    assert isinstance(binv, SipRequest)
    c.receive(answer(binv, 180, "Ringing"), B, UDP, 1 * MS)
    ok = answer(binv, 200, "OK", body=SDP)
    acts = [a for a in c.receive(ok, B, UDP, 2 * MS) if isinstance(a, Send)]
    assert [a.dst for a in acts] == [B, A]
    a200 = parse_message(acts[1].data)
    assert isinstance(a200, SipResponse) and a200.status == 200 and a200.to_tag
    if ack:
        assert c.receive(in_dialog("ACK", a200.to_tag, "z9hG4bKack1", 1), A, UDP, 3 * MS) == []
    return binv, ok, acts[0].data, a200.to_tag


def bye_from_a(c: B2BUA, tag: str, now: int) -> tuple[bytes, SipRequest]:
    """The caller hangs up: (our 200 to its BYE, our BYE to B), B's 200 answered."""
    acts = [
        a
        for a in c.receive(in_dialog("BYE", tag, "z9hG4bKbye1"), A, UDP, now)
        if isinstance(a, Send)
    ]
    assert [a.dst for a in acts] == [A, B]
    bbye = parse_message(acts[1].data)
    assert isinstance(bbye, SipRequest) and bbye.method == "BYE"
    assert c.receive(answer(bbye, 200, "OK", tag="btag"), B, UDP, now + MS) == []
    return acts[0].data, bbye


def test_an_ended_call_keeps_keys_and_answers_late_retransmissions_from_them() -> None:
    c = core()
    c.on_finished = lambda call: None  # as ``sipflow b2bua`` does (the truth is streamed)
    binv, ok, ack, tag = answered_call(c)
    bye_ok, _ = bye_from_a(c, tag, 1000 * MS)
    sizes = {k: len(v) for k, v in c.sizes().items()}
    # no dialog, no leg, no call: three keys (A's INVITE, our INVITE, A's BYE); only our
    # BYE's client transaction still runs (Completed, Timer K = T4)
    assert sizes == {**dict.fromkeys(sizes, 0), "lingering": 3, "transactions": 1}
    now = 2000 * MS
    # RFC 3261 §17.2.2: the re-sent BYE gets the same final response, byte for byte
    again = c.receive(in_dialog("BYE", tag, "z9hG4bKbye1"), A, UDP, now)
    assert again == [Send(bye_ok, A, UDP)]
    # §13.2.2.4: a re-sent 2xx gets our ACK again, to the B leg's peer
    assert c.receive(ok, B, UDP, now) == [Send(ack, B, UDP)]
    # RFC 6026 §7.1 / §8.4: a re-sent INVITE and a late 180 are absorbed (no new call)
    assert c.receive(invite(), A, UDP, now) == []
    assert c.receive(answer(binv, 180, "Ringing"), B, UDP, now) == []
    assert c.calls == {} and c.stats.dropped == {}
    # a new request in the ended dialog: no dialog any more (§12.2.2)
    other = sends(c.receive(in_dialog("BYE", tag, "z9hG4bKbye2", 3), A, UDP, now))
    assert [(d, getattr(m, "status", None)) for d, m in other] == [(A, 481)]
    # 64*T1 after the end the keys go too; a BYE is then a new transaction of no dialog
    c.expire(1000 * MS + LINGER)
    assert len(c.lingering) == 0
    late = sends(c.receive(in_dialog("BYE", tag, "z9hG4bKbye1"), A, UDP, 1001 * MS + LINGER))
    assert [(d, getattr(m, "status", None)) for d, m in late] == [(A, 481)]
    now = 1001 * MS + LINGER
    while (deadline := c.next_deadline()) is not None and deadline <= now + LINGER:
        c.expire(deadline)
    assert {k: len(v) for k, v in c.sizes().items()} == dict.fromkeys(c.sizes(), 0)


def test_a_call_with_a_transaction_still_working_lingers_whole() -> None:
    """BYE before the caller's ACK: our 2xx is still re-sent (§13.3.1.4), so the call keeps
    its dialogs (the ACK must find the A leg and stop the 2xx) until 64*T1."""
    c = core()
    c.on_finished = lambda call: None
    _, _, _, tag = answered_call(c, ack=False)
    bye_from_a(c, tag, 10 * MS)
    assert len(c.sizes()["legs"]) == 2 and len(c.lingering) == 1  # the BYE only
    # the ACK (new branch, §13.2.2.4) finds the leg: the 2xx is not re-sent any more
    assert c.receive(in_dialog("ACK", tag, "z9hG4bKack9", 1), A, UDP, 20 * MS) == []
    resent = [a for a in c.expire(2 * MS + 4 * T1) if isinstance(a, Send)]
    assert resent == []
    while (deadline := c.next_deadline()) is not None and deadline <= 10 * MS + 2 * LINGER:
        c.expire(deadline)
    assert {k: len(v) for k, v in c.sizes().items()} == dict.fromkeys(c.sizes(), 0)


# -- the real process --------------------------------------------------------------------


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    return s


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _recv(s: socket.socket, want: str) -> bytes:
    """The next datagram on ``s`` whose start line or CSeq method is ``want`` (others,
    e.g. 100 Trying or a 2xx re-sent before our ACK got there, are skipped)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        data = s.recv(65535)
        m = parse_message(data)
        if isinstance(m, SipRequest) and m.method == want:
            return data
        if isinstance(m, SipResponse) and f"{m.status} {m.cseq.method if m.cseq else ''}" == want:
            return data
    raise AssertionError(f"no {want} within 5 s")


def _silent(s: socket.socket, wait: float) -> list[bytes]:
    s.settimeout(wait)
    got: list[bytes] = []
    try:
        while True:
            got.append(s.recv(65535))
    except TimeoutError:
        return got
    finally:
        s.settimeout(5)


def _respond(req: bytes, status: int, reason: str, contact: str, body: bytes = b"") -> bytes:
    m = parse_message(req)
    h = m.headers
    to = h.get("to") or ""
    lines = [f"SIP/2.0 {status} {reason}", f"Via: {h.get('via')}", f"From: {h.get('from')}"]
    lines += [f"To: {to}" + ("" if "tag=" in to else ";tag=bside")]
    lines += [f"Call-ID: {m.call_id}", f"CSeq: {h.get('cseq')}", f"Contact: <{contact}>"]
    lines += ["Content-Type: application/sdp"] if body else []
    lines += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


def _from_a(method: str, b2b: int, a_port: int, branch: str, cseq: int, tag: str) -> bytes:
    to = f"<sip:100@127.0.0.1:{b2b}>" + (f";tag={tag}" if tag else "")
    body = SDP if method == "INVITE" else b""
    head = (
        f"{method} sip:100@127.0.0.1:{b2b} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{a_port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@127.0.0.1>;tag=alicetag\r\n"
        f"To: {to}\r\nCall-ID: late-rtx-1@127.0.0.1\r\nCSeq: {cseq} {method}\r\n"
        f"Contact: <sip:alice@127.0.0.1:{a_port}>\r\n"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@pytest.mark.timeout(60)
def test_the_b2bua_process_answers_retransmissions_after_the_call_ended(tmp_path: Path) -> None:
    """``sipflow b2bua`` on loopback; raw UDP sockets are the caller and the callee. After
    the caller's BYE ended the call: its BYE sent again gets the same 200, the callee's
    200 sent again gets the same ACK, the INVITE sent again starts nothing."""
    a, b = _udp(), _udp()
    a_port, b_port = a.getsockname()[1], b.getsockname()[1]
    port = _free_port()
    cfg = tmp_path / "b2bua.toml"
    cfg.write_text(
        f'[b2bua]\ntruth = "{tmp_path / "truth.json"}"\nseed = 5\n\n'
        f'[[listen]]\ntransport = "udp"\nhost = "127.0.0.1"\nport = {port}\n\n'
        f"[[route]]\nmatch = '^(.*)$'\ntarget = 'sip:\\1@127.0.0.1:{b_port}'\n"
    )
    cli = "from sipflow.cli import main; main()"
    proc = Proc.start("b2bua", [sys.executable, "-c", cli, "b2bua", "-c", str(cfg)], tmp_path)
    try:
        wait_for(lambda: port_bound(port, "udp", False), 20, "the B2BUA")
        dst = ("127.0.0.1", port)
        bcontact = f"sip:bob@127.0.0.1:{b_port}"
        inv = _from_a("INVITE", port, a_port, "z9hG4bKlate-inv", 1, "")
        a.sendto(inv, dst)
        binv = _recv(b, "INVITE")
        b.sendto(_respond(binv, 180, "Ringing", bcontact), dst)
        ok = _respond(binv, 200, "OK", bcontact, SDP)
        b.sendto(ok, dst)
        ack = _recv(b, "ACK")
        a200 = parse_message(_recv(a, "200 INVITE"))
        tag = a200.to_tag or ""
        a.sendto(_from_a("ACK", port, a_port, "z9hG4bKlate-ack", 1, tag), dst)
        bye = _from_a("BYE", port, a_port, "z9hG4bKlate-bye", 2, tag)
        a.sendto(bye, dst)
        bye_ok = _recv(a, "200 BYE")
        bbye = _recv(b, "BYE")
        b.sendto(_respond(bbye, 200, "OK", bcontact), dst)
        time.sleep(0.3)  # the call has ended; what follows is answered from its keys
        a.sendto(bye, dst)
        assert _recv(a, "200 BYE") == bye_ok
        b.sendto(ok, dst)
        assert _recv(b, "ACK") == ack
        a.sendto(inv, dst)
        assert _silent(a, 1.0) == [] and _silent(b, 0.2) == []  # no 100, no new INVITE
    finally:
        proc.stop(signal.SIGINT, 10)
        a.close()
        b.close()
    truth = (tmp_path / "truth.json").read_text()
    assert truth.count('"outcome": "answered"') == 1, proc.text()
