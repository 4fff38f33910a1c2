"""What grows in the B2BUA under load: tracemalloc snapshots of a short SIPp run.

Usage: python benchmarks/b2bua_memory.py [--rate 50] [--duration 30] [--every 5] [--out DIR]

Runs ``sipflow b2bua`` (pcap, log and truth on, as in bench_b2bua.py) in a child process
with tracemalloc on (10 frames) and a thread that dumps a snapshot every ``--every``
seconds; SIPp ``-sn uac`` at RATE calls/s for DURATION s (1 s calls) goes through it to
SIPp ``-sn uas``. Then it prints, between the first snapshot taken under load and the
last, the allocation sites (file:line) that grew most, the heaviest ones with their
traceback, and the traced total and RSS at every snapshot: a leak keeps growing to the
last snapshot, a warm-up flattens.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_b2bua import _port, _proc_stats, _sipp, write_config  # noqa: E402
from peers.harness import Proc, port_bound, wait_for  # noqa: E402

DRIVER = """
import sys, threading, time, tracemalloc
from pathlib import Path
tracemalloc.start(10)
wd, every = Path(sys.argv[1]), float(sys.argv[2])
def snap():
    n = 0
    while True:
        time.sleep(every)
        tracemalloc.take_snapshot().dump(str(wd / f"snap-{n:03d}.tm"))
        n += 1
threading.Thread(target=snap, daemon=True).start()
from sipflow.b2bua import run_b2bua
run_b2bua(wd / "b2bua.toml")
"""


SIZES = """
import asyncio, collections, gc, signal, sys, threading, time
from pathlib import Path
from sipflow.b2bua.config import load_config
from sipflow.b2bua.core import B2BUA
from sipflow.b2bua.transport import serve
wd, every = Path(sys.argv[1]), float(sys.argv[2])
core = B2BUA(load_config(wd / "b2bua.toml"))
def sizes():
    out = open(wd / "sizes.txt", "w")
    while True:
        time.sleep(every)
        kinds = collections.Counter(type(o).__name__ for o in gc.get_objects())
        row = {k: len(v) for k, v in core.sizes().items()}
        row["calls_alive"] = kinds["Call"]  # ended calls still in memory (lingering or garbage)
        row["tx_timers"] = len(core.txs._timers)  # the heap keeps entries until they are due
        now = time.time_ns()
        ahead = sorted((e[0] - now) / 1e9 for e in list(core.txs._timers))
        row["tx_timer_s_ahead_max"] = round(ahead[-1], 1) if ahead else None
        row["tx_timers_overdue"] = sum(1 for a in ahead if a < 0)
        row.update({f"obj:{k}": n for k, n in kinds.most_common(40)})
        out.write(repr(row) + "\\n")
        out.flush()
threading.Thread(target=sizes, daemon=True).start()
async def main():
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
    await serve(core.config, stop, core)
asyncio.run(main())
"""


def _snapshots(wd: Path) -> list[Path]:
    return sorted(wd.glob("snap-*.tm"))


def report(wd: Path, first: int, top: int = 15) -> None:
    paths = _snapshots(wd)
    if len(paths) <= first + 1:
        print("not enough snapshots")
        return
    snaps = [tracemalloc.Snapshot.load(str(p)) for p in paths]
    filt = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<*")]
    snaps = [s.filter_traces(filt) for s in snaps]
    traced = [round(sum(t.size for t in s.traces) / 2**20, 1) for s in snaps]
    print("traced MB per snapshot:", traced)
    a, b = snaps[first], snaps[-1]
    print(f"\n-- growth by line, snapshot {first} -> {len(snaps) - 1} --")
    for st in b.compare_to(a, "lineno")[:top]:
        print(f"{st.size_diff / 2**10:10.1f} KiB {st.count_diff:+8d}  {st.traceback[0]}")
    print("\n-- heaviest growth with traceback --")
    for st in b.compare_to(a, "traceback")[:5]:
        print(f"{st.size_diff / 2**10:10.1f} KiB {st.count_diff:+8d}")
        for line in st.traceback.format()[-12:]:
            print("   ", line)


def run(rate: int, duration: int, every: float, wd: Path, sizes: bool) -> None:
    uas_port, b2b_port, uac_port = _port(), _port(), _port()
    write_config(wd / "b2bua.toml", b2b_port, uas_port, "udp")
    argv = [sys.executable, "-c", SIZES if sizes else DRIVER, str(wd), str(every)]
    b2bua = Proc.start("b2bua", argv, wd)
    uas = uac = None
    rss: list[float] = []
    try:
        slow = "the B2BUA (imports are slow under tracemalloc)"
        wait_for(lambda: port_bound(b2b_port, "udp", False), 120, slow)
        uas = Proc.start("sipp-uas", _sipp("uas", uas_port, wd, [], "udp"), wd)
        wait_for(lambda: port_bound(uas_port, "udp", False), 10, "SIPp UAS")
        calls = rate * duration
        args = ["-r", str(rate), "-m", str(calls), "-d", "1000", f"127.0.0.1:{b2b_port}"]
        uac = Proc.start("sipp-uac", _sipp("uac", uac_port, wd, args, "udp"), wd)
        t0 = time.monotonic()
        while uac.popen.poll() is None and time.monotonic() - t0 < duration + 60:
            time.sleep(every)
            rss.append(round(_proc_stats(b2bua.popen.pid)[1] / 2**20, 1))
        time.sleep(2 * every)  # a snapshot after the last call ended
    finally:
        for p in (uac, uas):
            if p is not None:
                p.stop(signal.SIGINT, 5)
        b2bua.stop(signal.SIGINT, 30)
    print("RSS MB every", every, "s:", rss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=50)
    ap.add_argument("--duration", type=int, default=30)
    ap.add_argument("--every", type=float, default=5.0)
    ap.add_argument("--first", type=int, default=1, help="snapshot to compare from")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument(
        "--sizes",
        action="store_true",
        help="no tracemalloc: write the core's container sizes and object counts by type "
        "every --every s to DIR/sizes.txt (full speed)",
    )
    args = ap.parse_args()
    wd = args.out or Path(tempfile.mkdtemp(prefix="b2bua-memory-"))
    wd.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        run(args.rate, args.duration, args.every, wd, args.sizes)
    if args.sizes:
        print((wd / "sizes.txt").read_text())
    else:
        report(wd, args.first)
    print("workdir:", wd)


if __name__ == "__main__":
    main()
