"""Notebook objects: ``trace.call(id)`` and its ``.ladder()``, each with ``_repr_html_``.

How this works: :class:`CallView` names one call of a Trace (by Call-ID, a unique prefix
or its number) and gives its record, SDP view, CDR row and ladder. :class:`LadderView`
wraps a :class:`~sipflow.report.ladder.LadderModel`: Jupyter shows its SVG and messages
(``_repr_html_``); ``str()`` is the terminal ladder; ``svg()``, ``mermaid()`` and
``plantuml()`` give the exports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sipflow.report.ladder import LadderModel, build_ladder, find_call

if TYPE_CHECKING:
    from sipflow.correlate.calls import CallRecord
    from sipflow.sdp.media import CallMedia
    from sipflow.trace import Trace


@dataclass(frozen=True)
class LadderView:
    """A ladder that renders itself in notebooks."""

    model: LadderModel

    def text(self, colour: bool = False) -> str:
        from sipflow.report.ladder_text import render_text

        return render_text(self.model, colour)

    def svg(self) -> str:
        from sipflow.report.svg import render_svg

        return render_svg(self.model)

    def mermaid(self) -> str:
        from sipflow.report.mermaid import to_mermaid

        return to_mermaid(self.model)

    def plantuml(self) -> str:
        from sipflow.report.mermaid import to_plantuml

        return to_plantuml(self.model)

    def __str__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        from sipflow.report.html import call_html

        return call_html(self.model, f"sf{id(self):x}")


@dataclass(frozen=True)
class CallView:
    """One call of a Trace."""

    trace: Trace
    index: int

    @classmethod
    def find(cls, trace: Trace, ident: str | int) -> CallView:
        index = find_call(trace, str(ident))
        if index is None:
            raise KeyError(f"no call matches {ident!r} ({len(trace.call_records)} calls)")
        return cls(trace, index)

    @property
    def record(self) -> CallRecord:
        return self.trace.call_records[self.index]

    @property
    def media(self) -> CallMedia | None:
        media = self.trace.call_media
        return media[self.index] if self.index < len(media) else None

    def cdr(self) -> dict[str, Any]:
        from sipflow.report.cdr import cdr_row
        from sipflow.report.story import story_index

        return cdr_row(self.trace, story_index(self.trace, self.index))

    def ladder(self) -> LadderView:
        return LadderView(build_ladder(self.trace, self.index))

    def __repr__(self) -> str:
        r = self.record
        return f"<call {self.index} {r.call_ids[0]} {r.outcome.value} {r.final_code}>"

    def _repr_html_(self) -> str:
        return self.ladder()._repr_html_()
