"""The notebooks in notebooks/ run top to bottom (nbclient) on shipped samples."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_helpers import CORPUS, REPO, SAMPLE

nbformat = pytest.importorskip("nbformat", reason="nbformat not installed (pip install nbformat)")
nbclient = pytest.importorskip("nbclient", reason="nbclient not installed (pip install nbclient)")
pytest.importorskip("ipykernel", reason="ipykernel not installed (pip install ipykernel)")

NOTEBOOKS = REPO / "notebooks"


def _run(name: str, capture: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Execute a notebook; return the text of every output (errors fail the test)."""
    monkeypatch.setenv("SIPFLOW_NOTEBOOK_CAPTURE", str(capture))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()
    texts: list[str] = []
    for cell in nb.cells:
        for out in cell.get("outputs", ()):
            assert out.output_type != "error", f"{name}: {out.get('ename')}: {out.get('evalue')}"
            if out.output_type == "stream":
                texts.append(out.text)
            else:
                data = out.get("data", {})
                texts.append(data.get("text/html", "") + data.get("text/plain", ""))
    return texts


def test_failed_call_notebook(monkeypatch: pytest.MonkeyPatch) -> None:
    out = "\n".join(_run("failed_call.ipynb", SAMPLE, monkeypatch))
    assert "sipflow Trace" in out  # Trace._repr_html_
    assert out.count('<g class="arrow') >= 4  # the busy call's ladder, inline SVG
    assert "486 Busy Here" in out
    assert "1-24515@127.0.0.1        cancelled  INVITE 100 180 CANCEL 200 487 ACK" in out


def test_kpi_notebook(monkeypatch: pytest.MonkeyPatch) -> None:
    load = CORPUS / "goffinet__branch-scenario-sipp.pcapng"  # SIPp load, when ../shared is here
    capture = load.resolve() if load.is_file() else SAMPLE
    out = "\n".join(_run("kpis_load_capture.ipynb", capture, monkeypatch))
    assert "ASR " in out and "PDD p50" in out
    assert 'class="sf-plot"' in out  # the inline SVG plots
    assert "'ASR %'" in out  # the pandas cross-check cell ran (it asserts equality)
