"""Every capture of ../shared/corpus through `sipflow analyze --format json`, against tshark.

How this works: each capture is analysed once by the CLI (the public interface) and
once by `tshark -n -q -z sip,stat` (Wireshark 4.0, the independent oracle). The CLI
must exit as documented in docs/json.md without a traceback and print valid JSON; the
SIP message counts must equal tshark's, per method and status code, except for the
differences listed in KNOWN, each with its reason. The demo capture in samples/ is
checked here too, against tshark and against what samples/README.md says it holds.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from peers.harness import SipStat, tshark_sip_stat
from peers.sipflow_cli import CORPUS, REPO, CliResult, run_sipflow

pytestmark = pytest.mark.corpus

PCAPS = CORPUS / "pcaps"
CAPTURE_SUFFIXES = {".pcap", ".pcapng", ".cap"}
DEMO = REPO / "samples" / "pcaps" / "sipp_uac_uas_udp_mixed.pcap"


@dataclass(frozen=True)
class Known:
    """An intended difference: sipflow's SIP message count minus tshark's, and why."""

    delta: int
    reason: str
    exit_code: int = 0
    duplicates: int | None = None  # sources[0].duplicates sipflow must report


KNOWN: dict[str, Known] = {
    "sipnab__c07-sip-r2.cap": Known(
        -12, "Microsoft NetMon 2.x file, a format sipflow does not read (exit 3)", exit_code=3
    ),
    "goffinet__private-test-sip.pcapng": Known(
        -15, "15 SIP frames captured twice: sipflow counts a duplicate once", duplicates=15
    ),
    "goffinet__sip-2phones-B2BUA-Asterisk.pcapng": Known(
        -1, "one SIP frame captured twice: sipflow counts it once", duplicates=1
    ),
    "heplify__FAX-Call-t38-CA-TDM-SIP-FB-1.pcap": Known(
        -23, "23 SIP frames captured twice (several capture points)", duplicates=23
    ),
    "ndpi__FAX-Call-t38-CA-TDM-SIP-FB-1.pcap": Known(
        -23, "cut of the same multi-point fax capture: 23 duplicates", duplicates=23
    ),
    "pcapplusplus__sip_reqs.pcap": Known(
        +1,
        "tshark marks the BYE in frame 4 [Malformed Packet] and leaves it out of sip,stat; "
        "sipflow counts it and reports its problems as findings",
    ),
}


def _corpus_files() -> list[Path]:
    if not PCAPS.is_dir():
        return []
    return sorted(p for p in PCAPS.iterdir() if p.suffix in CAPTURE_SUFFIXES)


if not PCAPS.is_dir():
    pytest.skip(f"{PCAPS} is absent (../shared not available)", allow_module_level=True)
if shutil.which("tshark") is None:
    pytest.skip("tshark (the oracle) is not installed: make deb", allow_module_level=True)

FILES = {p.name: p for p in _corpus_files()}


@functools.cache
def _all_results() -> dict[Path, tuple[CliResult, SipStat]]:
    """Both analyses of every file, run a few at a time (each is its own process)."""

    def both(path: Path) -> tuple[CliResult, SipStat]:
        return run_sipflow(path), tshark_sip_stat(path)

    paths = list(FILES.values())
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return dict(zip(paths, pool.map(both, paths), strict=True))


def analysed(path: Path) -> CliResult:
    return _all_results()[path][0]


def tshark(path: Path) -> SipStat:
    return _all_results()[path][1]


def _stats(path: Path) -> dict[str, Any]:
    res = analysed(path)
    stats: dict[str, Any] = res.json["stats"]
    return stats


def test_corpus_is_there() -> None:
    assert len(FILES) >= 60, sorted(FILES)


@pytest.mark.parametrize("name", sorted(FILES))
def test_analyse_without_traceback(name: str) -> None:
    res = analysed(FILES[name])
    assert not res.traceback, res.stderr[-3000:]
    assert res.returncode == KNOWN.get(name, Known(0, "")).exit_code, res.stderr[-2000:]
    data = res.json
    assert data["schema"] == 1
    stats: dict[str, Any] = data["stats"]
    total = sum(stats["sip_requests"].values()) + sum(stats["sip_responses"].values())
    assert stats["sip_messages"] == total


@pytest.mark.parametrize("name", sorted(FILES))
def test_sip_counts_match_tshark(name: str) -> None:
    path = FILES[name]
    ours, theirs = _stats(path), tshark(path)
    known = KNOWN.get(name)
    if known is None:
        assert ours["sip_requests"] == theirs.requests
        assert ours["sip_responses"] == theirs.responses
        return
    assert ours["sip_messages"] - theirs.total == known.delta, known.reason
    if known.duplicates is not None:
        source = analysed(path).json["sources"][0]
        assert source["duplicates"] == known.duplicates, known.reason


def test_known_differences_name_real_files() -> None:
    assert set(KNOWN) <= set(FILES)


# ---------------------------------------------------------------- the demo capture


def test_demo_sample_matches_tshark_and_its_readme() -> None:
    assert DEMO.exists(), "run samples/make_samples.sh"
    res = run_sipflow(DEMO)
    assert res.returncode == 0 and not res.traceback, res.stderr
    data: dict[str, Any] = res.json
    st = tshark_sip_stat(DEMO)
    assert data["stats"]["sip_requests"] == st.requests
    assert data["stats"]["sip_responses"] == st.responses
    # samples/README.md: six flows, five of them calls.
    outcomes = Counter(c["outcome"] for c in data["calls"])
    assert outcomes == {"answered": 2, "busy": 1, "rejected": 1, "cancelled": 1}
    assert sorted(c["final_code"] for c in data["calls"]) == [200, 200, 404, 486, 487]
    assert sum(c["auth_challenges"] for c in data["calls"]) == 1
    (register,) = [a for a in data["activity"] if a["method"] == "REGISTER"]
    assert register["responses"] == {"401": 1, "200": 1}
