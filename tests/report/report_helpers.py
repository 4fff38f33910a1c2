"""Paths and helpers shared by the report tests (conftest.py holds the fixtures)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sipflow
from sipflow.trace import Trace

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "pcaps" / "sipp_uac_uas_udp_mixed.pcap"
FS_LOG = REPO / "tests" / "data" / "pbxlog" / "freeswitch_seed_call_routing_article.txt"
LONG_CALL = Path(__file__).resolve().parent / "data" / "sipp_long_call_info_udp.pcap"
"""One SIPp call of 503 messages (INVITE, 248 INFO/200, BYE): data/sipp_long_call_*.xml."""
REGEN = REPO / "samples" / "pcaps"
"""``regen_*.pcap``/``.log``/``.truth.json``: B2BUA calls (two Call-IDs each), samples/README.md."""
REGEN_SCENARIOS = ("basic", "auth407", "cancel", "hold")
CORPUS = REPO / ".." / "shared" / "corpus" / "pcaps"
GOLDEN = Path(__file__).resolve().parent / "golden"


def full(path: Path) -> Trace:
    return sipflow.analyze([path], sipflow.Options(keep_messages=True, keep_records=True))


def corpus(name: str) -> Path:
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (shared corpus not available on this machine)")
    return path.resolve()


def tshark_fields(path: Path, display_filter: str, *fields: str) -> list[list[str]]:
    """tshark 4 (the independent oracle): one list of field values per matching packet."""
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    argv = ["tshark", "-r", str(path), "-Y", display_filter, "-T", "fields"]
    for f in fields:
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m sipflow.cli ARGS`` from the repository, output captured (120 s bound)."""
    return subprocess.run(
        [sys.executable, "-m", "sipflow.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
