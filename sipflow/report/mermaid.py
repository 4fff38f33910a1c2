"""Mermaid and PlantUML sequence-diagram exports of a LadderModel.

How this works: one participant per lane (alias ``L0``, ``L1``... with the ``host:port``
and User-Agent as the shown name), one message line per arrow in row order, dashed
arrows for responses and retransmissions marked ``(rtx)``, PBX channel marks as notes
over their lane, and one note over all lanes per leg tied into the call (rule,
confidence, evidence). Text is escaped for each language: Mermaid treats ``;`` and ``#`` as
syntax in message text (replaced by ``#59;``/``#35;`` entity codes), PlantUML needs no
escaping in message text except line breaks.
"""

from __future__ import annotations

import json

from sipflow.report.ladder import Arrow, LadderModel


def _name(model: LadderModel, lane: int) -> str:
    lane_ = model.lanes[lane]
    return f"{lane_.key} ({lane_.label})" if lane_.label else lane_.key


def _text(a: Arrow) -> str:
    text = a.label + (" (rtx)" if a.retransmission else "")
    if a.sdp:
        text += f" [SDP {a.sdp}]"
    if a.badges:
        text += " !" + ",".join(sorted({b.code for b in a.badges}))
    return text


def _leg_texts(model: LadderModel) -> list[str]:
    return [f"leg {e}" for e in model.evidence] if model.lanes else []


def _span(model: LadderModel, sep: str) -> str:
    """The first and last lane (one lane alone when there is only one)."""
    last = len(model.lanes) - 1
    return "L0" if last == 0 else f"L0{sep}L{last}"


def _mermaid_escape(text: str) -> str:
    return text.replace("#", "#35;").replace(";", "#59;").replace("\n", " ")


def to_mermaid(model: LadderModel) -> str:
    """A Mermaid ``sequenceDiagram`` of the ladder."""
    lines = []
    if model.title:  # front matter (Mermaid 10+), the documented place for a title
        lines += ["---", f"title: {json.dumps(model.title)}", "---"]  # YAML double-quoted
    lines.append("sequenceDiagram")
    for lane in model.lanes:
        name = _mermaid_escape(_name(model, lane.index))
        lines.append(f"    participant L{lane.index} as {name}")
    for text in _leg_texts(model):
        lines.append(f"    Note over {_span(model, ',')}: {_mermaid_escape(text)}")
    for row in model.rows:
        if row.kind == "arrow":
            a = model.arrows[row.index]
            op = "->>" if a.is_request and not a.retransmission else "-->>"
            lines.append(f"    L{a.src}{op}L{a.dst}: {_mermaid_escape(_text(a))}")
        else:
            m = model.marks[row.index]
            lines.append(f"    Note over L{m.lane}: {_mermaid_escape(m.text)}")
    return "\n".join(lines) + "\n"


def to_plantuml(model: LadderModel) -> str:
    """A PlantUML sequence diagram of the ladder."""
    lines = ["@startuml"]
    if model.title:
        lines.append(f"title {model.title}")
    for lane in model.lanes:
        lines.append(f'participant "{_name(model, lane.index)}" as L{lane.index}')
    for text in _leg_texts(model):
        lines.append(f"note over {_span(model, ', ')} : {text}")
    for row in model.rows:
        if row.kind == "arrow":
            a = model.arrows[row.index]
            op = "->" if a.is_request and not a.retransmission else "-->"
            lines.append(f"L{a.src} {op} L{a.dst} : {_text(a)}")
        else:
            m = model.marks[row.index]
            lines.append(f"hnote over L{m.lane} : {m.text}")
    lines.append("@enduml")
    return "\n".join(lines) + "\n"
