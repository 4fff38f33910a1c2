"""Start-up: what each entry point loads (users mostly analyse small captures, where the
imports are most of the run). Each check runs a fresh interpreter and lists the sipflow
modules it loaded, so a new eager import of a heavy module makes it fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLAIN = REPO / "samples" / "pcaps" / "sipp_uac_uas_udp_mixed.pcap"  # SIP over UDP, no TLS
LOG = REPO / "samples" / "pcaps" / "regen_basic.log"  # the reference B2BUA's log
CORPUS = REPO / ".." / "shared" / "corpus" / "pcaps"
TLS = CORPUS / "voipshark__SIP-over-TLS-RTP-Normal_Call_two_parties.pcap"
TLS_MODULES = {
    "sipflow.ingest.tls_codes",
    "sipflow.ingest.tls_crypto",
    "sipflow.ingest.tls_decoder",
    "sipflow.ingest.tls_facts",
    "sipflow.ingest.tls_handshake",
    "sipflow.ingest.keylog",
}


def loaded(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    tail = "; import sys, json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code + tail],
        capture_output=True, text=True, timeout=120, check=True, cwd=REPO,
    )  # fmt: skip
    return set(json.loads(out.stdout.splitlines()[-1]))


def analyze_cli(path: Path) -> str:
    argv = ["analyze", str(path), "-f", "json", "-o", "/dev/null", "-j", "1"]
    return f"from sipflow.cli import app; app({argv!r}, standalone_mode=False)"


def test_import_sipflow_loads_no_analysing_submodule() -> None:
    mods = loaded("import sipflow")
    # sipflow.lazy: the PEP 562 hook itself (standard library only)
    assert {m for m in mods if m.startswith("sipflow.")} == {"sipflow.lazy"}
    assert "numpy" not in mods


def test_public_names_load_when_used() -> None:
    mods = loaded("import sipflow; sipflow.Finding; from sipflow import analyze")
    assert {"sipflow.findings", "sipflow.api"} <= mods
    assert "sipflow.engine.stream" not in mods  # StreamOptions not asked for


def test_cli_loads_the_analyser_only_for_its_commands() -> None:
    mods = loaded("import sipflow.cli")
    assert "sipflow.api" not in mods and "numpy" not in mods


def test_capture_without_tls_loads_neither_tls_nor_log_modules() -> None:
    mods = loaded(analyze_cli(PLAIN))
    assert "sipflow.api" in mods and "sipflow.ingest.tls" in mods  # the run did happen
    assert not mods & TLS_MODULES
    assert not {m for m in mods if m.startswith("sipflow.ingest.pbxlog")}
    assert "sipflow.correlate.logs" not in mods


def test_log_with_channel_events_loads_the_log_links() -> None:
    mods = loaded(analyze_cli(LOG))
    assert {"sipflow.ingest.pbxlog.reader", "sipflow.correlate.logs"} <= mods


def test_capture_with_tls_loads_the_decoder() -> None:
    if not TLS.is_file():
        pytest.skip(f"{TLS} is absent (shared corpus not available on this machine)")
    mods = loaded(analyze_cli(TLS))
    assert TLS_MODULES - {"sipflow.ingest.keylog"} <= mods


def test_record_sniffer_limit_is_the_codes_limit() -> None:
    """``looks_like_tls`` keeps its own copy of the record length limit (tls_codes loads
    only with TLS); it must stay the RFC 5246 §6.2.3 limit the decoder enforces."""
    from sipflow.ingest import tls, tls_codes

    assert tls._MAX_RECORD == tls_codes.MAX_RECORD == 2**14 + 2048
    header = bytes([23, 3, 3]) + tls_codes.MAX_RECORD.to_bytes(2, "big")
    assert tls.looks_like_tls(header)
    assert not tls.looks_like_tls(header[:3] + (tls_codes.MAX_RECORD + 1).to_bytes(2, "big"))
