"""Log -> pcap: tshark shows every message; sipflow reads the same bytes back."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from sipflow.engine.local import SourceResult, source_messages
from sipflow.ingest.capture import read_capture
from sipflow.ingest.pbxlog import LogMessage, read_log
from sipflow.ingest.pcapwrite import write_pcap
from sipflow.ingest.types import SourceStats, Transport
from sipflow.sip.message import SipMessage, SipRequest, parse_message

DATA = Path(__file__).resolve().parents[1] / "data" / "pbxlog"
SEED = DATA / "freeswitch_seed_call_routing_article.txt"


def _log_messages(path: Path) -> list[SipMessage]:
    items = read_log(str(path), 0, SourceStats(str(path)), [])
    return [parse_message(i.data, i.origin) for i in items if isinstance(i, LogMessage)]


def _label(m: SipMessage) -> str:
    return m.method if isinstance(m, SipRequest) else str(m.status)


@pytest.mark.parametrize("name", [SEED.name, "asterisk_chansip_debug_subscribe_presence.log"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    msgs = _log_messages(DATA / name)
    out = tmp_path / "out.pcap"
    counts: Counter[str] = Counter()
    mapping = write_pcap(str(out), msgs, {}, counts)
    assert counts["packets"] == len(msgs)
    for placeholder, address in mapping.items():
        assert address.startswith(("192.0.2.", "198.51.100.", "203.0.113.", "2001:db8:"))
        assert placeholder not in {"1.2.3.4"}
    json.dumps(mapping)
    back = list(source_messages(str(out), 0, SourceResult(SourceStats(str(out)))))
    assert [m.raw for m in back] == [m.raw for m in msgs]
    assert [m.origin.transport for m in back if m.origin] == [
        Transport.TCP if (m.origin and m.origin.transport is not Transport.UDP) else Transport.UDP
        for m in msgs
    ] or counts["stream_written_as_udp"] > 0
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    fields = subprocess.run(
        [
            "tshark",
            "-n",
            "-r",
            str(out),
            "-Y",
            "sip",
            "-T",
            "fields",
            "-e",
            "sip.Method",
            "-e",
            "sip.Status-Code",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split("\n")
    got = [line.strip() for line in fields if line.strip()]
    assert got == [_label(m) for m in msgs]


def test_seed_placeholders_and_udp_checksums(tmp_path: Path) -> None:
    msgs = _log_messages(SEED)
    out = tmp_path / "seed.pcap"
    mapping = write_pcap(str(out), msgs, {"caller_ip": "198.51.100.7"})
    assert mapping["caller_ip"] == "198.51.100.7"
    assert set(mapping) == {"caller_ip", "via_addr", "ip_addr"}
    stats, findings = SourceStats(str(out)), []
    datagrams = list(read_capture(str(out), 0, stats, findings))
    assert stats.frames == len(msgs) and not findings
    assert {d.src.ip for d in datagrams} == set(mapping.values())
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    bad = subprocess.run(
        [
            "tshark",
            "-n",
            "-r",
            str(out),
            "-o",
            "udp.check_checksum:TRUE",
            "-o",
            "tcp.check_checksum:TRUE",
            "-o",
            "ip.check_checksum:TRUE",
            "-Y",
            "udp.checksum.status == 0 || tcp.checksum.status == 0 || ip.checksum.status == 0",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert bad == ""
