"""The reference B2BUA and built-in user agents (docs/b2bua.md).

Sans-IO core (:mod:`.core` on :mod:`.dialogs` and :mod:`.transfer`, :mod:`.ua`), one
asyncio module (:mod:`.transport`), and the writers of what a run leaves behind
(:mod:`.logwriter`, :mod:`.truth`). The CLI calls :func:`run_b2bua` and :func:`regen`.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["regen", "regen_list", "run_b2bua"]


def run_b2bua(config_path: str | Path) -> int:
    """``sipflow b2bua --config FILE``: 0 after a clean stop, 2 on a bad config."""
    from sipflow.b2bua.config import load_config
    from sipflow.b2bua.transport import run_forever
    from sipflow.errors import InputError

    try:
        config = load_config(config_path)
    except InputError as e:
        print(f"sipflow b2bua: {e}", file=sys.stderr)
        return 2
    run_forever(config)
    return 0


def regen_list() -> str:
    """``sipflow regen --list``: each scenario and what it shows."""
    from sipflow.b2bua.scenarios import describe

    return describe()


def regen(
    scenario: str,
    output: str | Path,
    seed: int | None = None,
    calls: int | None = None,
    rate: float | None = None,
    x_cid: bool = False,
) -> int:
    """``sipflow regen SCENARIO -o out.pcap [--calls N --rate R] [--x-cid]``: 0 done,
    2 unknown scenario or a size it does not take."""
    from sipflow.b2bua.scenarios import SCENARIOS
    from sipflow.b2bua.scenarios import regen as run
    from sipflow.b2bua.scenarios import scenario as build

    if scenario not in SCENARIOS:
        print(f"sipflow regen: unknown scenario {scenario!r}; see --list", file=sys.stderr)
        return 2
    try:
        build(scenario, calls, rate, x_cid, seed)
    except ValueError as e:
        print(f"sipflow regen: {e}", file=sys.stderr)
        return 2
    result = run(scenario, output, seed, calls, rate, x_cid)
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items()))
    print(f"{result.calls} calls ({outcomes}); wrote {result.pcap}, {result.log}, {result.truth}")
    if result.keylog is not None:  # a TLS leg: its key log, and the real wire when tcpdump ran
        wire = f"wire capture {result.wire}" if result.wire else f"no wire: {result.wire_note}"
        print(f"TLS key log {result.keylog}; {wire}")
    return 0
