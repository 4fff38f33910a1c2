"""Findings: every problem sipflow reports, from malformed bytes to failed calls.

How this works: a Finding is a frozen value with a stable ``code`` (dotted,
e.g. ``ingest.truncated_record``), a severity, a human message, the RFC section
behind the rule when there is one, and references to the input (source index +
1-based frame number, as Wireshark numbers frames).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Severity(enum.Enum):
    """How bad a Finding is."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Ref:
    """A place in the input: ``source`` indexes ``Trace.sources``; ``frame`` is 1-based."""

    source: int
    frame: int


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem found in the input or the flows it carries."""

    code: str
    severity: Severity
    message: str
    rfc: str | None = None
    refs: tuple[Ref, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "rfc": self.rfc,
            "refs": [{"source": r.source, "frame": r.frame} for r in self.refs],
        }
