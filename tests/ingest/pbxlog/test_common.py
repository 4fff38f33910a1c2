"""The log engine's shared parts (sipflow.ingest.pbxlog.common).

The time of an undated line (a channel-state line inside a FreeSWITCH dump) is the time of
the nearest dated line above it, not further back than the last message nor 200 lines.
The engine remembers what its last look-up scanned (one read of each line instead of one
per event); these tests hold it to the plain definition, on random line patterns and on a
real FreeSWITCH debug log whose events are mostly undated.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sipflow.findings import Finding
from sipflow.ingest.pbxlog import ChannelEvent, common, read_log_bytes
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
            return ts
    return eng.last_ts or 0


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
