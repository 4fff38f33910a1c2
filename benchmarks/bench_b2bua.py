"""Load through the reference B2BUA: SIPp UAC -> sipflow b2bua -> SIPp UAS on 127.0.0.1.

Usage: python benchmarks/bench_b2bua.py [--rate 50] [--duration 60] [--out DIR] [--transport udp]

SIPp's built-in ``uac``/``uas`` scenarios (INVITE, 100, 180, 200, ACK, pause, BYE, 200) at
RATE calls/s for DURATION s (bounded: -m RATE*DURATION, every process killed at the end).
Reports attempted/completed/failed calls (SIPp's counters), p50/p99 setup latency (INVITE
sent to 200 received, from SIPp's -trace_shortmsg), the B2BUA's CPU seconds and its RSS:
idle (after start), after a warm-up (``--warmup``, default 40 s of load: every ended call's
transactions are kept 64*T1 = 32 s for late retransmissions, RFC 3261 §17, as keys in
``B2BUA.lingering``, so the working set grows for the first ~32 s of a steady load and is
full after), at the end, and every 5 s. Growth is given from idle and from the warm-up.
The B2BUA records pcap, log and truth as in normal runs (the truth streamed to disk as
calls end).
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from peers.harness import Proc, parse_shortmsg, parse_stat_csv, port_bound, wait_for  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds user+system, RSS bytes) of a process from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = 100.0
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return cpu, rss


def _sipp(role: str, port: int, wd: Path, extra: list[str], t: str) -> list[str]:
    return [
        "sipp",
        "-sn",
        role,
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-t",
        "u1" if t == "udp" else "t1",
        "-nostdin",
        "-trace_stat",
        "-stf",
        str(wd / f"{role}_stat.csv"),
        "-trace_shortmsg",
        "-shortmessage_file",
        str(wd / f"{role}_short.log"),
        "-mp",
        str(_port()),
        *extra,
    ]


def write_config(cfg: Path, b2b_port: int, uas_port: int, transport: str) -> None:
    """The B2BUA's config: one listener, every user routed to the SIPp UAS, pcap/log/truth on."""
    cfg.write_text(
        f"""[b2bua]
pcap = "b2bua.pcap"
log = "b2bua.log"
truth = "b2bua.truth.json"

[[listen]]
transport = "{transport}"
host = "127.0.0.1"
port = {b2b_port}

[[route]]
match = '^(.*)$'
target = 'sip:\\1@127.0.0.1:{uas_port};transport={transport}'
transport = "{transport}"
"""
    )


def run(rate: int, duration: int, wd: Path, transport: str, warmup: int = 40) -> dict[str, object]:
    uas_port, b2b_port, uac_port = _port(), _port(), _port()
    cfg = wd / "b2bua.toml"
    write_config(cfg, b2b_port, uas_port, transport)
    calls = rate * duration
    cli = "from sipflow.cli import main; main()"
    b2bua = Proc.start("b2bua", [sys.executable, "-c", cli, "b2bua", "-c", str(cfg)], wd)
    uas = uac = None
    try:
        wait_for(lambda: port_bound(b2b_port, transport, False), 20, "the B2BUA")
        start_cpu, start_rss = _proc_stats(b2bua.popen.pid)
        uas = Proc.start("sipp-uas", _sipp("uas", uas_port, wd, [], transport), wd)
        wait_for(lambda: port_bound(uas_port, transport, False), 10, "SIPp UAS")
        uac_args = ["-r", str(rate), "-m", str(calls), "-d", "1000", f"127.0.0.1:{b2b_port}"]
        t0 = time.monotonic()
        uac = Proc.start("sipp-uac", _sipp("uac", uac_port, wd, uac_args, transport), wd)
        samples: list[float] = []  # RSS (MB) every 5 s: warm-up of bounded caches vs a leak
        warm_rss = 0
        while uac.popen.poll() is None and time.monotonic() - t0 < duration + 60:
            time.sleep(5)
            rss = _proc_stats(b2bua.popen.pid)[1]
            samples.append(round(rss / 2**20, 1))
            if not warm_rss and time.monotonic() - t0 >= warmup:
                warm_rss = rss
        uac.wait(5)
        wall = time.monotonic() - t0
        time.sleep(1)
        end_cpu, end_rss = _proc_stats(b2bua.popen.pid)
    finally:
        for p in (uac, uas):
            if p is not None:
                p.stop(signal.SIGINT, 5)
        b2bua.stop(signal.SIGINT, 30)
    stats = parse_stat_csv(wd / "uac_stat.csv")
    sent: dict[str, float] = {}
    setup: list[float] = []
    for m in parse_shortmsg(wd / "uac_short.log"):
        if m.direction == "S" and m.is_request and m.method == "INVITE":
            sent.setdefault(m.call_id, m.ts)
        elif (
            m.direction == "R" and not m.is_request and m.cseq_method == "INVITE" and m.code == 200
        ) and m.call_id in sent:
            setup.append((m.ts - sent.pop(m.call_id)) * 1000)
    setup.sort()
    return {
        "transport": transport,
        "rate_cps": rate,
        "duration_s": duration,
        "wall_s": round(wall, 1),
        "attempted": int(stats["OutgoingCall(C)"]),
        "completed": int(stats["SuccessfulCall(C)"]),
        "failed": int(stats["FailedCall(C)"]),
        "setup_ms_p50": round(statistics.median(setup), 2) if setup else None,
        "setup_ms_p99": round(setup[int(len(setup) * 0.99) - 1], 2) if setup else None,
        "b2bua_cpu_s": round(end_cpu - start_cpu, 2),
        "b2bua_cpu_pct": round(100 * (end_cpu - start_cpu) / wall, 1),
        "rss_start_mb": round(start_rss / 2**20, 1),
        "rss_end_mb": round(end_rss / 2**20, 1),
        "rss_growth_pct": round(100 * (end_rss - start_rss) / start_rss, 1),
        "warmup_s": warmup,
        "rss_warm_mb": round(warm_rss / 2**20, 1) if warm_rss else None,
        "rss_growth_after_warmup_pct": (
            round(100 * (end_rss - warm_rss) / warm_rss, 1) if warm_rss else None
        ),
        "rss_every_5s_mb": samples,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=50)
    ap.add_argument("--duration", type=int, default=60)
    ap.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--warmup", type=int, default=40, help="s of load before the warm RSS")
    args = ap.parse_args()
    wd = args.out or Path(tempfile.mkdtemp(prefix="bench-b2bua-"))
    wd.mkdir(parents=True, exist_ok=True)
    result = run(args.rate, args.duration, wd, args.transport, args.warmup)
    result["workdir"] = str(wd)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
