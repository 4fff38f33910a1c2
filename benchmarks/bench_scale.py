"""Scale benchmark: many rotated captures on 1, 2 and all cores; memory per worker.

How this works: benchmarks/out/load.pcap (gen_load.py) is cut by ``editcap -c N`` into a
set of rotated files (benchmarks/out/scale/, kept for the next run). Each measurement runs
in a fresh Python process (so imports and pool start-up are paid as a user pays them):

- throughput: ``api.analyze(files, Options(jobs=J))`` for J in 1, 2, all cores, each J > 1
  both split by Call-ID (:mod:`sipflow.engine.shard`) and one worker per file
  (``split=False``, :mod:`sipflow.engine.pool`); median wall time of RUNS runs, packets/s,
  speed-up and scaling efficiency (speed-up / J), the parent's CPU time and peak RSS, the
  largest worker's peak RSS; the JSON documents of every run must be equal, findings
  compared as a set (exit 1 otherwise);
- transfer (one worker per file): messages sent as pickled objects vs packed bytes
  re-parsed in the parent (``pool.TRANSFER``), parent CPU compared;
- memory per worker: :func:`sipflow.engine.pool.run_file` alone on files of growing size
  (editcap ``-r`` slices of load.pcap; load_s2.pcap and load_s4.pcap, made by
  benchmarks/scaled_capture.py, when present).

    .venv/bin/python benchmarks/bench_scale.py [--runs 3] [--packets-per-file 40000]

Results: stdout, benchmarks/out/scale.md and scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
REPO = HERE.parent
PY = str(REPO / ".venv" / "bin" / "python")

ANALYZE = """
import hashlib, json, resource, sys, time
import sipflow.engine.pool as pool
from sipflow.api import Options, analyze
files, jobs, transfer = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
split = None if sys.argv[4] == "auto" else False
pool.TRANSFER = transfer
t0, c0 = time.perf_counter(), time.process_time()
opts = Options(jobs=jobs, keep_messages=False, keep_records=False, split=split)
trace = analyze(files, opts)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
d = trace.to_dict()
d["findings"] = sorted(d["findings"], key=lambda f: json.dumps(f, sort_keys=True))
doc = json.dumps(d, sort_keys=True).encode()  # a split run lists findings by frame
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall_s": wall, "parent_cpu_s": cpu, "parent_rss_kb": me.ru_maxrss,
    "worker_rss_kb": kids.ru_maxrss, "worker_cpu_s": kids.ru_utime + kids.ru_stime,
    "frames": sum(s.frames for s in trace.sources), "messages": trace.sip_messages,
    "calls": len(trace.call_records), "sha256": hashlib.sha256(doc).hexdigest()}))
"""

ONE_FILE = """
import json, resource, sys, time
from sipflow.engine.pool import run_file
t0 = time.perf_counter()
out = run_file(sys.argv[1], 0)
print(json.dumps({"wall_s": time.perf_counter() - t0, "frames": out.result.stats.frames,
    "messages": len(out.messages), "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def run_py(code: str, *args: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [PY, "-c", code, *args], capture_output=True, text=True, env=env, check=True, timeout=900
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def editcap(*args: str | Path) -> None:
    subprocess.run(["editcap", *map(str, args)], check=True, capture_output=True, timeout=600)


def rotated_set(load: Path, per_file: int) -> list[str]:
    """``load`` cut into files of ``per_file`` packets (made once per size)."""
    out = OUT / "scale" / f"c{per_file}"
    if not out.is_dir() or not any(out.iterdir()):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        editcap("-F", "pcap", "-c", str(per_file), load, out / "load.pcap")
    return sorted(str(p) for p in out.iterdir())


def median_run(
    files: list[str], jobs: int, transfer: str, runs: int, split: str = "auto"
) -> dict[str, Any]:
    args = (json.dumps(files), str(jobs), transfer, split)
    samples = [run_py(ANALYZE, *args) for _ in range(runs)]
    samples.sort(key=lambda s: s["wall_s"])
    best = dict(samples[len(samples) // 2])
    best["wall_runs"] = [round(s["wall_s"], 2) for s in samples]
    best["parent_cpu_s"] = statistics.median(s["parent_cpu_s"] for s in samples)
    best["hashes"] = sorted({s["sha256"] for s in samples})
    return best


def throughput(files: list[str], runs: int) -> list[dict[str, Any]]:
    cores = os.cpu_count() or 1
    rows = []
    for jobs in sorted({1, 2, cores}):
        hows = [("one process", "auto")] if jobs == 1 else []
        hows += [("split by Call-ID", "auto"), ("one worker per file", "off")] if jobs > 1 else []
        for how, split in hows:
            r = median_run(files, jobs, "chunks", runs, split)
            r["jobs"], r["how"] = jobs, how
            rows.append(r)
    base = rows[0]["wall_s"]
    for r in rows:
        r["pkt_per_s"] = r["frames"] / r["wall_s"]
        r["speedup"] = base / r["wall_s"]
        r["efficiency"] = r["speedup"] / r["jobs"]
    return rows


def transfers(files: list[str], runs: int) -> list[dict[str, Any]]:
    jobs = min(2, os.cpu_count() or 1)
    kinds = ("parsed", "chunks", "raw")
    return [dict(median_run(files, jobs, t, runs, "off"), transfer=t) for t in kinds]


def memory_sizes(load: Path) -> list[dict[str, Any]]:
    sizes: list[tuple[str, Path]] = []
    for n in (20_000, 40_000, 80_000, 160_000):
        part = OUT / "scale" / f"first{n}.pcap"
        if not part.exists():
            editcap("-F", "pcap", "-r", load, part, f"1-{n}")
        sizes.append((f"{n} packets", part))
    sizes.append(("load.pcap", load))
    for name in ("load_s2.pcap", "load_s4.pcap"):
        if (OUT / name).exists():
            sizes.append((name, OUT / name))
    rows = []
    for label, path in sizes:
        r = run_py(ONE_FILE, str(path))
        r["file"] = label
        rows.append(r)
    return rows


def report(data: dict[str, Any]) -> str:
    lines = [
        f"## Scale ({data['cores']} cores; {data['files']} files of {data['per_file']} packets "
        f"from load.pcap; median of {data['runs']})",
        "",
        "| jobs | how | wall s (runs) | pkt/s | speed-up | efficiency | parent CPU s | "
        "parent RSS MB | largest worker RSS MB |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["throughput"]:
        lines.append(
            f"| {r['jobs']} | {r['how']} | {r['wall_s']:.2f}"
            f" ({', '.join(map(str, r['wall_runs']))}) | "
            f"{r['pkt_per_s']:,.0f} | {r['speedup']:.2f}x | {r['efficiency']:.0%} | "
            f"{r['parent_cpu_s']:.2f} | {r['parent_rss_kb'] / 1024:.0f} | "
            f"{r['worker_rss_kb'] / 1024:.0f} |"
        )
    lines += ["", f"Results identical for every jobs value: {data['identical']}", ""]
    lines += ["One worker per file, what travels to the parent:", ""]
    lines += ["| transfer | wall s | parent CPU s |", "|---|---:|---:|"]
    for r in data["transfer"]:
        lines.append(f"| {r['transfer']} | {r['wall_s']:.2f} | {r['parent_cpu_s']:.2f} |")
    lines += ["", "| one file (run_file) | packets | SIP messages | s | worker RSS MB |"]
    lines += ["|---|---:|---:|---:|---:|"]
    for r in data["memory"]:
        lines.append(
            f"| {r['file']} | {r['frames']:,} | {r['messages']:,} | {r['wall_s']:.2f} | "
            f"{r['rss_kb'] / 1024:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--packets-per-file", type=int, default=40_000)
    ap.add_argument("--load", type=Path, default=OUT / "load.pcap")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-size worker runs")
    args = ap.parse_args()
    if not args.load.exists():
        print(f"{args.load} is missing: run benchmarks/gen_load.py first", file=sys.stderr)
        return 2
    files = rotated_set(args.load, args.packets_per_file)
    rows = throughput(files, args.runs)
    data: dict[str, Any] = {
        "cores": os.cpu_count(),
        "files": len(files),
        "per_file": args.packets_per_file,
        "runs": args.runs,
        "load_average": os.getloadavg(),
        "throughput": rows,
        "identical": len({h for r in rows for h in r["hashes"]}) == 1,
        "transfer": transfers(files, args.runs),
        "memory": [] if args.no_memory else memory_sizes(args.load),
    }
    text = report(data)
    sys.stdout.write(text)
    (OUT / "scale.md").write_text(text)
    (OUT / "scale.json").write_text(json.dumps(data, indent=1) + "\n")
    return 0 if data["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
