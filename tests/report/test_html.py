"""HTML report structure (self-contained, data complete), Jupyter reprs and the CLI."""

from __future__ import annotations

import base64
import gzip
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from report_helpers import FS_LOG, REPO, SAMPLE, run_cli

from sipflow.report.html import render_report, template_dirs, templates_dir, trace_html
from sipflow.report.ladder import build_ladder
from sipflow.trace import Trace


class _Scan(HTMLParser):
    """Collects tags, attributes that could fetch something, and the data script."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.fetching: list[tuple[str, str, str]] = []
        self.data: dict[str, str] = {}
        self._in_data = False
        self.data_text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        for name in ("src", "href", "xlink:href", "action", "poster"):
            value = a.get(name) or ""
            if value and not value.startswith("#"):
                self.fetching.append((tag, name, value))
        if tag == "link":
            self.fetching.append((tag, "rel", a.get("rel") or ""))
        if a.get("id") == "sf-data":
            self.data = {k: v or "" for k, v in a.items()}
            self._in_data = True

    def handle_endtag(self, tag: str) -> None:
        self._in_data = False

    def handle_data(self, data: str) -> None:
        if self._in_data:
            self.data_text += data


def _scan(page: str) -> tuple[_Scan, dict[str, Any]]:
    scan = _Scan()
    scan.feed(page)
    if scan.data["data-encoding"] == "gzip+base64":
        text = gzip.decompress(base64.b64decode(scan.data_text)).decode("utf-8")
    else:
        text = scan.data_text
    return scan, json.loads(text)


@pytest.mark.parametrize("compress", [False, True])
def test_report_is_self_contained_and_complete(sample_trace: Trace, compress: bool) -> None:
    page = render_report(sample_trace, compress=compress)
    scan, data = _scan(page)
    assert scan.fetching == []  # no src/href/link: nothing to fetch
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # only the xmlns
    assert "https://" not in page
    assert scan.data["data-encoding"] == ("gzip+base64" if compress else "json")
    assert len(data["calls"]) == len(data["ladders"]) == len(sample_trace.call_records)
    for i, (call, ladder) in enumerate(
        zip(sample_trace.call_records, data["ladders"], strict=True)
    ):
        arrows = re.findall(r'<g class="arrow[^"]*" data-i="(\d+)"', ladder["svg"])
        assert len(arrows) == len(ladder["msgs"]) == call.messages, i
        assert ladder["msgs"][0].startswith("INVITE sip:")
        assert call.call_ids[0] in ladder["msgs"][0]
    for section in ("sources", "kpis", "call-list", "call-detail", "activity", "findings"):
        assert f'id="{section}"' in page
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg" class="sf-plot"') == 3
    assert "REGISTER" in page  # non-call activity table


def test_report_of_a_pbx_log_has_marks_and_findings(fs_trace: Trace) -> None:
    page = render_report(fs_trace)
    _, data = _scan(page)
    svg = data["ladders"][0]["svg"]
    assert svg.count('class="mark"') == len(build_ladder(fs_trace, 0).marks) > 0
    assert data["ladders"][0]["badges"][0]  # the INVITE carries a finding
    assert "sdp.telephone_event_mismatch" in page
    assert "originate" in data["ladders"][0]["info"]


def test_data_cannot_close_its_script(sample_trace: Trace) -> None:
    from sipflow.report.html import _script_json

    text = _script_json({"x": "</script><script>alert(1)</script><!--"})
    assert "</script" not in text and "<!--" not in text
    assert json.loads(text) == {"x": "</script><script>alert(1)</script><!--"}


def test_templates_found_in_the_source_tree() -> None:
    assert templates_dir() == (REPO / "reports" / "templates").resolve()
    assert templates_dir() in [d.resolve() for d in template_dirs()]
    assert (templates_dir() / "static" / "report.js").is_file()


def test_jupyter_reprs(sample_trace: Trace) -> None:
    html = sample_trace._repr_html_()
    assert "5 calls" in html and "ASR 40.0%" in html
    assert html == trace_html(sample_trace)
    call = sample_trace.call("1-24515")
    assert call.index == 3 and call.record.final_code == 487
    frag = call._repr_html_()
    assert frag.count('<g class="arrow') == 7
    assert "487 Request Terminated" in frag
    view = call.ladder()
    assert str(view) == view.text()
    assert view.mermaid().count("->>") == 7
    assert view.svg().startswith("<svg")
    assert call.cdr()["final_code"] == 487
    with pytest.raises(KeyError):
        sample_trace.call("no-such-call")


def test_cli_analyze_html(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    r = run_cli("analyze", str(SAMPLE), "--html", str(out))
    assert r.returncode == 0, r.stderr
    assert "Calls: 5" in r.stdout  # the usual summary still printed
    assert out.is_file() and "HTML report written" in r.stderr
    _, data = _scan(out.read_text())
    assert len(data["calls"]) == 5


@pytest.mark.parametrize(
    ("fmt", "marker"),
    [("text", "CANCEL"), ("svg", "<svg"), ("html", "<svg"), ("mermaid", "sequenceDiagram"),
     ("plantuml", "@startuml")],
)  # fmt: skip
def test_cli_ladder_formats(fmt: str, marker: str, tmp_path: Path) -> None:
    r = run_cli("ladder", str(SAMPLE), "--call", "1-24515", "--format", fmt)
    assert r.returncode == 0, r.stderr
    assert marker in r.stdout
    assert "\x1b[" not in r.stdout  # not a tty: no colour
    out = tmp_path / f"ladder.{fmt}"
    r = run_cli("ladder", str(SAMPLE), "--call", "3", "-f", fmt, "-o", str(out))
    assert r.returncode == 0 and marker in out.read_text()


def test_cli_ladder_unknown_call() -> None:
    r = run_cli("ladder", str(FS_LOG), "--call", "nope")
    assert r.returncode == 2 and "no call matches" in r.stderr and "Traceback" not in r.stderr


def test_cli_cdr(tmp_path: Path) -> None:
    r = run_cli("cdr", str(SAMPLE), "-o", str(tmp_path / "cdr.csv"), "--summary")
    assert r.returncode == 0, r.stderr
    assert "ASR 40.0%" in r.stdout and "5 calls written" in r.stderr
    assert (tmp_path / "cdr.csv").read_text().startswith("index,call_id,")
    r = run_cli("cdr", str(SAMPLE), "-o", str(tmp_path / "cdr.parquet"))
    assert r.returncode == 0 and (tmp_path / "cdr.parquet").stat().st_size > 0
    r = run_cli("cdr", str(SAMPLE), "-o", str(tmp_path / "cdr.txt"))
    assert r.returncode == 2 and "unknown CDR format" in r.stderr
    assert run_cli("cdr", str(SAMPLE)).returncode == 2
