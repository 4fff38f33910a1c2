"""tshark 4.0 as the independent oracle for RTP stream figures, and a tiny pcap editor."""

from __future__ import annotations

import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

TSHARK = shutil.which("tshark")
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
PCAPS = SHARED / "corpus" / "pcaps"


@dataclass(frozen=True)
class TsharkStream:
    src: str
    sport: int
    dst: str
    dport: int
    ssrc: int
    payload: str
    packets: int
    lost: int
    max_delta: float
    mean_jitter: float
    max_jitter: float
    min_jitter: float

    @property
    def key(self) -> tuple[str, int, str, int, int]:
        return (self.src, self.sport, self.dst, self.dport, self.ssrc)


def tshark_streams(path: Path) -> list[TsharkStream]:
    """`tshark -q -z rtp,streams` with the RTP heuristic on (captures without SIP/SDP)."""
    assert TSHARK
    out = subprocess.run(
        [TSHARK, "-n", "-q", "-o", "rtp.heuristic_rtp:TRUE", "-z", "rtp,streams", "-r", str(path)],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 16 or not parts[6].startswith("0x"):
            continue
        # start end src sport dst dport ssrc payload... pkts lost (pct) 3 deltas 3 jitters [X]
        if parts[-1] == "X":
            parts = parts[:-1]
        f = [float(x) for x in parts[-6:]]
        rows.append(
            TsharkStream(
                src=parts[2],
                sport=int(parts[3]),
                dst=parts[4],
                dport=int(parts[5]),
                ssrc=int(parts[6], 16),
                payload=" ".join(parts[7:-9]),
                packets=int(parts[-9]),
                lost=int(parts[-8]),
                max_delta=f[2],
                mean_jitter=f[4],
                max_jitter=f[5],
                min_jitter=f[3],
            )
        )
    return rows


# -- a minimal classic-pcap editor (for deterministic loss / reorder / duplicate / delay) --


def read_pcap(path: Path) -> tuple[bytes, list[tuple[int, int, bytes]]]:
    """Global header and records (ts_sec, ts_usec, data) of a little-endian usec pcap."""
    raw = path.read_bytes()
    assert raw[:4] == b"\xd4\xc3\xb2\xa1", "test helper reads little-endian usec pcap only"
    head, off, recs = raw[:24], 24, []
    while off + 16 <= len(raw):
        sec, usec, incl, _orig = struct.unpack_from("<IIII", raw, off)
        recs.append((sec, usec, raw[off + 16 : off + 16 + incl]))
        off += 16 + incl
    return head, recs


def write_pcap(path: Path, head: bytes, recs: list[tuple[int, int, bytes]]) -> None:
    out = [head]
    for sec, usec, data in recs:
        sec, usec = sec + usec // 1_000_000, usec % 1_000_000
        out.append(struct.pack("<IIII", sec, usec, len(data), len(data)) + data)
    path.write_bytes(b"".join(out))
