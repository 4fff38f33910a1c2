"""The HTML report in a real browser: headless Debian chromium driven by selenium.

Opens reports of shipped samples by file://, checks one arrow per message, clicks an
arrow and reads the message, filters and sorts the call list, and that the page fetched
nothing. Screenshots go to the pytest tmp dir, and also to $SIPFLOW_ARTIFACTS when set.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import browser
import pytest
from report_helpers import FS_LOG, LONG_CALL

from sipflow.report.html import write_report
from sipflow.trace import Trace

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))
CSS = "css selector"


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d = browser.start(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield d
    finally:
        d.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def _shot(driver: Any, shots: Path, name: str) -> None:
    path = shots / f"{name}.png"
    assert driver.save_screenshot(str(path))
    extra = os.environ.get("SIPFLOW_ARTIFACTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)


def _rows(driver: Any) -> list[Any]:
    return list(driver.find_elements(CSS, "#calls tbody tr.call"))


def _arrows(driver: Any) -> list[Any]:
    return list(driver.find_elements(CSS, "#ladder g.arrow"))


def _select_call(driver: Any, index: int) -> None:
    (row,) = [r for r in _rows(driver) if r.get_attribute("data-i") == str(index)]
    row.click()


def _click_arrow(driver: Any, i: int) -> str:
    (arrow,) = [a for a in _arrows(driver) if a.get_attribute("data-i") == str(i)]
    arrow.find_element(CSS, "text.label").click()
    return str(driver.find_element(CSS, "#msg").text)


def _set(driver: Any, element_id: str, value: str) -> None:
    el = driver.find_element(CSS, f"#{element_id}")
    el.clear()
    if value:
        el.send_keys(value)
    driver.execute_script("arguments[0].dispatchEvent(new Event('input'))", el)


@pytest.mark.parametrize("compress", [False, True], ids=["json", "gzip"])
def test_sample_report_in_chromium(
    driver: Any, sample_trace: Trace, tmp_path: Path, shots: Path, compress: bool
) -> None:
    path = tmp_path / "report.html"
    write_report(sample_trace, path, compress=compress)
    browser.open_report(driver, path)
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert len(_rows(driver)) == 5

    for i, call in enumerate(sample_trace.call_records):  # one arrow per message
        _select_call(driver, i)
        assert len(_arrows(driver)) == call.messages, call.call_ids

    _select_call(driver, 3)
    text = _click_arrow(driver, 0)
    assert text.startswith("INVITE sip:service@127.0.0.1:5060 SIP/2.0")
    assert "Call-ID: 1-24515@127.0.0.1" in text
    assert len(driver.find_elements(CSS, "#msg span.hn")) >= 6  # header names highlighted
    assert _click_arrow(driver, 5).startswith("SIP/2.0 487 Request Terminated")
    assert "sel" in (_arrows(driver)[5].get_attribute("class") or "")
    _shot(driver, shots, f"sample-call3-{'gzip' if compress else 'json'}")

    _set(driver, "f-text", "1-24515")
    assert [r.get_attribute("data-i") for r in _rows(driver)] == ["3"]
    _set(driver, "f-text", "")
    driver.find_element(CSS, "#f-outcome option[value='answered']").click()
    assert [r.get_attribute("data-i") for r in _rows(driver)] == ["0", "4"]
    driver.find_element(CSS, "#f-outcome option[value='']").click()
    _set(driver, "f-code", "48")
    assert sorted(r.get_attribute("data-i") for r in _rows(driver)) == ["1", "3"]
    assert "2 of 5 calls" in driver.find_element(CSS, "#shown").text
    _shot(driver, shots, f"sample-filtered-{'gzip' if compress else 'json'}")
    _set(driver, "f-code", "")
    driver.find_element(CSS, "#calls th[data-k='code']").click()
    codes = [r.find_elements(CSS, "td")[5].text for r in _rows(driver)]
    assert codes == sorted(codes)


def test_pbx_log_report_shows_channel_marks(
    driver: Any, fs_trace: Trace, tmp_path: Path, shots: Path
) -> None:
    path = tmp_path / "fs.html"
    write_report(fs_trace, path)
    browser.open_report(driver, path)
    assert len(_arrows(driver)) == len(fs_trace.message_list)
    assert len(driver.find_elements(CSS, "#ladder g.mark")) > 0
    assert "originate" in driver.find_element(CSS, "#info").text
    text = _click_arrow(driver, 0)
    assert "sdp.telephone_event_mismatch" in text  # the finding badge, above the message
    _shot(driver, shots, f"freeswitch-{FS_LOG.stem}")


def test_long_call_report_loads_and_draws_503_arrows(
    driver: Any, long_trace: Trace, tmp_path: Path, shots: Path
) -> None:
    path = tmp_path / "long.html"
    size = write_report(long_trace, path)
    ready_ms = browser.open_report(driver, path)
    assert len(_arrows(driver)) == 503
    assert _click_arrow(driver, 502).startswith("SIP/2.0 200 OK")
    _shot(driver, shots, f"long-call-{LONG_CALL.stem}")
    print(f"long call report: {size} bytes, ready in {ready_ms:.0f} ms")
    assert ready_ms < 10_000
