"""Memory soak of ``sipflow live``: a steady SIPp call rate on loopback, RSS sampled.

Runs ``sipflow live -i lo`` (writing a rotated capture) while SIPp's built-in UAC calls
its built-in UAS at a fixed rate for ``--minutes`` (default 10), every call lasting
``--hold`` ms. The RSS of the live process is sampled every 5 s from /proc; the result
compares the RSS after the first minute with the RSS at the end (the issue's bound:
within 10 %). Loopback only, bounded in calls and time; every process is stopped at the
end. Needs root (capture) and sipp.

    sudo .venv/bin/python benchmarks/soak_live.py --minutes 10 --rate 20
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PORTS = (5390, 5391)  # UAS, UAC: outside the test suite's 5100-5299 block


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def sipflow() -> list[str]:
    exe = Path(sys.executable).with_name("sipflow")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "sipflow.cli"]


def stop(p: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> None:
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=20, help="calls per second")
    ap.add_argument("--hold", type=int, default=1000, help="call length, ms")
    ap.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the capture and call log")
    args = ap.parse_args()
    if shutil.which("sipp") is None:
        print("soak_live: sipp is not installed", file=sys.stderr)
        return 2
    seconds = args.minutes * 60
    wd = Path(tempfile.mkdtemp(prefix="soak_live_"))
    uas_port, uac_port = PORTS
    bpf = f"udp and (port {uas_port} or port {uac_port})"
    live_argv = [*sipflow(), "live", "-i", "lo", "-f", bpf, "--json-lines"]
    live_argv += ["--write", str(wd / "soak.pcap"), "--rotate", "20M"]
    live_argv += ["--duration", str(seconds + 60)]
    calls_out = (wd / "calls.jsonl").open("wb")
    err = (wd / "live.err").open("wb")
    live = subprocess.Popen(live_argv, stdout=calls_out, stderr=err)
    procs = [live]
    samples: list[tuple[float, int]] = []
    try:
        deadline = time.monotonic() + 30
        while b"sipflow live: " not in (wd / "live.err").read_bytes():
            if live.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"sipflow live did not start: {(wd / 'live.err').read_text()}")
            time.sleep(0.1)
        common = ["-i", "127.0.0.1", "-nostdin"]
        uas = subprocess.Popen(
            ["sipp", "-sn", "uas", "-p", str(uas_port), *common],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(uas)
        time.sleep(0.5)
        total = int(args.rate * seconds)
        load = ["-r", str(args.rate), "-d", str(args.hold), "-m", str(total)]
        uac = subprocess.Popen(
            ["sipp", "-sn", "uac", "-p", str(uac_port), *common, *load, f"127.0.0.1:{uas_port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(uac)
        start = time.monotonic()
        while uac.poll() is None and time.monotonic() - start < seconds + 120:
            samples.append((round(time.monotonic() - start, 1), rss_kib(live.pid)))
            time.sleep(5)
        time.sleep(3)
        samples.append((round(time.monotonic() - start, 1), rss_kib(live.pid)))
    finally:
        for p in reversed(procs):
            stop(p)
        calls_out.close()
        err.close()
    after_1min = next((r for t, r in samples if t >= 60), samples[-1][1])
    end = samples[-1][1]
    by_minute: dict[int, int] = {}  # the first sample at or after each whole minute
    for t, r in samples:
        by_minute.setdefault(int(t // 60), r)
    by_minute.pop(0, None)
    calls = sum(1 for line in (wd / "calls.jsonl").read_bytes().splitlines() if line.strip())
    result = {
        "minutes": args.minutes,
        "rate": args.rate,
        "calls_finished": calls,
        "calls_sent": int(args.rate * seconds),
        "rss_kib_after_1min": after_1min,
        "rss_kib_end": end,
        "rss_growth_pct": round(100.0 * (end - after_1min) / after_1min, 2),
        "rss_kib_by_minute": by_minute,
        "rss_samples": samples,
        "live_summary": (wd / "live.err").read_text().strip().splitlines()[-4:],
    }
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    if args.keep:
        print(f"kept {wd}", file=sys.stderr)
    else:
        shutil.rmtree(wd, ignore_errors=True)
    return 0 if abs(result["rss_growth_pct"]) <= 10 else 1


if __name__ == "__main__":
    raise SystemExit(main())
