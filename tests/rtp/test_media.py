"""DTMF, G.711 export, MOS, RTCP, classification, and streams mapped to SDP."""

from __future__ import annotations

import random
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from rtp_oracle import PCAPS, read_pcap, write_pcap
from test_streams import collect

from sipflow.api import analyze, decode_audio, write_stream_audio
from sipflow.ingest.capture import read_capture
from sipflow.ingest.types import SourceStats
from sipflow.rtp import mos
from sipflow.rtp.columns import MediaKind, media_kind
from sipflow.rtp.dtmf import call_digits, rfc4733_digits, sip_info_digits
from sipflow.rtp.mapping import NS, SLACK, Announced, _pick, map_streams, rtp_rows
from sipflow.rtp.rtcp import RR, SR, parse_compound
from sipflow.rtp.streams import RtpCollector


def corpus(name: str) -> Path:
    path = PCAPS / name
    if not path.exists():
        pytest.skip(f"{path} is absent (shared corpus not available)")
    return path


# -- DTMF -------------------------------------------------------------------------------


def test_rfc4733_digit_with_repeated_end_packets() -> None:
    path = corpus("sipp__dtmf_2833_1.pcap")
    streams, _ = collect(path)
    (s,) = streams
    (d,) = rfc4733_digits(s.events, pt=None)
    assert d.digit == "1"
    assert d.end_seen and d.end_packets == 3  # RFC 4733 §2.5.1.4: end sent three times
    assert d.packets == 8  # distinct sequence numbers: the repeated end counted once
    assert d.volume_dbm0 == 10
    assert d.duration_ms == pytest.approx(0x08C0 / 8)  # 2240 units at 8 kHz


def test_rfc4733_digits_in_a_call() -> None:
    path = corpus("sipnab__SIP_DTMF2.cap")
    streams, _ = collect(path)
    events = [d for s in streams for d in rfc4733_digits(s.events, pt=96)]
    assert len(events) >= 5
    assert all(d.end_seen for d in events)
    assert sum(d.packets + d.end_packets - 1 for d in events) <= 35  # tshark: 35 rtpevents


def test_sip_info_digits() -> None:
    path = corpus("sipnab__DTMFsipinfo.pcap")
    trace = analyze([path])
    digits = sip_info_digits(trace.message_list)
    assert call_digits([], digits) == "1342"  # Signal= lines of the four INFOs (tshark)
    assert all(d.duration_ms == 180 for d in digits)


def tshark_rtpevent_digits(path: Path) -> str:
    """tshark's DTMF: one digit per event (SSRC + RTP timestamp), in order of its first
    end packet (tshark maps the event payload type from the SDP, as we do)."""
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    fields = ["-e", "rtp.ssrc", "-e", "rtp.timestamp", "-e", "rtpevent.event_id"]
    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-Y", "rtpevent.end_of_event == 1", "-T", "fields",
         *fields],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    seen: dict[tuple[str, str], str] = {}
    for line in out.splitlines():
        ssrc, ts, event = line.split("\t")
        seen.setdefault((ssrc, ts), "0123456789*#ABCD"[int(event)])
    return "".join(seen.values())


def test_call_dtmf_equals_tshark_rtpevents() -> None:
    """The digits of each call in the JSON (``calls[].dtmf``), from the telephone-event
    payload type its SDP negotiated, equal tshark's decoded RFC 4733 events."""
    path = corpus("sipnab__SIP_DTMF2.cap")
    doc = analyze([path]).to_dict()
    ours = "".join(c["dtmf"]["digits"] for c in doc["calls"])
    assert ours == tshark_rtpevent_digits(path) == "6789123"
    events = [e for c in doc["calls"] for e in c["dtmf"]["events"]]
    assert {e["via"] for e in events} == {"rfc4733"} and all(e["end"] for e in events)


def test_unnegotiated_dtmf_is_decoded_and_reported() -> None:
    """SIPp's sample call sends RFC 4733 events on type 101 that its SDP (PCMU only) never
    offered: decoded as tshark does by default, with a finding."""
    path = Path(__file__).resolve().parents[2] / "samples" / "pcaps" / "sipp_uac_uas_udp_mixed.pcap"
    doc = analyze([path]).to_dict()
    ours = "".join(c["dtmf"]["digits"] for c in doc["calls"])
    assert ours == tshark_rtpevent_digits(path) == "1"
    (f,) = [f for f in doc["findings"] if f["code"] == "rtp.dtmf_not_negotiated"]
    assert "payload type 101" in f["message"] and f["refs"]


def test_call_dtmf_from_sip_info() -> None:
    path = corpus("sipnab__DTMFsipinfo.pcap")
    (call,) = analyze([path]).to_dict()["calls"]
    assert call["dtmf"]["digits"] == "1342"  # the Signal= lines of the four INFOs (tshark)
    assert [e["via"] for e in call["dtmf"]["events"]] == ["sip-info"] * 4


# -- audio ----------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")
def test_g711a_export_equals_sox(tmp_path: Path) -> None:
    path = corpus("sipp__g711a.pcap")
    streams, _ = collect(path)
    (wav,) = write_stream_audio(str(path), streams, tmp_path)
    with wave.open(str(wav)) as w:
        ours = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        assert (w.getframerate(), w.getnchannels()) == (8000, 1)
    _, recs = read_pcap(path)
    raw = tmp_path / "payload.al"
    raw.write_bytes(b"".join(data[42 + 12 :] for _, _, data in recs))
    out = tmp_path / "sox.raw"
    sox = ["sox", "-t", "al", "-r", "8000", "-c", "1", str(raw), "-t", "s16", "-e", "signed"]
    subprocess.run([*sox, str(out)], check=True, timeout=60)
    theirs = np.frombuffer(out.read_bytes(), "<i2")
    assert len(ours) == len(theirs) == 236 * 240
    assert np.array_equal(ours, theirs)


def test_lost_packet_is_silence(tmp_path: Path) -> None:
    path = corpus("sipp__g711a.pcap")
    head, recs = read_pcap(path)
    del recs[5]
    cut = tmp_path / "lost.pcap"
    write_pcap(cut, head, recs)
    streams, _ = collect(cut)
    whole = decode_audio(str(path), collect(path)[0])[0]
    samples = decode_audio(str(cut), streams)[0]
    assert len(samples) == len(whole)
    assert not samples[5 * 240 : 6 * 240].any()
    assert np.array_equal(samples[: 5 * 240], whole[: 5 * 240])


# -- MOS ----------------------------------------------------------------------------------


def test_emodel_reference_points() -> None:
    assert mos.mos_from_r(93.2) == pytest.approx(4.41, abs=0.005)  # G.107 default R
    assert mos.mos_from_r(-3) == 1.0 and mos.mos_from_r(120) == 4.5
    clean = mos.mos("PCMA", 0.0, 0.5)
    lossy = mos.mos("PCMA", 5.0, 0.5)
    g729 = mos.mos("G729", 0.0, 0.5)
    assert clean > g729 > 3.9 and clean > lossy
    # G.107 eq. 7-29 at 5 % random loss, Ie 0, Bpl 25.1: Ie,eff = 95 * 5 / 30.1
    assert mos.r_factor("PCMA", 5.0, 0.0) == pytest.approx(93.2 - 95 * 5 / 30.1)


# -- classification and RTCP ---------------------------------------------------------------


def test_media_kind_by_first_bytes() -> None:
    payloads = [
        bytes([0x80, 8]) + bytes(170),  # RTP PCMA
        bytes([0x81, 200, 0, 6]) + bytes(24),  # RTCP SR, length 6 words
        bytes([0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42]) + bytes(12),  # STUN binding request
        bytes([22, 0xFE, 0xFD]) + bytes(30),  # DTLS 1.2 handshake
        bytes([0x10, 0, 0, 1, 0x5A, 0x52, 0x54, 0x50]) + bytes(8),  # ZRTP
        bytes([0x80, 0xC8 & 0x7F | 0x00]) + bytes(2),  # too short for RTP
        bytes([0x80, 72]) + bytes(20),  # PT 72: reserved (RTCP conflict), not RTP
    ]
    head = np.zeros((len(payloads), 16), np.uint8)
    for i, p in enumerate(payloads):
        head[i, : min(16, len(p))] = np.frombuffer(p[:16], np.uint8)
    kinds = media_kind(head, np.array([len(p) for p in payloads]))
    assert kinds.tolist() == [
        MediaKind.RTP, MediaKind.RTCP, MediaKind.STUN, MediaKind.DTLS, MediaKind.ZRTP,
        MediaKind.OTHER, MediaKind.OTHER,
    ]  # fmt: skip


def test_rtcp_compound_sr_rr() -> None:
    sr = bytes([0x81, SR, 0, 12]) + (0x1234).to_bytes(4, "big") + bytes(20)
    block = (0xABCD).to_bytes(4, "big") + bytes([64, 0xFF, 0xFF, 0xFE]) + bytes(16)
    rr = bytes([0x81, RR, 0, 7]) + (0x9999).to_bytes(4, "big") + block
    sr += block
    out = parse_compound(sr + rr)
    assert [p.name for p in out] == ["SR", "RR"]
    assert out[0].reports[0].fraction_lost == 0.25
    assert out[0].reports[0].cumulative_lost == -2  # signed 24 bits (RFC 3550 §6.4.1)


def test_rtcp_in_corpus_counted() -> None:
    _, col = collect(corpus("heplify__rtp_rtcp_sip_ipv4_udp.pcap"))
    assert col.counts["rtcp"] == 28  # tshark -Y rtcp: 28 packets
    assert col.counts["rtcp_malformed"] == 0


# -- mapping to SDP, one-way audio ----------------------------------------------------------


def analyse_with_rtp(path: Path) -> tuple:
    trace = analyze([path])
    col = RtpCollector()
    for _ in read_capture(str(path), 0, SourceStats(str(path)), [], col):
        pass
    streams = col.finish()
    return map_streams(streams, trace.call_records, trace.call_media, {0} if streams else set())


def test_two_party_call_mapped_both_ways() -> None:
    streams, quality, findings = analyse_with_rtp(
        corpus("voipshark__SIP-RTP-Normal_Call_two_parties.pcap")
    )
    assert all(s.call is not None for s in streams), [str(s.dst) for s in streams]
    assert {s.direction for s in streams} == {"to-offerer", "to-answerer"}
    assert all(s.mos is not None and s.mos > 4.0 for s in streams)
    assert not [f for f in findings if f.code in ("rtp.one_way_audio", "rtp.no_audio")]
    rows = rtp_rows(streams)
    assert len(rows) == 4 and rows[0]["codec"] == "PCMU"
    assert any(q["directions"] for q in quality)


def test_a_call_hung_up_at_once_is_not_judged_for_one_way_audio() -> None:
    """goffinet's phone-to-phone call: BYE 32 ms after the 200, RTP only from the callee
    in that time; too short to say the caller's audio is missing."""
    path = corpus("goffinet__sip-phone-to-phone.pcapng")
    (call,) = analyze([path]).to_dict()["calls"]
    assert call["outcome"] == "answered" and call["duration_s"] < 0.1
    trace = analyze([path])
    assert not [f for f in trace.finding_list if f.code.startswith("rtp.")]


def test_direct_media_through_a_b2bua_is_not_no_audio() -> None:
    """Asterisk re-INVITEs both phones to direct media: both legs' SDP announce the phones,
    each stream is mapped to one leg; the other leg's directions show the packets that
    reached its announced addresses instead of a false rtp.no_audio."""
    path = corpus("goffinet__sip-2phones-B2BUA-Asterisk.pcapng")
    doc = analyze([path]).to_dict()
    assert not [f for f in doc["findings"] if f["code"] in ("rtp.no_audio", "rtp.one_way_audio")]
    (call,) = doc["calls"]
    dirs = call["quality"]["directions"]
    assert all(d["on_other_leg"] for d in dirs.values())
    assert sum(d["packets"] for d in dirs.values()) == sum(s["packets"] for s in doc["rtp_streams"])


def test_a_call_cut_by_the_end_of_the_capture_lasts_as_long_as_its_media() -> None:
    """heplify's capture ends 26 s into a call, no BYE: its duration runs to the last RTP
    packet mapped to it, not to its last SIP message 0.05 s after the answer."""
    path = corpus("heplify__rtp_rtcp_sip_ipv4_udp.pcap")
    doc = analyze([path]).to_dict()
    call = doc["calls"][0]
    assert (call["outcome"], call["ended_by"], call["end"]) == ("answered", "none", None)
    last = max(s["end"] for s in doc["rtp_streams"] if s["call"] == 0)
    assert call["duration_s"] == pytest.approx(last - call["answer"], abs=1e-3)
    assert call["duration_s"] > 20


def test_one_way_audio_detected(tmp_path: Path) -> None:
    path = corpus("heplify__rtp_rtcp_sip_ipv4_udp.pcap")
    head, recs = read_pcap(path)
    # drop every UDP packet from 200.57.7.204:8000 (one direction of the call's media)
    src = bytes([200, 57, 7, 204]) + bytes([0x1F, 0x40])
    kept = [r for r in recs if not (len(r[2]) > 36 and r[2][26:30] + r[2][34:36] == src)]
    assert len(kept) < len(recs)
    cut = tmp_path / "oneway.pcap"
    write_pcap(cut, head, kept)
    _, _, findings = analyse_with_rtp(cut)
    codes = [f.code for f in findings]
    assert "rtp.one_way_audio" in codes, codes
    _, _, before = analyse_with_rtp(path)
    assert "rtp.one_way_audio" not in [f.code for f in before]


def _pick_by_scan(cands: list[Announced], t: int) -> Announced | None:
    """The rule of ``mapping._pick`` written out, every candidate looked at."""
    live = [a for a in cands if a.start <= t <= a.end]
    begun = [a for a in live if a.start + SLACK <= t]
    if begun:
        return max(begun, key=lambda a: a.start)
    return min(live, key=lambda a: a.start) if live else None


def test_stream_picks_its_call_among_many_on_one_address() -> None:
    """Every call of a SIPp run may announce the same address: the bisection in ``_pick``
    picks what the rule written out picks (ties, open-ended calls, streams between calls)."""
    streams, _, _ = analyse_with_rtp(corpus("voipshark__SIP-RTP-Normal_Call_two_parties.pcap"))
    rng = random.Random(7)
    starts = sorted(rng.randrange(0, 600) * NS // 10 for _ in range(300))  # ties on purpose
    cands = [
        Announced(i, None, None, side, s - SLACK, s + rng.choice((2, 30, 86400)) * NS + SLACK)  # type: ignore[arg-type]
        for i, s in enumerate(starts)
        for side in ("offerer", "answerer")
    ]
    for t in range(-10 * NS, 70 * NS, NS // 7):
        st = streams[0].evolve(start=t)
        assert _pick(cands, st) is _pick_by_scan(cands, t), t
