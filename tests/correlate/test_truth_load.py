"""Ground truth at load: 1,000 overlapping calls through the reference B2BUA, paired.

The reference B2BUA (``sipflow regen traffic``, run as the CLI in two processes at once)
carries 1,000 calls at 21 calls/s with Poisson arrivals: 70 % answered and held 2-8 s
(about 70 up at once), the rest busy, not found or cancelled while ringing; the callees
come from ten numbers, so concurrent calls share them, and every call has an A leg and a
B leg with its own Call-ID. Its truth JSON says which Call-IDs make one call. Once with
no correlation header at all (pairing from timing, hops, parties and SDP): at least 99 %
of the legs must be grouped exactly as the truth says and no link across two calls may
have a confidence of 0.9 or more; once with X-CID on the B legs: every leg, no wrong link.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from truth import TruthScore, load_truth, score

import sipflow
from sipflow.b2bua.scenarios import scenario
from sipflow.trace import Trace

CALLS = 1000
RATE = 21.0
"""Planned; the test asserts at least 20 calls/s as the B2BUA saw them."""
SEED = 7
MIN_RATIO = 0.99
WRONG_CONFIDENCE = 0.9
KIND_OUTCOME = {"answer": "answered", "busy": "busy", "notfound": "rejected", "ring": "cancelled"}

pytestmark = pytest.mark.timeout(420)


@dataclass
class LoadRun:
    x_cid: bool
    pcap: Path
    truth: dict[str, Any]
    trace: Trace
    score: TruthScore


def _regen(out: Path, x_cid: bool) -> subprocess.Popen[str]:
    cli = [sys.executable, "-c", "from sipflow.cli import main; main()", "regen", "traffic"]
    args = ["-o", str(out), "--calls", str(CALLS), "--rate", str(RATE), "--seed", str(SEED)]
    return subprocess.Popen(
        [*cli, *args, *(["--x-cid"] if x_cid else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _summary(run: LoadRun) -> str:
    s = run.score
    worst = max((w[2] for w in s.wrong_links), default=None)
    links = run.trace.correlation.links if run.trace.correlation else []
    rules = Counter(link.rule for link in links).most_common()
    lowest = min((link.confidence for link in links), default=None)
    return (
        f"X-CID {'on ' if run.x_cid else 'off'}: {s.correct}/{s.legs} legs paired correctly "
        f"({s.ratio:.2%}); {len(s.wrong_links)} links across calls (highest confidence "
        f"{worst}); {len(links)} links, lowest confidence {lowest}, carried by {rules}"
    )


@pytest.fixture(scope="module")
def load_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, LoadRun]:
    """Both variants at once (two processes; each is mostly idle between calls)."""
    wd = tmp_path_factory.mktemp("truth_load")
    pcaps = {x: wd / f"traffic_xcid_{'on' if x else 'off'}.pcap" for x in (False, True)}
    procs = {x: _regen(p, x) for x, p in pcaps.items()}
    for x, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"regen (X-CID {x}) failed: {out}{err}"
    runs = {}
    for x, pcap in pcaps.items():
        truth_path = pcap.with_suffix(".truth.json")
        trace = sipflow.analyze([pcap])
        assert trace.correlation is not None
        result = score(load_truth(truth_path), trace.correlation, trace.leg_facts)
        runs[x] = LoadRun(x, pcap, json.loads(truth_path.read_text()), trace, result)
        print(f"\ntruth load ({CALLS} calls), {_summary(runs[x])}")
    return runs


def _rate(calls: list[dict[str, Any]]) -> float:
    starts = sorted(c["start_ns"] for c in calls)
    return (len(starts) - 1) / ((starts[-1] - starts[0]) / 1e9)


def _most_at_once(calls: list[dict[str, Any]]) -> int:
    edges = sorted(
        itertools.chain.from_iterable(((c["start_ns"], 1), (c["end_ns"], -1)) for c in calls)
    )
    return max(itertools.accumulate(step for _t, step in edges))


@pytest.mark.parametrize("x_cid", [False, True], ids=["no-header", "x-cid"])
def test_the_load_is_what_was_planned(load_runs: dict[bool, LoadRun], x_cid: bool) -> None:
    calls = load_runs[x_cid].truth["calls"]
    assert len(calls) == CALLS
    assert all(len(c["call_ids"]) == 2 and c["end_ns"] for c in calls)  # A and B leg, ended
    rate, most = _rate(calls), _most_at_once(calls)
    print(f"\nX-CID {x_cid}: {rate:.2f} calls/s at the B2BUA, up to {most} calls at once")
    assert rate >= 20.0
    assert most >= 50
    plan = scenario("traffic", CALLS, RATE, x_cid, SEED).calls
    planned = Counter(KIND_OUTCOME[p.user.split("-", 1)[0]] for p in plan)
    assert Counter(c["outcome"] for c in calls) == planned
    assert min(planned.values()) >= 50  # every outcome well represented


def test_pairing_without_a_correlation_header(load_runs: dict[bool, LoadRun]) -> None:
    run = load_runs[False]
    legs = run.trace.leg_facts
    assert not any(f.id_headers or f.session_ids or f.icids for f in legs), "a header leaked"
    s = run.score
    assert s.legs == 2 * CALLS, "every leg of the truth is in the capture"
    assert s.ratio >= MIN_RATIO, _summary(run)
    assert not s.wrong_at(WRONG_CONFIDENCE), (_summary(run), s.wrong_at(WRONG_CONFIDENCE)[:5])


def test_pairing_with_x_cid(load_runs: dict[bool, LoadRun]) -> None:
    run = load_runs[True]
    assert sum(1 for f in run.trace.leg_facts if f.id_headers) == CALLS  # on every B leg
    s = run.score
    assert s.legs == 2 * CALLS
    assert s.ratio == 1.0, _summary(run)
    assert not s.wrong_links, s.wrong_links[:5]
    corr = run.trace.correlation
    assert corr is not None and len(corr.links) == CALLS
    assert {link.rule for link in corr.links} == {"id_header"}
    assert min(link.confidence for link in corr.links) >= WRONG_CONFIDENCE
