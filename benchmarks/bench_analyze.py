"""Load benchmark: `sipflow analyze` against `tshark -z sip,stat` on the same SIPp capture.

How this works: gen_load.py makes (once, then cached) a 2,500-call SIPp capture with RTP in
benchmarks/out/load.pcap. Each command below runs RUNS times in a fresh process, interleaved so
drift hits both sides alike; we keep the median wall time and the peak RSS (from
`/usr/bin/time -f %M`, else getrusage of a fresh helper process). Then one more sipflow run
writes its JSON, and its stats.sip_requests / sip_responses must equal tshark's sip,stat counts
(and the counts the SIPp scenarios imply); any difference is listed and the exit code is 1.
The table goes to stdout and benchmarks/out/results.md (raw numbers: results.json).

    .venv/bin/python benchmarks/bench_analyze.py [--runs 3] [--flat-memory] [--file X.pcap]

Exit codes: 0 measured and counts agree, 1 counts differ or a command failed, 3 the sipflow
CLI is missing (tshark side still measured; --tshark-only makes that a 0).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import gen_load

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
REPO = HERE.parent
SIPFLOW = REPO / ".venv" / "bin" / "sipflow"
TIME = Path("/usr/bin/time")
GENERATED = (OUT / "load.pcap", OUT / "load.pcapng")  # same packets, see gen_load.py
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
TARGET_RATIO = 5.0  # PERFORMANCE.md: at least 5x faster than tshark -z sip,stat
RUSAGE_HELPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[2:], stdout=open(sys.argv[1], 'wb'), stderr=subprocess.STDOUT)\n"
    "ru = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(ru.ru_maxrss, ru.ru_utime + ru.ru_stime, rc)\n"
)


@dataclass
class Run:
    wall_s: float
    rss_kb: int
    cpu_s: float  # user + system; steadier than wall time on a shared machine
    returncode: int
    output: str  # stdout and stderr together


@dataclass
class Measured:
    label: str
    cmd: list[str]
    runs: list[Run] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.runs) and all(r.returncode == 0 for r in self.runs)

    @property
    def median_s(self) -> float:
        return statistics.median(r.wall_s for r in self.runs)

    @property
    def cpu_s(self) -> float:
        return statistics.median(r.cpu_s for r in self.runs)

    @property
    def rss_mb(self) -> float:
        return max(r.rss_kb for r in self.runs) / 1024


@dataclass
class SipCounts:
    """What one tool says about the SIP messages in a capture."""

    messages: int
    requests: dict[str, int]
    responses: dict[str, int]
    resent: int | None = None


def measure_once(cmd: list[str]) -> Run:
    """Run `cmd` in a fresh process; wall time from here, peak RSS of that process tree."""
    with tempfile.TemporaryDirectory() as tmp:
        out, rep = Path(tmp) / "out", Path(tmp) / "rss"
        if TIME.exists():
            wrapped = [str(TIME), "-f", "%M %U %S", "-o", str(rep), *cmd]
            t0 = time.perf_counter()
            with out.open("wb") as fh:
                rc = subprocess.call(wrapped, stdout=fh, stderr=subprocess.STDOUT)
            wall = time.perf_counter() - t0
            rss_s, user_s, sys_s = rep.read_text().splitlines()[-1].split()
            rss, cpu = int(rss_s), float(user_s) + float(sys_s)
        else:  # getrusage(RUSAGE_CHILDREN) of a helper that ran only this command
            t0 = time.perf_counter()
            res = subprocess.run(
                [sys.executable, "-c", RUSAGE_HELPER, str(out), *cmd],
                capture_output=True,
                text=True,
                check=False,
            )
            wall = time.perf_counter() - t0
            rss_s, cpu_s, rc_s = res.stdout.split()
            rss, cpu, rc = int(rss_s), float(cpu_s), int(rc_s)
        return Run(wall, rss, cpu, rc, out.read_text(errors="replace"))


def measure(items: list[Measured], runs: int) -> None:
    """Interleave the commands run by run, so slow phases of the machine hit all alike."""
    for _ in range(runs):
        for m in items:
            m.runs.append(measure_once(m.cmd))


# --- tshark output -----------------------------------------------------------------------------

_STATUS = re.compile(r"^\s*SIP (\d{3})\b.*:\s*(\d+) Packets", re.M)
_METHOD = re.compile(r"^\s*(\S+)\s*:\s*(\d+) Packets", re.M)
_RTP_ROW = re.compile(
    r"^\s*[\d.]+\s+[\d.]+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)\s+(0x[0-9A-Fa-f]+)\s+(.+?)\s+(\d+)\s+-?\d+",
    re.M,
)


def parse_sip_stat(text: str) -> SipCounts:
    """Counts from `tshark -q -z sip,stat` (Wireshark 4.0 layout)."""
    total = re.search(r"Number of SIP messages:\s*(\d+)", text)
    resent = re.search(r"Number of resent SIP messages:\s*(\d+)", text)
    if total is None:
        raise ValueError(f"no sip,stat block in tshark output: {text[:300]!r}")
    _, _, after_codes = text.partition("SIP Status Codes in reply packets")
    codes, _, after_methods = after_codes.partition("List of SIP Request methods")
    methods = after_methods.split("* ", 1)[0].split("=====", 1)[0]
    responses = {c: int(n) for c, n in _STATUS.findall(codes)}
    requests = {m: int(n) for m, n in _METHOD.findall(methods)}
    return SipCounts(
        int(total.group(1)), requests, responses, int(resent.group(1)) if resent else None
    )


def parse_rtp_streams(text: str) -> tuple[int, int]:
    """(streams, packets) from `tshark -q -z rtp,streams`."""
    rows = _RTP_ROW.findall(text)
    return len(rows), sum(int(r[6]) for r in rows)


# --- sipflow output ----------------------------------------------------------------------------


def sipflow_counts(doc: dict[str, object]) -> SipCounts:
    stats = doc["stats"]
    assert isinstance(stats, dict)
    return SipCounts(
        int(stats["sip_messages"]),
        {str(k): int(v) for k, v in stats["sip_requests"].items()},
        {str(k): int(v) for k, v in stats["sip_responses"].items()},
        int(stats.get("retransmissions", 0)),
    )


def compare(name_a: str, a: SipCounts, name_b: str, b: SipCounts) -> list[str]:
    """Every count where `a` and `b` differ, as readable lines; empty when they agree."""
    problems = []
    if a.messages != b.messages:
        problems.append(f"SIP messages: {name_a} {a.messages} != {name_b} {b.messages}")
    for kind, da, db in (
        ("request", a.requests, b.requests),
        ("response", a.responses, b.responses),
    ):
        for key in sorted(set(da) | set(db)):
            if da.get(key, 0) != db.get(key, 0):
                problems.append(
                    f"{kind} {key}: {name_a} {da.get(key, 0)} != {name_b} {db.get(key, 0)}"
                )
    return problems


# --- captures ----------------------------------------------------------------------------------


def capinfos(path: Path) -> tuple[int, float]:
    """(packets, duration in seconds) of a capture."""
    res = subprocess.run(
        ["capinfos", "-M", "-T", "-c", "-u", str(path)], capture_output=True, text=True, check=True
    )
    fields = res.stdout.splitlines()[-1].split("\t")
    return int(fields[1]), float(fields[2])


def concatenated(base: Path, times: int) -> Path:
    """`base` followed by `times - 1` shifted copies of itself, each copy its own calls and
    RTP streams (benchmarks/scaled_capture.py: Call-IDs and SSRCs rewritten), cached."""
    from scaled_capture import scale

    dest = OUT / f"{base.stem}_s{times}{base.suffix}"
    if dest.exists() and dest.stat().st_mtime >= base.stat().st_mtime:
        return dest
    scale(base, times, dest)
    return dest


# --- the benchmark -----------------------------------------------------------------------------


def tshark_cmd(stat: str, path: Path) -> list[str]:
    return ["tshark", "-n", "-q", "-z", stat, "-r", str(path)]


def sipflow_cmd(path: Path, output: str = "/dev/null") -> list[str]:
    return [str(SIPFLOW), "analyze", str(path), "--format", "json", "--output", output]


def sipflow_available() -> str | None:
    """None when the CLI answers `analyze --help`, else why not."""
    if not SIPFLOW.exists():
        return f"{SIPFLOW} not found"
    res = subprocess.run(
        [str(SIPFLOW), "analyze", "--help"], capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        return f"`sipflow analyze --help` exited {res.returncode}: {res.stderr.strip()[-300:]}"
    return None


def warm_cache(path: Path) -> None:
    with path.open("rb") as fh:
        while fh.read(1 << 24):
            pass


def machine() -> dict[str, str]:
    model = "?"
    mem = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    tshark = subprocess.run(["tshark", "-v"], capture_output=True, text=True, check=False)
    return {
        "cores": str(os.cpu_count()),
        "cpu": model,
        "memory": mem,
        "python": platform.python_version(),
        "tshark": tshark.stdout.splitlines()[0].rstrip(".") if tshark.stdout else "?",
        "kernel": platform.release(),
    }


def fmt_s(m: Measured) -> str:
    walls = sorted(r.wall_s for r in m.runs)
    return f"{m.median_s:.2f} s ({walls[0]:.2f}-{walls[-1]:.2f})"


def main_table(items: list[Measured], packets: int, ref: Measured) -> list[str]:
    lines = [
        "| command | median wall (min-max) | median CPU | peak RSS | packets/s"
        " | speed vs tshark sip,stat |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in items:
        if not m.ok:
            lines.append(f"| {m.label} | failed (exit {m.runs[-1].returncode}) | | | | |")
            continue
        ratio = ref.median_s / m.median_s
        lines.append(
            f"| {m.label} | {fmt_s(m)} | {m.cpu_s:.2f} s | {m.rss_mb:.0f} MB"
            f" | {packets / m.median_s / 1000:,.0f} k"
            f" | {ratio:.2f}x |"
        )
    return lines


def counts_table(columns: dict[str, SipCounts]) -> list[str]:
    names = list(columns)
    keys: list[tuple[str, str | None, str]] = [("SIP messages", None, "")]
    for kind in ("requests", "responses"):
        union: set[str] = set()
        for c in columns.values():
            union |= set(getattr(c, kind))
        keys += [(k, kind, k) for k in sorted(union)]
    lines = ["| count | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, attr, key in keys:
        cells = []
        for c in columns.values():
            cells.append(str(c.messages if attr is None else getattr(c, attr).get(key, 0)))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def run_flat_memory(base: Path, have_sipflow: bool, sizes: list[int]) -> list[str]:
    """One run of each tool on the capture repeated ``sizes`` times (default 1x, 2x, 4x):
    does peak RSS grow with size?"""
    lines = [
        "| capture | packets | sipflow wall / CPU | sipflow peak RSS"
        " | sipflow --stream wall / CPU | sipflow --stream peak RSS"
        " | tshark sip,stat wall / CPU | tshark peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rss: dict[str, list[int]] = {"sipflow": [], "sipflow --stream": [], "tshark": []}
    for times in sizes:
        path = base if times == 1 else concatenated(base, times)
        packets, _ = capinfos(path)
        warm_cache(path)
        cells = []
        runs = (
            ("sipflow", sipflow_cmd(path)),
            ("sipflow --stream", [*sipflow_cmd(path), "--stream"]),
            ("tshark", tshark_cmd("sip,stat", path)),
        )
        for name, cmd in runs:
            if name.startswith("sipflow") and not have_sipflow:
                cells.append("n/a | n/a")
                continue
            r = measure_once(cmd)
            if r.returncode != 0:
                cells.append(f"exit {r.returncode} | n/a")
                continue
            rss[name].append(r.rss_kb)
            cells.append(f"{r.wall_s:.2f} s / {r.cpu_s:.2f} s | {r.rss_kb / 1024:.0f} MB")
        lines.append(f"| {path.name} | {packets:,} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    lines.append("")
    for name, values in rss.items():
        if len(values) == len(sizes) > 1:
            lines.append(
                f"{name}: peak RSS on {sizes[-1]}x the packets is {values[-1] / values[0]:.2f}x"
                f" that on {sizes[0]}x (flat memory would be about 1x)."
            )
    return lines


def update_readme(results: str) -> None:
    """Put `results` between the markers of the "Latest numbers" section of README.md."""
    readme = HERE / "README.md"
    text = readme.read_text()
    head, sep1, rest = text.partition(README_START)
    _, sep2, tail = rest.partition(README_END)
    if not (sep1 and sep2):
        print(f"README.md has no {README_START} ... {README_END} markers", file=sys.stderr)
        return
    title, _, body = results.partition("\n")
    body = f"From `{title.removeprefix('# ')}`:\n{body.rstrip()}"
    readme.write_text(f"{head}{README_START}\n{body}\n{README_END}{tail}")


def check_counts(
    tshark: SipCounts, sipflow: SipCounts | None, expected: SipCounts | None
) -> tuple[dict[str, SipCounts], list[str]]:
    columns: dict[str, SipCounts] = {}
    if expected is not None:
        columns["SIPp scenario shape"] = expected
    columns["tshark sip,stat"] = tshark
    problems: list[str] = []
    if sipflow is not None:
        columns["sipflow stats"] = sipflow
        problems += compare("sipflow", sipflow, "tshark", tshark)
    if expected is not None:
        problems += [f"(vs scenario) {p}" for p in compare("tshark", tshark, "scenario", expected)]
    return columns, problems


def expected_counts(path: Path) -> SipCounts | None:
    """The counts the SIPp scenarios imply, when `path` is the generated capture."""
    meta_path = OUT / "load.json"
    if path not in GENERATED or not meta_path.exists():
        return None
    exp = json.loads(meta_path.read_text())["expected"]
    return SipCounts(exp["sip_messages"], exp["sip_requests"], exp["sip_responses"], 0)


def describe_capture(path: Path, packets: int) -> str:
    size = path.stat().st_size / 1e6
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    text = f"`{shown}`: {packets:,} packets, {size:.1f} MB"
    meta_path = OUT / "load.json"
    if path in GENERATED and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        e, p = meta["expected"], meta["params"]
        text += (
            f"; SIPp: {p['calls']:,} calls at {p['rate']}/s ({e['answered']:,} answered, "
            f"{e['busy']} busy/486, {e['notfound']} not found/404), {e['sip_messages']:,} SIP "
            f"messages, {e['rtp_packets']:,} RTP packets in {e['rtp_streams']:,} streams "
            f"(G.711 A-law, {p['media_packets']} packets each way per call); "
            f"made in {meta['generation_seconds']} s"
        )
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="timed runs per command (median kept)")
    ap.add_argument("--file", type=Path, help="benchmark this capture instead of the SIPp one")
    ap.add_argument("--pcapng", action="store_true", help="use the pcapng copy of the SIPp capture")
    ap.add_argument("--no-rtp", action="store_true", help="skip tshark -z rtp,streams")
    ap.add_argument("--flat-memory", action="store_true", help="also run on the capture 2x and 4x")
    ap.add_argument(
        "--flat-sizes",
        default="1,2,4",
        help="with --flat-memory: the copies of the capture to run on, e.g. 1,4,16,40 (40x the"
        " load capture is 3.9 GB; the copies are cached in benchmarks/out/)",
    )
    ap.add_argument("--tshark-only", action="store_true", help="a missing sipflow CLI is no error")
    ap.add_argument("--update-readme", action="store_true", help="copy the results into README.md")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Measure this working tree's sipflow even when the venv's editable install is stale
    # (one made before sipflow/__init__.py existed resolves `sipflow` as a namespace package).
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )
    for tool in ("tshark", "capinfos", "editcap", "mergecap"):
        if shutil.which(tool) is None:
            print(f"error: {tool} not found (run `make deb`)", file=sys.stderr)
            return 1
    try:
        path = args.file or gen_load.ensure_capture()
    except gen_load.GenerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.pcapng and not args.file:
        path = OUT / "load.pcapng"
    path = path.resolve()
    packets, _ = capinfos(path)
    why_not = sipflow_available()
    if why_not:
        print(f"sipflow side skipped: {why_not}", file=sys.stderr)
    warm_cache(path)
    # Byte-compile sipflow as an install does: with PYTHONDONTWRITEBYTECODE set (as on
    # the project's machines) every run would otherwise compile every module (~0.2 s).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "sipflow")], check=False)

    sip_stat = Measured("`tshark -n -q -z sip,stat`", tshark_cmd("sip,stat", path))
    items = [sip_stat]
    sipflow = None
    if why_not is None:
        sipflow = Measured(
            "`sipflow analyze --format json --output /dev/null` (all cores)", sipflow_cmd(path)
        )
        one = Measured("`sipflow analyze ... -j 1` (one process)", [*sipflow_cmd(path), "-j", "1"])
        items[:0] = [sipflow, one]
    if not args.no_rtp:
        items.append(
            Measured("`tshark -n -q -z rtp,streams` (reference)", tshark_cmd("rtp,streams", path))
        )
    print(f"measuring {len(items)} commands x {args.runs} runs on {path} ...", flush=True)
    measure(items, args.runs)

    problems: list[str] = []
    for m in items:
        if not m.ok:
            problems.append(f"{m.label} exited {m.runs[-1].returncode}: {m.runs[-1].output[-500:]}")
    tshark_counts = parse_sip_stat(sip_stat.runs[0].output) if sip_stat.ok else None
    sf_counts = None
    sf_doc: dict[str, object] = {}
    if sipflow is not None and sipflow.ok:
        json_out = OUT / f"sipflow_{path.stem}.json"
        res = subprocess.run(
            sipflow_cmd(path, str(json_out)), capture_output=True, text=True, check=False
        )
        if res.returncode == 0:
            sf_doc = json.loads(json_out.read_text())
            sf_counts = sipflow_counts(sf_doc)
        else:
            problems.append(
                f"sipflow analyze (JSON run) exited {res.returncode}: {res.stderr[-500:]}"
            )

    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mach = machine()
    md = [
        f"# sipflow load benchmark ({now})",
        "",
        f"Capture: {describe_capture(path, packets)}.",
        "",
        f"Machine: {mach['cores']} cores, {mach['cpu']}, {mach['memory']} RAM, "
        f"Linux {mach['kernel']}; Python {mach['python']}; {mach['tshark']}.",
        f"Each command run {args.runs} times in a fresh process, interleaved; median wall time,"
        " CPU = user + system; peak RSS over the runs (`/usr/bin/time -f '%M %U %S'`).",
        "",
        *main_table(items, packets, sip_stat),
        "",
    ]
    if sipflow is not None and sipflow.ok and sip_stat.ok:
        ratio = sip_stat.median_s / sipflow.median_s
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        cpu_ratio = sip_stat.cpu_s / sipflow.cpu_s
        md += [
            f"Speed of sipflow against `tshark -z sip,stat`: **{ratio:.2f}x** by median wall time"
            f" ({cpu_ratio:.2f}x by CPU time); target at least {TARGET_RATIO:.0f}x: {verdict}.",
            "",
        ]
    rtp = next((m for m in items if "rtp,streams" in m.label), None)
    if rtp is not None and rtp.ok:
        streams, rtp_packets = parse_rtp_streams(rtp.runs[0].output)
        md += [f"tshark rtp,streams found {streams:,} RTP streams, {rtp_packets:,} packets.", ""]
        if sipflow is not None and sipflow.ok:
            md += [
                "Full sipflow analysis (SIP and RTP) against `tshark -z rtp,streams` alone:"
                f" **{rtp.median_s / sipflow.median_s:.2f}x** by median wall time"
                f" (issue 8's target: {TARGET_RATIO:.0f}x).",
                "",
            ]
    if tshark_counts is not None:
        columns, count_problems = check_counts(tshark_counts, sf_counts, expected_counts(path))
        problems += count_problems
        md += ["SIP message counts (sipflow must equal tshark):", "", *counts_table(columns), ""]
        if sf_doc:
            src = sf_doc.get("sources", [{}])[0]  # type: ignore[index]
            if src.get("frames") != packets:
                problems.append(f"sipflow read {src.get('frames')} frames, capinfos {packets}")
            md += [
                f"sipflow read {src.get('frames', '?')} frames; skipped: {src.get('skipped', {})}.",
                "",
            ]
    if args.flat_memory:
        sizes = [int(x) for x in args.flat_sizes.split(",")]
        print("flat-memory check (1 run each) ...", flush=True)
        md += [
            "Peak memory against capture size (1 run each):",
            "",
            *run_flat_memory(path, sipflow is not None and sipflow.ok, sizes),
            "",
        ]
    if problems:
        md += ["**MISMATCH / FAILURE:**", "", *[f"- {p}" for p in problems], ""]
    elif sipflow is None:
        md += [f"sipflow side not measured: {why_not}", ""]
    else:
        md += ["Check: sipflow's SIP request and response counts equal tshark's.", ""]
    text = "\n".join(md)
    (OUT / "results.md").write_text(text)
    (OUT / "results.json").write_text(
        json.dumps(
            {
                "when": now,
                "machine": mach,
                "capture": str(path),
                "packets": packets,
                "commands": {
                    m.label: {
                        "cmd": m.cmd,
                        "wall_s": [r.wall_s for r in m.runs],
                        "rss_kb": [r.rss_kb for r in m.runs],
                        "cpu_s": [r.cpu_s for r in m.runs],
                        "rc": [r.returncode for r in m.runs],
                    }
                    for m in items
                },
                "problems": problems,
            },
            indent=2,
        )
        + "\n"
    )
    print(text)
    if args.update_readme:
        update_readme(text)
    if problems:
        return 1
    if sipflow is None and not args.tshark_only:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
