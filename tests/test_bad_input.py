"""Bad input gives findings and a best-effort result, never a traceback.

How this works: the demo capture (samples/pcaps, our own SIPp capture) is cut at every
byte of its last two records, as pcap and as pcapng (converted with editcap), and
analysed in-process with ``sipflow.analyze``; what must survive is computed from the
record layout (parsed here with struct) and counted by tshark on the complete-record
prefixes. Corrupt record lengths, garbage and HTTP on SIP ports (built with scapy),
SIP with a wrong Content-Length, an empty file and a text file follow; a few cases go
through the CLI for the exit codes of docs/json.md (0 analysed, 2 usage, 3 nothing
read, 4 some sources unreadable).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from peers.harness import tshark_sip_stat
from peers.sipflow_cli import REPO, run_sipflow

import sipflow

DEMO = REPO / "samples" / "pcaps" / "sipp_uac_uas_udp_mixed.pcap"

if not DEMO.exists():
    pytest.skip(f"{DEMO} missing (samples/make_samples.sh)", allow_module_level=True)
if shutil.which("tshark") is None or shutil.which("editcap") is None:
    pytest.skip("tshark/editcap (Wireshark tools) not installed: make deb", allow_module_level=True)


def analyse(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = sipflow.analyze([path]).to_dict()
    return result


def codes(result: dict[str, Any]) -> list[str]:
    return [f["code"] for f in result["findings"]]


# ---------------------------------------------------------------- record layouts


def pcap_records(data: bytes) -> list[int]:
    """Start offsets of the records of a little-endian pcap file (24-byte header)."""
    offsets, off = [], 24
    while off + 16 <= len(data):
        offsets.append(off)
        off += 16 + struct.unpack_from("<I", data, off + 8)[0]
    return offsets


def pcapng_packets(data: bytes) -> tuple[list[int], int]:
    """(start offsets of the Enhanced Packet Blocks, end of the file) of a pcapng file."""
    offsets, off = [], 0
    while off + 12 <= len(data):
        block_type, length = struct.unpack_from("<II", data, off)
        if block_type == 6:  # Enhanced Packet Block
            offsets.append(off)
        off += length
    return offsets, off


@pytest.fixture(scope="module")
def demo_pcapng(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ng") / "demo.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(DEMO), str(out)], check=True, timeout=60)
    return out


def _prefix_counts(
    data: bytes, starts: list[int], end: int, tmp: Path, header_end: int
) -> dict[int, int]:
    """tshark's SIP message count of the file cut after each of the last records."""
    counts: dict[int, int] = {}
    boundaries = [*starts[-2:], end]
    for n_complete, cut in zip(range(len(starts) - 2, len(starts) + 1), boundaries, strict=True):
        p = tmp / f"prefix{n_complete}"
        p.write_bytes(data[:cut])
        counts[n_complete] = tshark_sip_stat(p).total if cut > header_end else 0
    return counts


def _check_every_cut(data: bytes, starts: list[int], end: int, tmp: Path) -> None:
    expected = _prefix_counts(data, starts, end, tmp, starts[0])
    path = tmp / "cut"
    for cut in range(starts[-2], end):
        path.write_bytes(data[:cut])
        complete = sum(1 for s in starts if s < cut) - 1  # records before the cut one
        complete += cut in starts  # a cut exactly at a record start loses nothing
        result = analyse(path)
        assert result["sources"][0]["frames"] == complete, cut
        assert result["stats"]["sip_messages"] == expected[complete], cut
        truncated = [f for f in result["findings"] if f["code"].startswith("ingest.truncated")]
        if cut in starts:
            assert truncated == [], cut
        else:
            assert [r["frame"] for f in truncated for r in f["refs"]] == [complete + 1], cut


def test_pcap_cut_at_every_byte_of_the_last_two_records(tmp_path: Path) -> None:
    data = DEMO.read_bytes()
    _check_every_cut(data, pcap_records(data), len(data), tmp_path)


def test_pcapng_cut_at_every_byte_of_the_last_two_packets(
    demo_pcapng: Path, tmp_path: Path
) -> None:
    data = demo_pcapng.read_bytes()
    starts, end = pcapng_packets(data)
    assert end == len(data)
    _check_every_cut(data, starts, end, tmp_path)


# ---------------------------------------------------------------- corrupt lengths


@pytest.mark.parametrize(
    ("name", "patch"),
    [
        ("huge", lambda incl, orig: (0xFFFFFF00, orig)),
        ("zero", lambda incl, orig: (0, orig)),
        ("beyond_orig", lambda incl, orig: (incl + 40, orig)),
    ],
)
def test_corrupt_record_length(
    name: str, patch: Callable[[int, int], tuple[int, int]], tmp_path: Path
) -> None:
    data = bytearray(DEMO.read_bytes())
    starts = pcap_records(bytes(data))
    victim = 20  # 0-based: frame 21, the 404's ACK in the middle of the file
    off = starts[victim]
    incl, orig = struct.unpack_from("<II", data, off + 8)
    struct.pack_into("<II", data, off + 8, *patch(incl, orig))
    bad = tmp_path / f"{name}.pcap"
    bad.write_bytes(bytes(data))
    before = tmp_path / "before.pcap"
    before.write_bytes(bytes(data[:off]))
    result = analyse(bad)
    # Everything before the damaged record is analysed, and the damage is reported.
    assert result["stats"]["sip_messages"] >= tshark_sip_stat(before).total
    assert any(c.startswith("ingest.") for c in codes(result)), result["findings"]
    assert not any(c == "ingest.unreadable" for c in codes(result))


# ---------------------------------------------------------------- hostile payloads


SIP_INVITE = (
    "INVITE sip:bob@192.0.2.2 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{n}\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:alice@192.0.2.1>;tag=a{n}\r\n"
    "To: <sip:bob@192.0.2.2>\r\n"
    "Call-ID: bad-input-{n}@192.0.2.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:alice@192.0.2.1>\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {cl}\r\n\r\n"
    "{body}"
)
SDP = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
HTTP = b"GET /index.html HTTP/1.1\r\nHost: 192.0.2.2:5060\r\nUser-Agent: curl\r\n\r\n"


def _invite(n: int, cl_delta: int = 0) -> bytes:
    return SIP_INVITE.format(n=n, cl=len(SDP) + cl_delta, body=SDP).encode()


@pytest.fixture(scope="module")
def hostile_pcap(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """SIP, garbage and HTTP on UDP and TCP 5060 in one capture, built with scapy."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    def udp(payload: bytes, sport: int = 5060) -> Any:
        return (
            Ether() / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=sport, dport=5060) / payload
        )

    def tcp(payload: bytes, seq: int, flags: str = "PA") -> Any:
        ip = IP(src="192.0.2.1", dst="192.0.2.2")
        eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        return eth / ip / TCP(sport=40000, dport=5060, seq=seq, flags=flags) / payload

    garbage = bytes(range(256)) * 2
    packets = [
        udp(_invite(1)),  # good
        udp(garbage),  # binary garbage on UDP 5060
        udp(HTTP),  # HTTP on UDP 5060
        udp(b"\x00" * 3),  # tiny
        udp(_invite(2, cl_delta=+50)),  # Content-Length beyond the datagram
        udp(_invite(3, cl_delta=-10)),  # Content-Length shorter than the body
        tcp(b"", 1000, "S"),
        tcp(HTTP, 1001),  # HTTP on TCP 5060
        tcp(garbage, 1001 + len(HTTP)),
        udp(_invite(4)),  # good again after all that
    ]
    for i, p in enumerate(packets):
        p.time = 1_700_000_000 + i * 0.01
    path = tmp_path_factory.mktemp("hostile") / "hostile.pcap"
    wrpcap(str(path), packets)
    return path, {"frames": len(packets), "non_sip_udp": 3}


SIP_FRAMES = {1, 5, 6, 10}  # frames of the hostile capture that carry an INVITE


def _referenced(result: dict[str, Any]) -> set[int]:
    return {r["frame"] for f in result["findings"] for r in f["refs"]}


def test_garbage_and_http_on_sip_ports(hostile_pcap: tuple[Path, dict[str, int]]) -> None:
    path, facts = hostile_pcap
    result = analyse(path)
    stats, source = result["stats"], result["sources"][0]
    assert source["frames"] == facts["frames"]
    # The four INVITEs are SIP whatever their Content-Length says.
    assert stats["sip_requests"] == {"INVITE": 4}
    assert stats["transports"] == {"UDP": 4}
    # Garbage, HTTP and 3 bytes on UDP 5060: skipped with a reason.
    assert source["skipped"].get("non_sip_udp") == facts["non_sip_udp"]
    # HTTP and garbage on the TCP stream to 5060: reported where they are.
    assert {8, 9} <= _referenced(result), result["findings"]


def test_every_frame_is_accounted_for(hostile_pcap: tuple[Path, dict[str, int]]) -> None:
    path, facts = hostile_pcap
    result = analyse(path)
    skipped = sum(result["sources"][0]["skipped"].values())
    assert len(SIP_FRAMES | _referenced(result)) + skipped == facts["frames"], result


def test_wrong_content_length_is_a_finding(hostile_pcap: tuple[Path, dict[str, int]]) -> None:
    path, _ = hostile_pcap
    result = analyse(path)
    about_cl = {
        r["frame"]
        for f in result["findings"]
        if "Content-Length" in f["message"]
        for r in f["refs"]
    }
    # Frame 5 claims 50 bytes more than it has, frame 6 10 bytes less (RFC 3261 §18.3).
    assert about_cl == {5, 6}, result["findings"]


def test_hostile_capture_through_the_cli(hostile_pcap: tuple[Path, dict[str, int]]) -> None:
    path, _ = hostile_pcap
    res = run_sipflow(path)
    assert res.returncode == 0 and not res.traceback, res.stderr
    assert res.json["stats"]["sip_requests"] == {"INVITE": 4}


# ---------------------------------------------------------------- exit codes


def _cases(tmp: Path) -> dict[str, tuple[list[Path], int]]:
    data = DEMO.read_bytes()
    empty = tmp / "empty.pcap"
    empty.write_bytes(b"")
    text = tmp / "notes.pcap"
    text.write_text("this is not a capture\n" * 20)
    header_cut = tmp / "header_cut.pcap"
    header_cut.write_bytes(data[:10])
    record_cut = tmp / "record_cut.pcap"
    record_cut.write_bytes(data[:-7])
    return {
        "truncated record": ([record_cut], 0),
        "empty file": ([empty], 3),
        "text file": ([text], 3),
        "cut inside the file header": ([header_cut], 3),
        "missing file": ([tmp / "nope.pcap"], 3),
        "good + empty": ([DEMO, empty], 4),
        "text + truncated": ([text, record_cut], 4),
    }


@pytest.mark.parametrize(
    "case",
    [
        "truncated record",
        "empty file",
        "text file",
        "cut inside the file header",
        "missing file",
        "good + empty",
        "text + truncated",
    ],
)
def test_cli_exit_codes(case: str, tmp_path: Path) -> None:
    paths, expected = _cases(tmp_path)[case]
    res = run_sipflow(*paths)
    assert not res.traceback, res.stderr
    assert res.returncode == expected, (res.stdout[-500:], res.stderr[-500:])
    if expected in (0, 4):
        data = res.json
        unreadable = [s for s in data["sources"] if s["skipped"].get("unreadable")]
        assert len(unreadable) == (1 if expected == 4 else 0)


def test_cli_usage_error() -> None:
    res = run_sipflow("--no-such-option")
    assert res.returncode == 2 and not res.traceback


def test_library_never_raises_on_unreadable(tmp_path: Path) -> None:
    cases = _cases(tmp_path)
    for paths, expected in cases.values():
        result = analyse(paths[0]) if len(paths) == 1 else sipflow.analyze(paths).to_dict()
        if expected == 3:
            assert "ingest.unreadable" in codes(result)
            assert result["stats"]["sip_messages"] == 0
