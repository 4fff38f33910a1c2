"""CDR rows and KPIs, checked against tshark where it computes the same figure."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from report_helpers import SAMPLE, corpus, full, tshark_fields

from sipflow.report.cdr import (
    CDR_COLUMNS,
    bar_svg,
    cdr_rows,
    kpi_plots,
    kpis,
    parse_reason,
    parse_rtp_stat,
    percentile,
    write_cdr,
)
from sipflow.trace import Trace


def _tshark_invite_finals(path: Path) -> dict[str, int]:
    """Per Call-ID, the last final (>=200) response to INVITE, as tshark decodes it."""
    rows = tshark_fields(
        path,
        'sip.CSeq.method == "INVITE" && sip.Status-Code >= 200',
        "sip.Call-ID",
        "sip.Status-Code",
    )
    out: dict[str, int] = {}
    for cid, code in rows:
        out[cid] = int(code)
    return out


def test_rows_have_the_documented_columns(sample_trace: Trace) -> None:
    rows = cdr_rows(sample_trace)
    assert len(rows) == len(sample_trace.call_records) == 5
    assert all(tuple(r) == CDR_COLUMNS for r in rows)
    doc = (Path(__file__).resolve().parents[2] / "docs" / "reports.md").read_text()
    for name in CDR_COLUMNS:
        assert f"`{name}`" in doc, f"column {name} not documented in docs/reports.md"


def test_final_codes_match_tshark(sample_trace: Trace) -> None:
    finals = _tshark_invite_finals(SAMPLE)
    rows = cdr_rows(sample_trace)
    assert {r["call_id"]: r["final_code"] for r in rows} == finals
    k = kpis(rows)
    assert k.codes == {str(c): n for c, n in sorted(Counter(finals.values()).items())}
    answered = sum(1 for c in finals.values() if c == 200)
    assert k.answered == answered
    assert k.asr == round(100 * answered / len(finals), 2)


def test_kpis_of_the_sample(sample_trace: Trace) -> None:
    rows = cdr_rows(sample_trace)
    k = kpis(rows)
    # outcomes: 200, 486, 404, 487, 200 -> NER counts 200, 486, 487 (user behaviour)
    assert (k.attempts, k.answered, k.asr, k.ner, k.seer) == (5, 2, 40.0, 80.0, 60.0)
    durations = [r["duration_s"] for r in rows if r["outcome"] == "answered"]
    assert k.acd_s == pytest.approx(sum(durations) / 2, abs=1e-3)
    pdd = [r["pdd_ms"] for r in rows if r["pdd_ms"] is not None]
    assert k.pdd_p50_ms == pytest.approx(float(np.percentile(pdd, 50)), abs=1e-3)
    assert k.pdd_p95_ms == pytest.approx(float(np.percentile(pdd, 95)), abs=1e-3)
    assert sum(n for _, n in k.per_minute) == 5
    assert k.peak_cpm == max(n for _, n in k.per_minute)


def test_setup_and_pdd_match_tshark_times(sample_trace: Trace) -> None:
    """Setup = first INVITE of the attempt that got the final -> 2xx, from tshark's clock."""
    rows = tshark_fields(SAMPLE, 'sip.CSeq.method == "INVITE"', "sip.Call-ID", "sip.Method",
                         "sip.Status-Code", "frame.time_epoch", "sip.CSeq.seq")  # fmt: skip
    for row in cdr_rows(sample_trace):
        if row["outcome"] != "answered":
            continue
        mine = [r for r in rows if r[0] == row["call_id"]]
        last_seq = max(int(r[4]) for r in mine)
        invite = min(float(r[3]) for r in mine if r[1] == "INVITE" and int(r[4]) == last_seq)
        ok = min(float(r[3]) for r in mine if r[2] == "200")
        assert row["setup_ms"] == pytest.approx((ok - invite) * 1000, abs=0.01)


def test_q850_cause_from_reason_header_matches_tshark() -> None:
    path = corpus("sipnab__sip-rtp-g729a.pcap")
    (reason,) = [r[0] for r in tshark_fields(path, "sip.Reason", "sip.Reason")]
    (row,) = cdr_rows(full(path))
    parsed = parse_reason(reason)
    assert row["q850_cause"] == int(parsed["cause"]) == 16
    assert row["q850_text"] == "NORMAL_CLEARING"
    assert row["codec"] and row["codec"].startswith("G729")


def test_q850_on_a_failed_call_over_sctp() -> None:
    (row,) = cdr_rows(full(corpus("heplify__sip_sctp.pcap")))
    assert (row["final_code"], row["q850_cause"], row["q850_text"]) == (403, 21, "nocallee")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('Q.850;cause=16;text="Terminated"', {"protocol": "Q.850", "cause": "16",
                                              "text": "Terminated"}),  # RFC 3326 §3
        ("SIP ;cause=200 ;text=\"Call completed elsewhere\"",
         {"protocol": "SIP", "cause": "200", "text": "Call completed elsewhere"}),
        ("", {}),
    ],
)  # fmt: skip
def test_parse_reason(value: str, expected: dict[str, str]) -> None:
    assert parse_reason(value) == expected


def test_parse_rtp_stat() -> None:
    stat = parse_rtp_stat("PS=1000,OS=160000,PR=990,OR=158400,PL=10,JI=3,LA=0,DU=20")
    assert (stat["PL"], stat["JI"], stat["PR"]) == ("10", "3", "990")


@pytest.mark.parametrize("q", [0, 5, 50, 90, 95, 99, 100])
def test_percentile_matches_numpy(q: float) -> None:
    values = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.0]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([], q) is None


def test_empty_kpis() -> None:
    k = kpis([])
    assert (k.attempts, k.asr, k.acd_s, k.pdd_p50_ms, k.per_minute) == (0, None, None, None, [])


def test_write_csv_json_parquet_round_trip(sample_trace: Trace, tmp_path: Path) -> None:
    import pandas as pd

    rows = cdr_rows(sample_trace)
    assert write_cdr(rows, tmp_path / "cdr.csv") == "csv"
    with (tmp_path / "cdr.csv").open() as fh:
        back = list(csv.DictReader(fh))
    assert [r["call_id"] for r in back] == [r["call_id"] for r in rows]
    write_cdr(rows, tmp_path / "cdr.json")
    doc = json.loads((tmp_path / "cdr.json").read_text())
    assert doc["columns"] == list(CDR_COLUMNS) and doc["rows"] == rows
    write_cdr(rows, tmp_path / "cdr.parquet")
    frame = pd.read_parquet(tmp_path / "cdr.parquet")
    assert list(frame.columns) == list(CDR_COLUMNS)
    assert frame["final_code"].tolist() == [r["final_code"] for r in rows]
    with pytest.raises(ValueError, match="unknown CDR format"):
        write_cdr(rows, tmp_path / "cdr.xlsx")


def test_plots_are_svg_with_one_bar_per_item(sample_trace: Trace) -> None:
    import xml.etree.ElementTree as ET

    rows = cdr_rows(sample_trace)
    k = kpis(rows)
    plots = kpi_plots(rows, k)
    codes = ET.fromstring(plots["codes"])
    bars = [e for e in codes.iter("{http://www.w3.org/2000/svg}rect") if e.get("class") == "bar"]
    assert len(bars) == len(k.codes)
    assert ET.fromstring(bar_svg([], "empty")) is not None


def test_dtmf_column(sample_trace: Trace) -> None:
    """SIPp's first call sends digit 1 as RFC 4733 events (tshark decodes it too, see
    tests/rtp/test_media.py); the others send none."""
    assert [r["dtmf"] for r in cdr_rows(sample_trace)] == ["1", None, None, None, None]
