"""Ground truth for leg correlation: which Call-IDs are legs of one call, and a score.

How this works: a truth file is JSON, either ``{"calls": [{"call_ids": [...]}, ...]}`` (the
shape the reference B2BUA of issue 3 writes) or a bare list of such objects or of Call-ID
lists. :func:`score` compares a :class:`~sipflow.correlate.legs.Correlation` with it: a
leg is paired correctly when its group holds exactly the truth call's Call-IDs that are
in the capture; a link is wrong when its two legs belong to different truth calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sipflow.correlate.legs import Correlation, LegFacts


def load_truth(source: Path | str | list[Any] | dict[str, Any]) -> list[frozenset[str]]:
    """Truth calls as sets of Call-IDs, from a file path or an already loaded object."""
    data: Any = source
    if isinstance(source, Path | str):
        data = json.loads(Path(source).read_text())
    calls = data["calls"] if isinstance(data, dict) else data
    out = []
    for call in calls:
        ids = call["call_ids"] if isinstance(call, dict) else call
        out.append(frozenset(str(c) for c in ids))
    return out


@dataclass
class TruthScore:
    legs: int = 0
    """Legs of multi-leg truth calls present in the capture."""
    correct: int = 0
    wrong_links: list[tuple[str, str, float]] = field(default_factory=list)
    """(parent Call-ID, child Call-ID, confidence) of links across truth calls."""
    single_legs: int = 0
    """Legs of one-leg truth calls (must stay alone)."""
    single_alone: int = 0

    @property
    def ratio(self) -> float:
        return self.correct / self.legs if self.legs else 1.0

    def wrong_at(self, confidence: float) -> list[tuple[str, str, float]]:
        return [w for w in self.wrong_links if w[2] >= confidence]


def score(truth: list[frozenset[str]], corr: Correlation, legs: list[LegFacts]) -> TruthScore:
    call_of = {cid: k for k, call in enumerate(truth) for cid in call}
    present = {f.call_id for f in legs}
    group_ids = [frozenset(legs[i].call_id for i in g) for g in corr.groups]
    out = TruthScore()
    for g, members in enumerate(corr.groups):
        for i in members:
            k = call_of.get(legs[i].call_id)
            if k is None:
                continue
            expected = truth[k] & present
            if len(expected) > 1:
                out.legs += 1
                out.correct += group_ids[g] == expected
            else:
                out.single_legs += 1
                out.single_alone += len(members) == 1
    for link in corr.links:
        a, b = legs[link.a].call_id, legs[link.b].call_id
        if call_of.get(a) is None or call_of.get(a) != call_of.get(b):
            out.wrong_links.append((a, b, link.confidence))
    return out
