"""SRTP/SRTCP decryption with the SDES keys of the SDP (RFC 3711, RFC 4568), on captures of
real libsrtp packets made here and on a corpus capture whose SDP is inside TLS."""

from __future__ import annotations

import base64
import json
import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rtp_oracle import PCAPS, TSHARK, tshark_streams
from srtp_capture import S32, S80, SSRC_A, SSRC_B, key, session, srtp_call

from sipflow.api import Options, analyze, decode_audio, write_stream_audio
from sipflow.rtp.audio import g711_table
from sipflow.rtp.decrypt import StreamDecryptor, pylibsrtp_module, rtp_payload
from sipflow.sdp.srtp import sdes_keys

pytestmark = pytest.mark.timeout(120)
pylibsrtp = pytest.importorskip("pylibsrtp", reason="pylibsrtp (dev extra) decrypts SRTP")


def by_ssrc(trace: object) -> dict[int, object]:
    return {s.ssrc: s for s in trace.rtp_stream_list}  # type: ignore[attr-defined]


def codes(trace: object) -> list[str]:
    return [f.code for f in trace.finding_list]  # type: ignore[attr-defined]


def test_both_directions_decrypted_with_the_sdp_keys(tmp_path: Path) -> None:
    path, a, b = srtp_call(tmp_path / "srtp.pcap")
    trace = analyze([path])
    streams = by_ssrc(trace)
    sa, sb = streams[SSRC_A], streams[SSRC_B]
    assert (sa.direction, sb.direction) == ("to-answerer", "to-offerer")
    for st in (sa, sb):
        assert st.srtp["authenticated"] == st.srtp["decrypted"] == st.packets == 100
        assert st.srtp["auth_failed"] == st.srtp["replayed"] == 0
        # RFC 4568 §5.1.3: the offerer sends with the offered line whose tag was accepted
        assert (st.srtp["suite"], st.srtp["tag"]) == (S32, 2)
        assert st.srtp["srtcp"]["authenticated"] == st.srtp["srtcp"]["packets"] == 2
        # the SRs decrypted: the sender's own counts, not ciphertext
        assert (st.rtcp["sender_reports"], st.rtcp["sender_packets"]) == (2, 100)
    assert sa.rtcp["rtt_ms"] == {"min": 5.0, "max": 5.0}  # B's report block about A
    assert not [c for c in codes(trace) if c.startswith("srtp.")]
    # the decrypted payload is the original, byte for byte (G.711 decoded by table)
    samples = decode_audio(str(path), [sa, sb])
    for st, side in ((sa, a), (sb, b)):
        want = g711_table(0)[np.frombuffer(b"".join(side.payloads), np.uint8)]
        assert np.array_equal(samples[st.id], want)


def test_header_statistics_still_equal_tshark(tmp_path: Path) -> None:
    if TSHARK is None:
        pytest.skip("tshark (Debian tshark) is not installed")
    path, _, _ = srtp_call(tmp_path / "srtp.pcap", n=120)
    ours = {(s.src.ip, s.src.port, s.dst.ip, s.dst.port, s.ssrc): s
            for s in analyze([path]).rtp_stream_list}  # fmt: skip
    theirs = tshark_streams(path)
    assert {t.key for t in theirs} == set(ours)
    for t in theirs:
        assert (ours[t.key].packets, ours[t.key].lost) == (t.packets, t.lost) == (120, 0)


def test_wrong_key_is_an_authentication_failure(tmp_path: Path) -> None:
    path, _, _ = srtp_call(tmp_path / "wrong.pcap", b_sends_with=key(9))
    trace = analyze([path])
    sa, sb = by_ssrc(trace)[SSRC_A], by_ssrc(trace)[SSRC_B]
    assert sa.srtp["authenticated"] == 100 and sa.srtp["auth_failed"] == 0
    assert sb.srtp["authenticated"] == sb.srtp["decrypted"] == 0
    assert sb.srtp["auth_failed"] == 100 and sb.srtp["srtcp"]["auth_failed"] == 2
    assert sb.packets == 100 and sb.lost == 0  # header statistics are unaffected
    failed = [f for f in trace.finding_list if f.code == "srtp.auth_failed"]
    assert len(failed) == 1 and failed[0].rfc == "RFC 3711 §3.3"
    assert "every packet" in failed[0].message and "0x2222BBBB" in failed[0].message
    assert len(failed[0].refs) == 3 and failed[0].refs[0].frame == sb.first_frame
    assert "srtp.srtcp_auth_failed" in codes(trace)
    # only the stream that decrypted is exported as audio (the other is ciphertext)
    written = write_stream_audio(str(path), [sa, sb], tmp_path / "wav")
    assert [p.name for p in written] == [f"0-to-answerer-{SSRC_A:08x}.wav"]


def test_sender_using_an_unaccepted_tag(tmp_path: Path) -> None:
    path, _, _ = srtp_call(tmp_path / "tag1.pcap", a_sends_tag=1)
    trace = analyze([path])
    sa = by_ssrc(trace)[SSRC_A]
    assert sa.srtp["authenticated"] == 100 and (sa.srtp["suite"], sa.srtp["tag"]) == (S80, 1)
    assert "srtp.unselected_key" in codes(trace)
    assert "srtp.auth_failed" not in codes(trace)


def test_key_material_appears_in_no_output(tmp_path: Path) -> None:
    path, _, _ = srtp_call(tmp_path / "srtp.pcap")
    trace = analyze([path], Options(keep_messages=False))
    secrets = [base64.b64encode(key(n)).decode() for n in (1, 2, 3)]
    secrets += [key(n).hex() for n in (1, 2, 3)]
    outputs = [
        json.dumps(trace.to_dict(), default=str),
        trace.rtp_streams.to_csv(),
        trace.sdp.to_csv(),
        trace.findings.to_csv(),
        repr(trace.call_media),
        repr(trace.rtp_stream_list),
    ]
    for text in outputs:
        assert not [s for s in secrets if s in text]
    st = by_ssrc(trace)[SSRC_A]
    assert st.srtp_keys and st.srtp_keys[0].material() == key(2)
    # a split run's shards hand their calls' keys to the parent (sipflow.engine.shard)
    assert pickle.loads(pickle.dumps(st.srtp_keys[0])).material() == key(2)


def test_a_split_run_decrypts_as_one_process(tmp_path: Path) -> None:
    """The keys of calls parsed in a worker shard reach the parent, which decrypts."""
    path, _, _ = srtp_call(tmp_path / "srtp.pcap")
    plain = Options(keep_messages=False, keep_records=False)
    single = analyze([path], plain).to_dict()
    split = analyze([path], replace(plain, jobs=2, split=True)).to_dict()
    assert split["rtp_streams"] == single["rtp_streams"]
    assert {s["srtp"]["decrypted"] for s in split["rtp_streams"] if s.get("srtp")} != {0}


def test_without_pylibsrtp_a_finding_says_how_to_install(tmp_path: Path) -> None:
    path, _, _ = srtp_call(tmp_path / "srtp.pcap")
    script = (
        "import sys, json; sys.modules['pylibsrtp'] = None\n"  # import pylibsrtp fails
        "from sipflow.api import analyze\n"
        f"t = analyze([{str(path)!r}])\n"
        "print(json.dumps([[f.code, f.message] for f in t.finding_list]))\n"
        "print(json.dumps([[s.srtp, s.rtcp] for s in t.rtp_stream_list]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True).stdout.splitlines()  # fmt: skip
    findings, streams = json.loads(out[0]), json.loads(out[1])
    (msg,) = [m for c, m in findings if c == "srtp.not_decrypted"]
    assert "2 SRTP stream(s)" in msg and "pip install pylibsrtp" in msg
    for srtp, rtcp in streams:
        assert srtp["authenticated"] is None and "pylibsrtp" in srtp["not_decrypted"]
        assert rtcp is None  # what the clear read took for SR figures was ciphertext


def test_mki_is_stripped_before_libsrtp() -> None:
    # RFC 4568 §6.1 inline:<key||salt>|<lifetime>|<MKI value>:<MKI length>
    crypto = f"1 {S80} inline:{base64.b64encode(key(5)).decode()}|2^31|7:4"
    keys = sdes_keys((crypto,), (crypto,))
    assert keys is not None and keys.offer[0].mki_length == 4
    lib = pylibsrtp_module()
    assert lib is not None
    sender = session(key(5), S80)
    dec = StreamDecryptor(keys.selected("offerer"), lib)
    for i in range(5):
        clear = bytes([0x80, 0, 0, i]) + (160 * i).to_bytes(4, "big") + b"\x01\x02\x03\x04"
        clear += bytes([i]) * 160
        packet = sender.protect(clear)  # type: ignore[attr-defined]
        with_mki = packet[:-10] + b"\x00\x00\x00\x07" + packet[-10:]  # RFC 3711 §3.1
        got = dec.unprotect(with_mki, i + 1)
        assert got == clear and rtp_payload(got) == (0, 160 * i, bytes([i]) * 160)
    assert dec.rtp.authenticated == 5


def test_corpus_sdes_keys_inside_tls(tmp_path: Path) -> None:
    """voipshark's call: SIP over TLS (RSA key published with it), SDES SRTP both legs and a
    re-offer in an UPDATE; once TLS is decrypted every SRTP and SRTCP packet authenticates."""
    name = "voipshark__SIP-over-TLS-RSA-SRTP_Normal_Call_two_parties.pcap"
    path, rsa = PCAPS / name, PCAPS / "voipshark__default.key"
    if not path.exists():
        pytest.skip(f"{path} is absent (shared corpus not available)")
    trace = analyze([path], Options(tls_keys=[str(rsa)]))
    srtp = [s for s in trace.rtp_stream_list if s.srtp is not None]
    assert len(srtp) == 4 and {s.direction for s in srtp} == {"to-offerer", "to-answerer"}
    for s in srtp:
        assert s.srtp["authenticated"] == s.packets > 1000 and s.srtp["auth_failed"] == 0
        assert s.srtp["srtcp"]["authenticated"] == s.srtp["srtcp"]["packets"] > 0
        assert 0 < s.rtcp["sender_packets"] <= s.packets  # was a random 32-bit number
    assert not [c for c in codes(trace) if c.startswith("srtp.")]
    without = analyze([path])  # no TLS key: no SDP, so nothing can be decrypted
    assert all(s.srtp is None for s in without.rtp_stream_list)
    # the decrypted audio is speech and silence, not ciphertext (uniform codes average ~6000)
    call_id = trace.call_records[0].call_ids[0]
    from sipflow.api import export_audio

    wavs = export_audio([path], call_id, tmp_path, Options(tls_keys=[str(rsa)]))
    assert len(wavs) == 2
    import wave

    for wav in wavs:
        with wave.open(str(wav)) as w:
            x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(float)
        assert len(x) > 8000 * 20 and np.abs(x).mean() < 1000
