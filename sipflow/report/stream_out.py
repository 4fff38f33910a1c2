"""Row sinks for ``sipflow analyze --stream``: the JSON document or the calls CSV, written
as call stories finish (:mod:`sipflow.engine.stream`).

How this works: :class:`JsonRows` writes ``calls`` straight into the document as rows
come; RTP streams and findings come interleaved with them, so each goes to a temporary
file (one JSON object per line) and is copied into the document at :meth:`close`, after
the calls; the parts known only at the end (sources, stats, activity, TLS sessions) come
last. Parsed, the document has the keys and shapes of docs/json.md; only their order in
the text, and the calls' order (as finished, not by start), differ from the
whole-capture run.
"""

from __future__ import annotations

import csv
import json
import tempfile
from typing import IO, Any

from sipflow import __version__
from sipflow.report.export import csv_row
from sipflow.trace import CALL_FIELDS, SCHEMA_VERSION


def _dump(row: Any) -> str:
    return json.dumps(row, ensure_ascii=False)


class _Spool:
    """Rows of one list, one JSON text per line in a temporary file, copied out at the end."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 (closed in copy_list)
        self.count = 0

    def add(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.file.write(_dump(row))
            self.file.write("\n")
        self.count += len(rows)

    def copy_list(self, out: IO[str]) -> None:
        """Write the rows as the items of a JSON list (``[...]``) and close the spool."""
        self.file.seek(0)
        out.write("[")
        for i, line in enumerate(self.file):
            if i:
                out.write(", ")
            out.write(line.rstrip("\n"))
        out.write("]")
        self.file.close()


class JsonRows:
    """A :class:`~sipflow.engine.stream.RowSink` writing the docs/json.md document to ``out``."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._calls = 0
        self._streams = _Spool()
        self._findings = _Spool()
        out.write(f'{{"schema": {SCHEMA_VERSION}, "sipflow": {_dump(__version__)}, "calls": [')

    def calls(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if self._calls:
                self._out.write(", ")
            self._out.write(_dump(row))
            self._calls += 1

    def streams(self, rows: list[dict[str, Any]]) -> None:
        self._streams.add(rows)

    def findings(self, rows: list[dict[str, Any]]) -> None:
        self._findings.add(rows)

    def close(self, tail: dict[str, Any]) -> None:
        """End the document with the parts known at the end (``StreamResult.tail``)."""
        out = self._out
        out.write('], "rtp_streams": ')
        self._streams.copy_list(out)
        out.write(', "findings": ')
        self._findings.copy_list(out)
        for key, value in tail.items():
            if key in ("schema", "sipflow"):
                continue
            out.write(f", {_dump(key)}: {_dump(value)}")
        out.write("}\n")
        out.flush()


class CsvRows:
    """A :class:`~sipflow.engine.stream.RowSink` writing the calls CSV (``-f csv``) to ``out``."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._writer = csv.writer(out, lineterminator="\n")
        self._writer.writerow(CALL_FIELDS)

    def calls(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self._writer.writerow(csv_row(row))

    def streams(self, rows: list[dict[str, Any]]) -> None:
        pass  # the calls CSV has no stream rows

    def findings(self, rows: list[dict[str, Any]]) -> None:
        pass  # nor findings (use -f json)

    def close(self, tail: dict[str, Any]) -> None:
        self._out.flush()


__all__ = ["CsvRows", "JsonRows"]
