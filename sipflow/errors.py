"""Exception tree.

How this works: wire problems never escape as exceptions. The one precise parse
error type, :class:`ParseError`, is raised inside the sans-IO parsers and turned
into a :class:`~sipflow.findings.Finding` at the boundary that called them.
Only :class:`InputError` reaches the user, when a source cannot be read at all.

    SipflowError
    ├── ParseError        bytes that do not follow the grammar (offset and rule kept)
    └── InputError        a source that cannot be opened or has no readable records
"""

from __future__ import annotations


class SipflowError(Exception):
    """Base of every sipflow exception."""


class ParseError(SipflowError):
    """Bytes that do not follow a wire grammar.

    ``what`` names the grammar rule or field, ``offset`` is the byte offset in the
    input where the problem was found (or -1 when unknown).
    """

    def __init__(self, what: str, detail: str, offset: int = -1) -> None:
        self.what = what
        self.detail = detail
        self.offset = offset
        where = f" at byte {offset}" if offset >= 0 else ""
        super().__init__(f"{what}: {detail}{where}")


class InputError(SipflowError):
    """A source that cannot be read at all (missing, unknown format, empty)."""


class EngineError(SipflowError):
    """An engine cannot run: Dask is not installed or no scheduler was given
    (:mod:`sipflow.engine.dask_engine`)."""
