"""Golden tests: terminal ladder text, SVG structure (elements and labels, not pixels),
Mermaid and PlantUML exports. ``SIPFLOW_UPDATE_GOLDEN=1`` rewrites the golden files
(review the diff before committing)."""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from report_helpers import GOLDEN

from sipflow.report.ladder import build_ladder
from sipflow.report.ladder_text import render_text
from sipflow.report.mermaid import to_mermaid, to_plantuml
from sipflow.report.svg import render_svg
from sipflow.trace import Trace

SVG = "{http://www.w3.org/2000/svg}"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("SIPFLOW_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} missing: run with SIPFLOW_UPDATE_GOLDEN=1 once"
    assert text == path.read_text(encoding="utf-8")


def _traces(sample: Trace, fs: Trace, regen: dict[str, Trace]) -> dict[str, tuple[Trace, int]]:
    return {
        "sample_cancelled": (sample, 3),
        "sample_auth": (sample, 4),
        "freeswitch": (fs, 0),
        "regen_basic": (regen["regen_basic.pcap"], 0),  # B2BUA: both legs, one ladder
        "regen_auth407": (regen["regen_auth407.pcap"], 0),
    }


GOLDEN_NAMES = ["sample_cancelled", "sample_auth", "freeswitch", "regen_basic", "regen_auth407"]


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_text_ladder_golden(
    name: str, sample_trace: Trace, fs_trace: Trace, regen_traces: dict[str, Trace]
) -> None:
    trace, call = _traces(sample_trace, fs_trace, regen_traces)[name]
    text = render_text(build_ladder(trace, call))
    assert not ANSI.search(text)
    _golden(f"{name}.txt", text)


def test_text_ladder_colour_only_when_asked(sample_trace: Trace) -> None:
    model = build_ladder(sample_trace, 3)
    coloured = render_text(model, colour=True)
    assert ANSI.search(coloured)
    assert ANSI.sub("", coloured) == render_text(model)


def _structure(svg_text: str) -> dict[str, Any]:
    root = ET.fromstring(svg_text)
    lanes = [
        [t.text for t in g.iter(f"{SVG}text")]
        for g in root.iter(f"{SVG}g")
        if g.get("class") == "lane"
    ]
    arrows = []
    for g in root.iter(f"{SVG}g"):
        cls = g.get("class") or ""
        if not cls.startswith("arrow"):
            continue
        label = next(t.text for t in g.iter(f"{SVG}text") if t.get("class") == "label")
        sdp = [t.text for t in g.iter(f"{SVG}text") if t.get("class") == "sdp"]
        badges = [c.get("class") for c in g.iter(f"{SVG}circle")]
        arrows.append([cls, g.get("data-i"), label, sdp[0] if sdp else None, badges])
    marks = [
        [g.get("data-lane"), g.find(f"{SVG}text[last()]").text]  # type: ignore[union-attr]
        for g in root.iter(f"{SVG}g")
        if g.get("class") == "mark"
    ]
    legs = [
        [g.get("data-call-id"), g.get("data-rule"), g.get("data-confidence")]
        + [t.text for t in g.iter(f"{SVG}text")]
        for g in root.iter(f"{SVG}g")
        if g.get("class") == "leg-note"
    ]
    return {
        "arrows_attr": root.get("data-arrows"),
        "legs": legs,
        "lanes": lanes,
        "arrows": arrows,
        "marks": marks,
    }


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_svg_structure_golden(
    name: str, sample_trace: Trace, fs_trace: Trace, regen_traces: dict[str, Trace]
) -> None:
    trace, call = _traces(sample_trace, fs_trace, regen_traces)[name]
    model = build_ladder(trace, call)
    structure = _structure(render_svg(model))
    assert len(structure["arrows"]) == len(model.arrows) == int(structure["arrows_attr"])
    assert len(structure["lanes"]) == len(model.lanes)
    assert len(structure["legs"]) == len(model.legs)
    _golden(f"{name}.svg.json", json.dumps(structure, indent=1, ensure_ascii=False) + "\n")


def test_svg_marks_retransmissions_dashed(sample_trace: Trace) -> None:
    from report_helpers import corpus, full

    trace = full(corpus("goffinet__voip-extension2downata.pcap"))
    model = build_ladder(trace, 0)
    structure = _structure(render_svg(model))
    rtx = [a for a in structure["arrows"] if " rtx" in a[0]]
    assert len(rtx) == model.retransmissions == trace.call_records[0].retransmissions > 0
    assert all(a[2].endswith("(rtx)") for a in rtx)


def test_svg_ids_prefixed_for_several_on_one_page(sample_trace: Trace) -> None:
    a = render_svg(build_ladder(sample_trace, 0), "one")
    b = render_svg(build_ladder(sample_trace, 1), "two")
    ids_a = set(re.findall(r'id="([^"]+)"', a))
    ids_b = set(re.findall(r'id="([^"]+)"', b))
    assert ids_a and ids_b and not ids_a & ids_b


def test_svg_escapes_message_text() -> None:
    """A hostile User-Agent cannot inject markup into the SVG."""
    from sipflow.ingest.types import Endpoint
    from sipflow.report.ladder import ladder_of_messages
    from sipflow.sip.message import Origin, parse_message

    raw = (
        b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n"
        b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
        b"User-Agent: <script>alert(1)</script>\r\nContent-Length: 0\r\n\r\n"
    )
    o = Origin(0, (1,), 1, Endpoint("10.0.0.1", 5060), Endpoint("10.0.0.2", 5060))
    svg = render_svg(ladder_of_messages([parse_message(raw, o)]))
    ET.fromstring(svg)  # well-formed
    assert "<script>" not in svg


@pytest.mark.parametrize("name", ["sample_auth", "freeswitch", "regen_basic"])
def test_mermaid_and_plantuml_golden(
    name: str, sample_trace: Trace, fs_trace: Trace, regen_traces: dict[str, Trace]
) -> None:
    trace, call = _traces(sample_trace, fs_trace, regen_traces)[name]
    model = build_ladder(trace, call)
    mermaid = to_mermaid(model)
    plantuml = to_plantuml(model)
    arrows = [ln for ln in mermaid.splitlines() if re.match(r"\s+L\d+-", ln)]
    assert len(arrows) == len(model.arrows)
    assert plantuml.startswith("@startuml") and plantuml.rstrip().endswith("@enduml")
    assert all(";" not in ln.split(":", 1)[1] for ln in arrows)  # ';' ends a Mermaid statement
    _golden(f"{name}.mmd", mermaid)
    _golden(f"{name}.puml", plantuml)


def test_golden_dir_is_next_to_tests() -> None:
    assert Path(GOLDEN).parent == Path(__file__).resolve().parent
