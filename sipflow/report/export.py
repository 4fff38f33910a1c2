"""JSON and CSV serialisations of an analysis (the shapes of docs/json.md)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from sipflow.trace import CALL_FIELDS


def to_json(doc: dict[str, Any]) -> str:
    # indent=None keeps the C encoder (an indented dump is several times slower); the
    # document is a tree (Trace.to_dict), so the cycle check's id of every container is
    # skipped (a tenth of the encoding).
    return json.dumps(doc, ensure_ascii=False, check_circular=False) + "\n"


def calls_csv(doc: dict[str, Any]) -> str:
    """One row per call; list fields joined with ';'."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CALL_FIELDS)
    for call in doc["calls"]:
        writer.writerow(csv_row(call))
    return buf.getvalue()


def csv_row(call: dict[str, Any]) -> list[Any]:
    """One call of docs/json.md as a CSV row of CALL_FIELDS."""
    return [";".join(map(str, v)) if isinstance(v, list) else ("" if v is None else v)
            for v in (call[name] for name in CALL_FIELDS)]  # fmt: skip
