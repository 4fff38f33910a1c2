"""sipflow.analyze / the CLI on the shipped sample: multi-file merge, gzip, stdin, formats."""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sipflow
from sipflow.api import Options
from sipflow.trace import CALL_FIELDS

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "pcaps" / "sipp_uac_uas_udp_mixed.pcap"
SIPFLOW = [sys.executable, "-m", "sipflow.cli"]


def _doc(paths: list[str | Path], **kw: bool) -> dict:
    return sipflow.analyze(paths, Options(**kw)).to_dict()


def _calls_key(doc: dict) -> list[tuple]:
    return [
        (tuple(c["call_ids"]), c["outcome"], c["final_code"], c["messages"]) for c in doc["calls"]
    ]


@pytest.fixture(scope="module")
def whole() -> dict:
    return _doc([SAMPLE])


def test_sample_calls_match_how_it_was_made(whole: dict) -> None:
    # samples/README.md: answered, busy (486), rejected (404), cancelled (487), answered after 407;
    # then one REGISTER 401 -> 200 as non-call activity.
    outcomes = [(c["outcome"], c["final_code"]) for c in whole["calls"]]
    assert outcomes == [
        ("answered", 200),
        ("busy", 486),
        ("rejected", 404),
        ("cancelled", 487),
        ("answered", 200),
    ]
    assert [c["auth_challenges"] for c in whole["calls"]] == [0, 0, 0, 0, 1]
    assert [c["ended_by"] for c in whole["calls"]] == ["caller", "none", "none", "none", "caller"]
    assert whole["activity"] == [
        {"method": "REGISTER", "transactions": 2, "responses": {"200": 1, "401": 1},
         "no_final": 0, "retransmissions": 0}
    ]  # fmt: skip
    assert whole["stats"]["sip_messages"] == 35
    assert sum(whole["stats"]["sip_requests"].values()) == 17


@pytest.mark.skipif(
    shutil.which("editcap") is None, reason="editcap (Debian wireshark-common) missing"
)
def test_two_capture_points_merge_on_one_timeline(tmp_path: Path, whole: dict) -> None:
    """The sample split by frame ranges into two files (odd/even frames, so every call spans
    both) gives the same calls and counts as the whole file."""
    odd, even = tmp_path / "odd.pcap", tmp_path / "even.pcap"
    frames = whole["sources"][0]["frames"]
    evens = [str(n) for n in range(2, frames + 1, 2)]
    subprocess.run(["editcap", str(SAMPLE), str(odd), *evens], check=True)
    subprocess.run(["editcap", "-r", str(SAMPLE), str(even), *evens], check=True)
    merged = _doc([odd, even])
    assert _calls_key(merged) == _calls_key(whole)
    assert merged["stats"]["sip_requests"] == whole["stats"]["sip_requests"]
    assert merged["stats"]["sip_responses"] == whole["stats"]["sip_responses"]
    assert [s["frames"] for s in merged["sources"]] == [frames - len(evens), len(evens)]


def test_same_capture_twice_is_deduplicated(whole: dict) -> None:
    doc = _doc([SAMPLE, SAMPLE])
    assert _calls_key(doc) == _calls_key(whole)
    assert doc["stats"]["sip_messages"] == whole["stats"]["sip_messages"]
    assert doc["sources"][1]["duplicates"] + doc["sources"][0]["duplicates"] == 35


def test_gzip_and_stdin(tmp_path: Path, whole: dict) -> None:
    gz = tmp_path / "sample.pcap.gz"
    gz.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    assert _calls_key(_doc([gz])) == _calls_key(whole)
    out = subprocess.run(
        [*SIPFLOW, "analyze", "-", "--format", "json"],
        input=SAMPLE.read_bytes(),
        capture_output=True,
        check=True,
    )
    assert _calls_key(json.loads(out.stdout)) == _calls_key(whole)


def test_json_has_the_documented_fields(whole: dict) -> None:
    assert whole["schema"] == 1
    for key in ("path", "format", "link_types", "frames", "skipped", "duplicates"):
        assert key in whole["sources"][0]
    for key in ("sip_requests", "sip_responses", "retransmissions", "malformed", "transports"):
        assert key in whole["stats"]
    assert set(whole["calls"][0]) == {*CALL_FIELDS, "channels", "media", "quality", "dtmf", "legs"}
    documented = (REPO / "docs" / "json.md").read_text()
    for name in CALL_FIELDS:
        assert f'"{name}"' in documented, name


def test_csv_and_table_formats(tmp_path: Path) -> None:
    out = tmp_path / "calls.csv"
    subprocess.run([*SIPFLOW, "analyze", str(SAMPLE), "-f", "csv", "-o", str(out)], check=True)
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["final_code"] for r in rows] == ["200", "486", "404", "487", "200"]
    table = subprocess.run(
        [*SIPFLOW, "analyze", str(SAMPLE)], capture_output=True, text=True, check=True
    ).stdout
    assert "Calls: 5" in table and "REGISTER" in table and "cancelled" in table


def test_dataframes() -> None:
    trace = sipflow.analyze([SAMPLE])
    assert len(trace.calls) == 5
    assert len(trace.messages) == 35
    assert list(trace.messages["kind"]).count("request") == 17
    assert set(trace.transactions["method"]) >= {"INVITE", "ACK", "BYE", "CANCEL", "REGISTER"}
    assert len(trace.dialogs) >= 2
    # Call 1 sends 10 RFC 4733 packets one way only; call 5 is answered with no RTP at all.
    # Both use the same media ports: the stream belongs to the call that had begun.
    found = dict(zip(trace.findings["code"], trace.findings["message"], strict=True))
    assert sorted(found) == ["rtp.dtmf_not_negotiated", "rtp.no_audio", "rtp.one_way_audio"]
    assert "call 0 " in found["rtp.one_way_audio"]
    assert "call 4 " in found["rtp.no_audio"]


def test_unreadable_sources_exit_codes(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pcap"
    r = subprocess.run([*SIPFLOW, "analyze", str(missing)], capture_output=True, text=True)
    assert r.returncode == 3 and "Traceback" not in r.stderr
    r = subprocess.run(
        [*SIPFLOW, "analyze", str(SAMPLE), str(missing), "-f", "json"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 4
    assert len(json.loads(r.stdout)["calls"]) == 5


def test_audio_export_writes_a_wav_per_direction(tmp_path: Path) -> None:
    import wave

    capture = (
        REPO.parent
        / "shared"
        / "corpus"
        / "pcaps"
        / "voipshark__SIP-RTP-Normal_Call_two_parties.pcap"
    )
    if not capture.exists():
        pytest.skip(f"{capture} is absent (shared corpus not available)")
    trace = sipflow.analyze([capture])
    call = trace.call_records[0].call_ids[0]
    r = subprocess.run(
        [*SIPFLOW, "audio", str(capture), "--call", call, "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    wavs = sorted(tmp_path.glob("*.wav"))
    assert [str(p) for p in wavs] == sorted(r.stdout.split())
    assert len(wavs) == 2
    streams = {s.ssrc: s for s in trace.rtp_stream_list if s.call == 0}
    for path in wavs:
        ssrc = int(path.stem.rsplit("-", 1)[1], 16)
        with wave.open(str(path)) as w:
            assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (8000, 2, 1)
            # 20 ms G.711 packets: 160 samples each, lost ones filled with silence
            assert w.getnframes() == 160 * streams[ssrc].expected
    r = subprocess.run([*SIPFLOW, "audio", str(capture), "--call", "nope", "-o", str(tmp_path)])
    assert r.returncode == 2


def test_tls_key_on_the_command_line(tmp_path: Path) -> None:
    """voipshark's TLS 1.0 RSA capture with its published key: the SIP inside is analysed;
    without the key the connection is reported, not silently dropped."""
    pcaps = REPO.parent / "shared" / "corpus" / "pcaps"
    capture = pcaps / "voipshark__SIP-over-TLS-RTP-Normal_Call_two_parties.pcap"
    if not capture.exists():
        pytest.skip(f"{capture} is absent (shared corpus not available)")
    key = pcaps / "voipshark__default.key"
    args = [*SIPFLOW, "analyze", str(capture), "-f", "json"]
    with_key = json.loads(
        subprocess.run([*args, "--tls-key", str(key)], capture_output=True, check=True).stdout
    )
    assert with_key["stats"]["transports"] == {"TLS": 48}
    assert [c["outcome"] for c in with_key["calls"]] == ["answered"]
    assert all(s["decrypted"] for s in with_key["tls_sessions"] if s["carries_sip"])
    without = json.loads(subprocess.run(args, capture_output=True, check=True).stdout)
    assert without["stats"]["sip_messages"] == 0
    assert {f["code"] for f in without["findings"]} & {"tls.no_key"}
    bad = subprocess.run([*args, "--tls-key", str(tmp_path / "missing.key")], capture_output=True)
    assert bad.returncode == 2 and b"Traceback" not in bad.stderr
