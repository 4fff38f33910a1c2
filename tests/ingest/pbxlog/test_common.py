"""The log engine's shared parts (sipflow.ingest.pbxlog.common).

The time of an undated line (a channel-state line inside a FreeSWITCH dump) is the time of
the nearest dated line above it, not further back than the last message nor 200 lines,
else the time last given to a message or event above it, else (above the log's first
date) the nearest dated line below it, not further than 200 lines.
The engine remembers what its last look-up scanned (one read of each line instead of one
per event); these tests hold it to the plain definition, on random line patterns and on a
real FreeSWITCH debug log whose events are mostly undated.
"""

from __future__ import annotations

import datetime
import json
import os
import random
import subprocess
from pathlib import Path

import pytest
from peers.sipflow_cli import sipflow_executable

from sipflow.findings import Finding
from sipflow.ingest.pbxlog import ChannelEvent, LogMessage, common, read_log, read_log_bytes
from sipflow.ingest.types import SourceStats

CORPUS_LOGS = Path(__file__).resolve().parents[3] / ".." / "shared" / "corpus" / "logs"
FS_DEBUG = CORPUS_LOGS / "freeswitch110_debug_internal_calls_scanners.log"


def plain_ts_at(eng: common.Engine, i: int) -> int:
    """The definition, scanning every time (what ts_at did before it remembered)."""
    lines, line_ts = eng.text.lines, eng.spec.line_ts
    assert line_ts is not None
    for x in range(i, max(eng.last_line, i - 200), -1):
        ts = line_ts(lines[x])
        if ts is not None:
            eng.seen_ts = ts
            return ts
    if eng.seen_ts is not None or eng.last_ts is not None:
        return eng.seen_ts if eng.seen_ts is not None else eng.last_ts or 0
    below = (line_ts(line) for line in lines[i + 1 : i + 201])
    return next((ts for ts in below if ts is not None), 0)


def _engine(lines: list[str]) -> common.Engine:
    spec = common.Spec(
        "test", header=lambda _: None, line_ts=lambda s: int(s[1:]) if s[0] == "D" else None
    )
    return common.Engine(common.Text(lines), spec, 0, SourceStats("x"), [])


@pytest.mark.parametrize("density", [0.0, 0.004, 0.05, 0.5, 1.0])
def test_dated_line_lookup_matches_the_plain_scan(density: float) -> None:
    rng = random.Random(int(density * 1000))
    for _ in range(300):
        n = rng.randint(1, 700)
        lines = [f"D{k}" if rng.random() < density else "x" for k in range(n)]
        eng = _engine(lines)
        i = 0
        for _ in range(60):
            i = min(n - 1, max(0, i + rng.randint(-5, 40)))  # mostly forward, sometimes back
            if rng.random() < 0.1:  # a message framed: the look-back stops there
                eng.last_line, eng.last_ts = min(i, eng.last_line + rng.randint(0, 30)), 7
            elif rng.random() < 0.05:  # framed out of order (a message right after one)
                eng.last_line = max(-1, eng.last_line - rng.randint(0, 30))
            assert eng.ts_at(i) == plain_ts_at(eng, i)


@pytest.mark.skipif(not FS_DEBUG.is_file(), reason=f"corpus log {FS_DEBUG.name} absent (../shared)")
def test_freeswitch_debug_log_event_times_match_the_plain_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = FS_DEBUG.read_bytes()

    def items() -> list[object]:
        findings: list[Finding] = []
        return list(read_log_bytes(data, 0, SourceStats(str(FS_DEBUG)), findings))

    remembered = items()
    monkeypatch.setattr(common.Engine, "ts_at", plain_ts_at)
    plain = items()
    assert remembered == plain
    events = [e for e in remembered if isinstance(e, ChannelEvent)]
    assert len(events) > 100  # the log is full of them: the look-up was exercised


# -- syslog times have no year ------------------------------------------------------------

AVAYA_SYSLOG = CORPUS_LOGS / "avaya_ade_b179_syslog.log"  # "<135>Jan  1 01:05:23 konfsip..."


def _year(ts: int) -> int:
    return datetime.datetime.fromtimestamp(ts / 1e9, datetime.UTC).year


def test_syslog_times_are_read_in_the_year_of_the_log() -> None:
    assert common.syslog_ts("Feb 29 10:00:00") is None  # outside a log: 1970, no Feb 29
    with common.read_year(common.YearRef(2024, 3)) as ref:
        leap = common.syslog_ts("Feb 29 10:00:00")
        december = common.syslog_ts("Dec 31 23:59:59.5")
    assert leap is not None and december is not None
    assert datetime.datetime.fromtimestamp(leap / 1e9, datetime.UTC).isoformat() == (
        "2024-02-29T10:00:00+00:00"
    )
    assert _year(december) == 2023  # after March: the year before the file was written
    assert ref.used == 2


@pytest.mark.skipif(not AVAYA_SYSLOG.is_file(), reason=f"{AVAYA_SYSLOG.name} absent (../shared)")
def test_a_syslog_log_takes_its_year_from_the_file(tmp_path: Path) -> None:
    """The Avaya B179 syslog has 'Jan  1' lines (clock not yet set) and 'May 27' lines:
    last modified in March 2024, January is 2024 and May the year before."""
    log = tmp_path / AVAYA_SYSLOG.name
    log.write_bytes(AVAYA_SYSLOG.read_bytes())
    march = datetime.datetime(2024, 3, 15, 12, tzinfo=datetime.UTC).timestamp()
    os.utime(log, (march, march))

    def read(year: int | None) -> tuple[set[int], list[Finding]]:
        findings: list[Finding] = []
        items = list(read_log(str(log), 0, SourceStats(str(log)), findings, year))
        return {_year(i.origin.ts) for i in items if isinstance(i, LogMessage)}, findings

    years, findings = read(None)
    assert years == {2023, 2024}
    (note,) = [f for f in findings if f.code == "log.year_assumed"]
    assert "2024, those after Mar in 2023" in note.message and "2024-03-15" in note.message
    years, findings = read(2022)
    assert years == {2022}
    (note,) = [f for f in findings if f.code == "log.year_assumed"]
    assert "--log-year" in note.message and "sets the year" not in note.message
    cli = subprocess.run(
        [*sipflow_executable(), "analyze", str(log), "-f", "json", "--log-year", "2021"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert _year(int(json.loads(cli.stdout)["stats"]["start"] * 1e9)) == 2021
