"""Anchored media (``media = "anchor"``): SDP rewritten to our port pairs, RTP relayed,
SRTP on the SRTP leg (RFC 4568 §5.1: each side encrypts what it sends with its own key).

The sans-IO part is driven by hand (bytes in, actions out); the regen scenario
``auth407-anchor`` runs the built-in UAs and the B2BUA on loopback sockets, and what the
B2BUA recorded is checked by sipflow's own analyser (streams mapped to the SDP, SRTP
decrypted and authenticated with the SDP's keys) and by tshark's ``rtp,streams``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import wave
from pathlib import Path
from typing import Any

import pytest

import sipflow
import sipflow.api
from sipflow.b2bua import media
from sipflow.b2bua.config import parse_config
from sipflow.b2bua.core import B2BUA, Send
from sipflow.b2bua.media import Anchor, MediaClose, MediaOpen, MediaSend
from sipflow.b2bua.scenarios import SCENARIOS, RegenResult, describe, regen
from sipflow.b2bua.scenarios import _free_pairs as free_rtp_pairs
from sipflow.b2bua.ua import rtp_packet, sdp, tone_frame
from sipflow.errors import InputError
from sipflow.ingest.types import Endpoint, Transport
from sipflow.sip.message import SipRequest, SipResponse, parse_message
from sipflow.sip.transaction import MS

pytestmark = pytest.mark.timeout(60)

A = Endpoint("127.0.0.1", 5070)
B = Endpoint("127.0.0.1", 5080)
CALLER_RTP = Endpoint("127.0.0.1", 4000)
CALLEE_RTP = Endpoint("127.0.0.1", 6000)
PACKETS = SCENARIOS["auth407-anchor"].rtp_packets


# -- SDP helpers ------------------------------------------------------------------------------


def test_anchor_sdp_names_our_pair_and_keeps_the_rest() -> None:
    body = sdp("alice", "10.1.2.3", 4000) + b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\n"
    out = media.anchor_sdp(body, Endpoint("127.0.0.9", 20002))
    assert media.media_address(out) == Endpoint("127.0.0.9", 20002)
    assert b"10.1.2.3" not in out  # c= and o= (topology hiding)
    kept = [ln for ln in body.split(b"\r\n") if not ln.startswith((b"c=", b"o=", b"m="))]
    assert [ln for ln in out.split(b"\r\n") if not ln.startswith((b"c=", b"o=", b"m="))] == kept
    assert b"m=audio 20002 RTP/AVP 0 8 101\r\n" in out


def test_media_address_media_level_c_wins_and_port_0_is_none() -> None:
    body = b"v=0\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\nc=IN IP4 10.0.0.2\r\n"
    assert media.media_address(body) == Endpoint("10.0.0.2", 5000)
    assert media.media_address(body.replace(b"5000", b"0")) is None
    assert media.media_address(b"v=0\r\nm=audio 5000 RTP/AVP 0\r\n") is None  # no c=


def test_port_pool_gives_even_pairs_until_empty() -> None:
    pool = media.PortPool("127.0.0.1", 20001, 20007)  # pairs 20002/3, 20004/5, 20006/7
    taken = [pool.take() for _ in range(3)]
    assert [e.port for e in taken if e] == [20002, 20004, 20006]
    assert pool.take() is None
    pool.give(Endpoint("127.0.0.1", 20004))
    assert pool.take() == Endpoint("127.0.0.1", 20004)


# -- the core, by hand ------------------------------------------------------------------------


def _core(srtp: bool = True) -> B2BUA:
    cfg = {
        "b2bua": {"seed": 1, "media": "anchor", "rtp_ports": [21000, 21007]},
        "listen": [{"transport": "udp", "host": "127.0.0.1", "port": 5060}],
        "route": [{"match": r"^(1\d+)$", "target": r"sip:\1@127.0.0.1:5080", "srtp": srtp}],
    }
    return B2BUA(parse_config(cfg))


def _invite(body: bytes) -> bytes:
    head = (
        "INVITE sip:100@127.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKaaa1\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@127.0.0.1>;tag=atag\r\nTo: <sip:100@127.0.0.1>\r\n"
        "Call-ID: a-call@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
        "Contact: <sip:alice@127.0.0.1:5070>\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _response(req: SipRequest, status: int, body: bytes = b"") -> bytes:
    h = req.headers
    lines = [f"SIP/2.0 {status} OK", f"Via: {h.get('via')}", f"From: {h.get('from')}"]
    lines += [f"To: {h.get('to')};tag=btag", f"Call-ID: {req.call_id}", f"CSeq: {h.get('cseq')}"]
    lines += ["Contact: <sip:bob@127.0.0.1:5080>", "Content-Type: application/sdp"]
    lines += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


def _sip(actions: list[Any], dst: Endpoint) -> list[SipRequest | SipResponse]:
    return [parse_message(a.data) for a in actions if isinstance(a, Send) and a.dst == dst]


def _ids(n: int) -> bytes:
    return bytes(range(n))


def _answered(c: B2BUA) -> tuple[Anchor, media.Crypto, media.Crypto, bytes]:
    """A call answered through the core: (its anchor, our offered key the callee took,
    the callee's key, the A leg's 200 body)."""
    acts = c.receive(_invite(sdp("alice", CALLER_RTP.ip, CALLER_RTP.port)), A, Transport.UDP, 0)
    opened = [a.local for a in acts if isinstance(a, MediaOpen)]
    assert len(opened) == 2 and all(ep.port % 2 == 0 for ep in opened)
    binv = _sip(acts, B)[0]
    assert isinstance(binv, SipRequest)
    # the B leg is offered our B-side pair, SDES on RTP/SAVP; nothing of the caller's address
    assert media.media_address(binv.body) == opened[1]
    assert b"RTP/SAVP" in binv.body and b"m=audio 4000" not in binv.body
    callee_key = media.answer_sdes(binv.body, _ids)
    assert callee_key is not None
    ans = sdp("bob", CALLEE_RTP.ip, CALLEE_RTP.port, crypto=True) + media.crypto_line(callee_key)
    acts = c.receive(_response(binv, 200, ans), B, Transport.UDP, 20 * MS)
    a200 = _sip(acts, A)[0]
    assert isinstance(a200, SipResponse) and a200.status == 200
    call = next(iter(c.calls.values()))
    assert call.anchor is not None and call.b is not None
    ours = media.offered_for(call.b.srtp_offer, callee_key)
    assert ours is not None
    return call.anchor, ours, callee_key, a200.body


def test_core_relays_plain_rtp_to_srtp_and_back() -> None:
    c = _core()
    anchor, ours, theirs, a_body = _answered(c)
    # the caller gets plain RTP/AVP naming our A-side pair (the seed's flow)
    assert media.media_address(a_body) == anchor.a_local
    assert b"RTP/AVP" in a_body and b"a=crypto" not in a_body
    callee_tx, callee_rx = media.srtp_pair(theirs, ours)  # the callee's view of the keys
    plain = rtp_packet(1, 0, 0x1234, tone_frame(660.0, 0))
    out = c.media_received(plain, anchor.a_local, CALLER_RTP, 30 * MS)
    assert len(out) == 1 and isinstance(out[0], MediaSend)
    sent = out[0]
    assert (sent.src, sent.dst) == (anchor.b_local, CALLEE_RTP)
    assert sent.data != plain and bytes(callee_rx.unprotect(sent.data)) == plain
    back = rtp_packet(1, 0, 0x5678, tone_frame(440.0, 0))
    out = c.media_received(bytes(callee_tx.protect(back)), anchor.b_local, CALLEE_RTP, 40 * MS)
    assert len(out) == 1 and isinstance(out[0], MediaSend)
    assert (out[0].src, out[0].dst, out[0].data) == (anchor.a_local, CALLER_RTP, back)


def test_core_drops_forged_and_garbage_media_without_raising() -> None:
    c = _core()
    anchor, ours, theirs, _ = _answered(c)
    callee_tx, _ = media.srtp_pair(theirs, ours)
    good = bytearray(callee_tx.protect(rtp_packet(7, 960, 0x5678, tone_frame(440.0, 6))))
    good[20] ^= 0xFF  # one flipped payload byte: RFC 3711 §3.3 authentication fails
    for data in (bytes(good), b"", b"\x00" * 40, b"GET / HTTP/1.0\r\n\r\n"):
        assert c.media_received(data, anchor.b_local, CALLEE_RTP, 50 * MS) == []
    assert c.stats.dropped["media-dropped"] == 4
    assert c.media_received(b"\x80" * 20, Endpoint("127.0.0.1", 21998), A, 0) == []
    assert c.stats.dropped["stray-media"] == 1


def test_core_holds_srtp_that_beats_the_answer() -> None:
    """SRTP from the callee reaching us before the 200 with its key (UDP overtaking SIP on
    TLS) is held, then relayed decrypted once the answer keys the leg; plain RTP from the
    caller meanwhile is not sent to the SRTP leg in the clear."""
    c = _core()
    acts = c.receive(_invite(sdp("alice", CALLER_RTP.ip, CALLER_RTP.port)), A, Transport.UDP, 0)
    binv = _sip(acts, B)[0]
    assert isinstance(binv, SipRequest)
    anchor = next(iter(c.calls.values())).anchor
    assert anchor is not None
    callee_key = media.answer_sdes(binv.body, _ids)
    offered = media.selected(binv.body)  # first line: the suite answer_sdes took
    assert callee_key is not None and offered is not None
    callee_tx, _ = media.srtp_pair(callee_key, offered)
    early = [rtp_packet(n, 160 * n, 0x77, tone_frame(440.0, n)) for n in (1, 2)]
    for pkt in early:
        assert c.media_received(bytes(callee_tx.protect(pkt)), anchor.b_local, B, 0) == []
    plain = rtp_packet(1, 0, 0x66, b"\xff" * 160)
    assert c.media_received(plain, anchor.a_local, CALLER_RTP, 0) == []
    ans = sdp("bob", CALLEE_RTP.ip, CALLEE_RTP.port, crypto=True) + media.crypto_line(callee_key)
    acts = c.receive(_response(binv, 200, ans), B, Transport.UDP, 20 * MS)
    relayed = [a for a in acts if isinstance(a, MediaSend)]
    assert [(m.src, m.dst, m.data) for m in relayed] == [
        (anchor.a_local, CALLER_RTP, pkt) for pkt in early
    ]
    assert c.stats.dropped == {"media-dropped": 1}


def test_core_plain_leg_relays_bytes_unchanged_and_ports_come_back() -> None:
    c = _core(srtp=False)
    acts = c.receive(_invite(sdp("alice", CALLER_RTP.ip, CALLER_RTP.port)), A, Transport.UDP, 0)
    binv = _sip(acts, B)[0]
    assert isinstance(binv, SipRequest) and b"RTP/AVP" in binv.body
    answer = sdp("bob", CALLEE_RTP.ip, CALLEE_RTP.port)
    c.receive(_response(binv, 200, answer), B, Transport.UDP, 10 * MS)
    call = next(iter(c.calls.values()))
    anchor = call.anchor
    assert anchor is not None and call.a is not None
    assert c.ports is not None and len(c.ports) == 2
    pkt = rtp_packet(3, 320, 9, b"\xff" * 160)
    out = c.media_received(pkt, Endpoint(anchor.a_local.ip, anchor.a_local.port + 1), A, 0)
    assert [(o.src.port, o.dst, o.data) for o in out if isinstance(o, MediaSend)] == [
        (anchor.b_local.port + 1, Endpoint(CALLEE_RTP.ip, CALLEE_RTP.port + 1), pkt)
    ]  # RTCP port to RTCP port (RFC 3550 §11)
    bye = (
        "BYE sip:b2bua@127.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKbye1\r\n"
        "From: <sip:alice@127.0.0.1>;tag=atag\r\n"
        f"To: <sip:100@127.0.0.1>;tag={call.a.local_tag}\r\n"
        "Call-ID: a-call@127.0.0.1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    acts = c.receive(bye, A, Transport.UDP, 2000 * MS)
    closed = {a.local for a in acts if isinstance(a, MediaClose)}
    assert closed == {anchor.a_local, anchor.b_local}
    assert len(c.ports) == 4 and c.media_received(pkt, anchor.a_local, A, 0) == []


def test_pass_mode_has_no_media_actions() -> None:
    cfg = {
        "b2bua": {"seed": 1},
        "listen": [{"transport": "udp", "host": "127.0.0.1", "port": 5060}],
        "route": [{"match": r"^(1\d+)$", "target": r"sip:\1@127.0.0.1:5080"}],
    }
    c = B2BUA(parse_config(cfg))
    body = sdp("alice", CALLER_RTP.ip, CALLER_RTP.port)
    acts = c.receive(_invite(body), A, Transport.UDP, 0)
    assert c.ports is None and all(isinstance(a, Send) or not hasattr(a, "local") for a in acts)
    binv = _sip(acts, B)[0]
    assert binv.body == body


# -- a regen run on loopback ----------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RegenResult:
    return regen("auth407-anchor", tmp_path_factory.mktemp("anchor") / "a.pcap", seed=5)


@pytest.fixture(scope="module")
def trace(run: RegenResult) -> sipflow.Trace:
    return sipflow.analyze([run.pcap])


def _legs(run: RegenResult) -> tuple[str, str]:
    truth = json.loads(run.truth.read_text())
    (call,) = truth["calls"]
    assert call["outcome"] == "answered" and call["b_legs"][0]["transport"] == "TLS"
    return call["a_leg"]["call_id"], call["b_legs"][0]["call_id"]


def test_regen_streams_on_both_legs_match_their_sdp(run: RegenResult, trace: Any) -> None:
    a_id, b_id = _legs(run)
    assert run.media == {
        "uac_out": PACKETS,
        "uac_in": PACKETS,
        "uas_out": PACKETS,
        "uas_in": PACKETS,
    }
    assert not any(run.nodes.values()), run.nodes  # no bind failure, unbound send, ICMP error
    assert not run.dropped["b2bua"], run.dropped
    streams = trace.rtp_stream_list
    assert len(streams) == 4 and all(s.packets == PACKETS for s in streams)
    by_leg: dict[str, list[Any]] = {a_id: [], b_id: []}
    for s in streams:
        (cid,) = trace.call_records[s.call].call_ids
        by_leg[cid].append(s)
    sdp_rows = trace.sdp[trace.sdp.final_status == 200]
    for cid, leg in by_leg.items():
        assert sorted(s.direction for s in leg) == ["to-answerer", "to-offerer"]
        call = next(i for i, c in enumerate(trace.call_records) if cid in c.call_ids)
        (row,) = sdp_rows[sdp_rows.call == call].itertuples()
        for s in leg:  # each stream goes where the receiver's SDP said (RFC 3264 §5)
            want = row.answer_addr if s.direction == "to-answerer" else row.offer_addr
            assert str(s.dst) == want, (cid, s.direction)
    # the B2BUA's pairs are neither UA's: the A leg's streams and the B leg's share no port
    ports = {
        cid: {str(s.src) for s in leg} | {str(s.dst) for s in leg} for cid, leg in by_leg.items()
    }
    assert not ports[a_id] & ports[b_id]


def test_regen_srtp_leg_decrypts_and_equals_the_plain_leg(
    run: RegenResult, trace: Any, tmp_path: Path
) -> None:
    a_id, b_id = _legs(run)
    data = trace.to_dict()
    for s in data["rtp_streams"]:
        srtp = s["srtp"]
        cid = s["call_id"]  # the leg's Call-ID; "call" indexes the story in calls[]
        assert cid in data["calls"][s["call"]]["call_ids"]
        if cid == a_id:
            assert srtp is None  # plain RTP on the caller's leg
        else:
            assert srtp["suite"] == "AEAD_AES_256_GCM"
            assert srtp["authenticated"] == s["packets"] == PACKETS and srtp["auth_failed"] == 0
    wavs = {a_id: {}, b_id: {}}  # type: dict[str, dict[str, bytes]]
    for cid in (a_id, b_id):
        for p in sipflow.api.export_audio([run.pcap], cid, tmp_path / cid):
            direction = "to-answerer" if "to-answerer" in p.name else "to-offerer"
            with wave.open(str(p)) as w:
                wavs[cid][direction] = w.readframes(w.getnframes())
    for direction in ("to-answerer", "to-offerer"):
        plain, decrypted = wavs[a_id][direction], wavs[b_id][direction]
        assert len(plain) == PACKETS * 160 * 2 and decrypted == plain
    assert wavs[a_id]["to-answerer"] != wavs[a_id]["to-offerer"]  # two different tones


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_regen_tshark_rtp_streams_agree(run: RegenResult, trace: Any) -> None:
    out = subprocess.run(
        ["tshark", "-n", "-r", str(run.pcap), "-q", "-z", "rtp,streams"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    row = re.compile(
        r"\s(\d+\.\d+\.\d+\.\d+)\s+(\d+)\s+(\d+\.\d+\.\d+\.\d+)\s+(\d+)\s+0x\S+\s+\S+\s+(\d+)"
    )
    theirs = {(f"{m[1]}:{m[2]}", f"{m[3]}:{m[4]}"): int(m[5]) for m in row.finditer(out)}
    ours = {(str(s.src), str(s.dst)): s.packets for s in trace.rtp_stream_list}
    assert len(theirs) == 4 and theirs == ours


def test_regen_list_names_the_scenario() -> None:
    assert re.search(r"^auth407-anchor\s+.*anchored media", describe(), re.M)


def test_config_media_keys_are_checked() -> None:
    base = {"listen": [{"transport": "udp", "port": 5060}]}
    cfg = parse_config({**base, "b2bua": {"media": "anchor", "rtp_ports": [30000, 30099]}})
    assert (cfg.media, cfg.rtp_ports, cfg.media_ip) == ("anchor", (30000, 30099), None)
    for bad in ([30000], [40000, 30000], ["a", "b"], [80, 90], 5):
        with pytest.raises(InputError, match="rtp_ports"):
            parse_config({**base, "b2bua": {"media": "anchor", "rtp_ports": bad}})
    with pytest.raises(InputError, match="media"):
        parse_config({**base, "b2bua": {"media": "relay"}})


def _udp(path: Path) -> list[tuple[str, str, str]]:
    """(src port, dst port, payload hex) of every UDP datagram, by tshark."""
    fields = ["-e", "udp.srcport", "-e", "udp.dstport", "-e", "udp.payload"]
    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-Y", "udp", "-T", "fields", *fields],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return sorted(tuple(line.split("\t")[:3]) for line in out.splitlines())  # type: ignore[misc]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_regen_pcap_rtp_equals_the_wire(run: RegenResult) -> None:
    """The B2BUA's own record of the RTP/SRTP it relayed equals tcpdump's capture of lo."""
    if run.wire is None:
        pytest.skip(f"no wire capture: {run.wire_note}")
    ours, wire = _udp(run.pcap), _udp(run.wire)
    assert len(ours) == 4 * PACKETS and ours == wire


# -- real peers: SIPp UAC playing RTP -> sipflow b2bua (anchor) -> SIPp UAS echoing it -------

RTP_PCAP = Path("/usr/share/sip-tester/dtmf_2833_1.pcap")


@pytest.mark.peers
@pytest.mark.timeout(120)
def test_sipp_rtp_through_anchored_b2bua(tmp_path: Path) -> None:
    """SIPp's UAC plays SIPp's own RTP capture after the ACK; SIPp's UAS (``-rtp_echo``)
    sends each packet back; ``sipflow b2bua`` with ``media = "anchor"`` relays both ways."""
    import os

    from b2bua_peers import run_b2bua
    from peers.harness import Scenario, missing_tools

    missing = missing_tools()
    if missing or not RTP_PCAP.exists():
        pytest.skip(f"real peers not installed: {', '.join(missing) or RTP_PCAP}")
    if os.geteuid() != 0:
        pytest.skip("SIPp's play_pcap_audio and tcpdump on lo need root")
    src = Path(__file__).resolve().parents[1] / "peers" / "scenarios" / "uac_answer.xml"
    play = f'<nop><action><exec play_pcap_audio="{RTP_PCAP}"/></action></nop>\n  <pause/>'
    uac = tmp_path / "uac_answer_rtp.xml"
    uac.write_text(src.read_text().replace("<pause/>", play, 1))
    sc = Scenario(
        "udp_anchor_rtp",
        str(uac),
        "uas_answer.xml",
        1,
        proxy=True,
        uas_args=("-rtp_echo",),
        pause_ms=1500,
    )
    base = free_rtp_pairs(2)  # two pairs free on 127.0.0.1 now (regen finds its own so too)
    top = f'media = "anchor"\nrtp_ports = [{base}, {base + 3}]'
    r = run_b2bua(sc, tmp_path, top=top)
    assert r.uac.stat("SuccessfulCall") == 1 and r.uas.stat("SuccessfulCall") == 1
    frames = subprocess.run(
        ["tshark", "-n", "-r", str(RTP_PCAP), "-T", "fields", "-e", "frame.number"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    sent = len(frames.split())
    trace = sipflow.analyze([r.pcap])
    streams = trace.rtp_stream_list
    # caller -> us, us -> callee, callee's echo -> us, us -> caller: every packet, 4 times
    assert len(streams) == 4 and [s.packets for s in streams] == [sent] * 4
    sdp_rows = trace.sdp[trace.sdp.final_status == 200]
    for s in streams:
        (row,) = sdp_rows[sdp_rows.call == s.call].itertuples()
        want = row.answer_addr if s.direction == "to-answerer" else row.offer_addr
        assert str(s.dst) == want
    assert {str(s.dst) for s in streams} & {str(s.src) for s in streams}  # we send from our pairs
