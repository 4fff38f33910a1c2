"""How fast a Python analysis of the load capture could be at best: a skeleton's costs.

    .venv/bin/python benchmarks/floor.py [FILE] [--repeat N]

The 5x target (issues #2/#8) leaves a budget of a fifth of `tshark -q -z sip,stat`'s time
for the whole run. This script measures, on the same file and in the same run, what a
*skeleton* of any Python analysis has to pay, each step in a fresh process (wall time, best
of ``--repeat``), so the budget can be compared with steps no analysis can skip:

1. start      ``python -c pass``: the interpreter alone
2. numpy      ``import numpy``: the column decode needs it
3. records    sipflow's record walk and column decode of every packet (``Capture.chunks`` +
              ``decode_chunk`` + the payload prefilter): no Python object per packet
4. split      the SIP payloads only (taken from sipflow's ingest beforehand, so not timed
              here) split into start line and a dict of headers, and grouped by Call-ID:
              no validation, no transaction, dialog, call, SDP or finding
5. json       ``json.dumps`` of sipflow's own JSON document for the file (8 MB on the load
              capture): writing the answer, as the C encoder does it

The sum is a floor for a one-process skeleton that reads everything and writes sipflow's
output. It leaves out the analysis itself, so a real tool on this design costs more; two
cores can at best halve steps 3-5, and each process pays 1-2.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "benchmarks" / "out" / "load.pcap"

_RECORDS = """
import sys, time
t = time.perf_counter()
from sipflow.ingest import classify
from sipflow.ingest.decode import decode_chunk
from sipflow.ingest.pcap import open_capture
t = time.perf_counter()
n = 0
for chunk in open_capture(sys.argv[1]).chunks():
    dec = decode_chunk(chunk)
    udp = dec.udp
    classify.prefilter(chunk.buf, udp.payload, udp.length, udp.head)
    n += len(chunk)
print(time.perf_counter() - t)
"""

_SPLIT = """
import pickle, sys, time
payloads = pickle.load(open(sys.argv[1], "rb"))
t = time.perf_counter()
calls = {}
for p in payloads:
    head, _, body = p.partition(b"\\r\\n\\r\\n")
    lines = head.split(b"\\r\\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    calls.setdefault(headers.get(b"call-id") or headers.get(b"i"), []).append((lines[0], headers))
print(time.perf_counter() - t)
"""

_JSON = """
import json, sys, time
doc = json.load(open(sys.argv[1]))
t = time.perf_counter()
json.dumps(doc, check_circular=False)
print(time.perf_counter() - t)
"""


def _best(cmd: list[str], repeat: int, inner: bool) -> float:
    """Best wall time of ``cmd`` (``inner``: the time the script prints itself)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO).stdout
        took = float(out.split()[-1]) if inner else time.perf_counter() - t
        best = min(best, took)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", nargs="?", default=str(DEFAULT))
    ap.add_argument("--repeat", type=int, default=3, help="runs per step, best kept")
    args = ap.parse_args()
    path = args.file
    if not Path(path).is_file():
        print(f"{path}: no such file (make it with benchmarks/gen_load.py)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO))
    py, n = sys.executable, args.repeat
    with tempfile.TemporaryDirectory() as tmp:
        doc_path, payload_path = Path(tmp, "doc.json"), Path(tmp, "payloads.pickle")
        subprocess.run(
            [str(Path(py).parent / "sipflow"), "analyze", path, "-f", "json", "-o", str(doc_path)],
            check=True,
            cwd=REPO,
            capture_output=True,
        )
        n_msgs = _dump_payloads(path, payload_path)
        steps = [
            ("start (python -c pass)", _best([py, "-c", "pass"], n, False)),
            ("import numpy", _best([py, "-c", "import numpy"], n, False)),
            ("records: walk + column decode", _best([py, "-c", _RECORDS, path], n, True)),
            ("split SIP into headers", _best([py, "-c", _SPLIT, str(payload_path)], n, True)),
            ("json.dumps of sipflow's output", _best([py, "-c", _JSON, str(doc_path)], n, True)),
        ]
    tshark = shutil.which("tshark")
    sip_stat = _best([tshark, "-n", "-q", "-z", "sip,stat", "-r", path], n, False) if tshark else 0
    total = sum(s for _, s in steps)
    print(f"{path}")
    for name, took in steps:
        print(f"  {name:<34}{took:7.3f} s")
    print(f"  {'skeleton floor (sum)':<34}{total:7.3f} s")
    if sip_stat:
        print(f"  {'tshark -q -z sip,stat':<34}{sip_stat:7.3f} s")
        print(f"  5x budget: {sip_stat / 5:.3f} s; the skeleton alone is {sip_stat / total:.1f}x")
        fixed = steps[0][1] + steps[1][1]
        halved = fixed + (total - fixed) / 2  # two cores, perfectly split, nothing serial
        left = sip_stat / 5 - halved
        per_msg = 2 * left / max(1, n_msgs) * 1e6
        print(
            f"  on 2 cores at best {halved:.3f} s; what the 5x budget leaves for the analysis"
            f" itself: {left:.3f} s wall = {per_msg:.1f} µs CPU per SIP message ({n_msgs})"
        )
    return 0


def _dump_payloads(path: str, out: Path) -> int:
    """The SIP payloads sipflow's ingest finds in ``path``, pickled for the split step."""
    import pickle

    from sipflow.ingest.capture import read_capture
    from sipflow.ingest.types import SourceStats

    payloads = [dg.payload for dg in read_capture(path, 0, SourceStats(path=path), [])]
    out.write_bytes(pickle.dumps(payloads))
    return len(payloads)


if __name__ == "__main__":
    sys.exit(main())
