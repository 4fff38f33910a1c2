"""Headless Chromium (Debian chromium + chromium-driver) driven by selenium, for the report.

Also a measurement tool: ``python tests/report/browser.py REPORT.html [...]`` prints the
size and the load time (navigation start to the page's ``data-ready`` mark, i.e. data
inflated, call list drawn and the first ladder inserted) of each report.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
)


def missing() -> str | None:
    """Why a browser test cannot run here (None when it can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    for tool in ("chromium", "chromedriver"):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install chromium chromium-driver)"
    return None


def start(profile: Path, width: int = 1400, height: int = 1000) -> Any:
    """A selenium Chrome driver on Debian's chromium with a fresh profile directory."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "chromium"
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument(f"--window-size={width},{height}")
    service = Service(executable_path=shutil.which("chromedriver") or "chromedriver")
    return webdriver.Chrome(service=service, options=opts)


def open_report(driver: Any, path: Path, timeout: float = 120.0) -> float:
    """Open a report by file:// and wait until its script says ready; ms from navigation
    start to ready (as the page's own clock measures it)."""
    driver.get(path.resolve().as_uri())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = driver.execute_script("return document.body && document.body.dataset.ready")
        if ready == "1":
            break
        if ready == "error":
            raise RuntimeError(driver.find_element("id", "shown").text)
        time.sleep(0.02)
    else:
        raise TimeoutError(f"{path} not ready after {timeout}s")
    return float(driver.execute_script("return document.body.dataset.readyMs"))


def measure(paths: list[str]) -> None:
    reason = missing()
    if reason:
        sys.exit(reason)
    with tempfile.TemporaryDirectory() as tmp:
        driver = start(Path(tmp) / "profile")
        try:
            for p in paths:
                size = Path(p).stat().st_size
                t0 = time.monotonic()
                page_ms = open_report(driver, Path(p))
                wall = (time.monotonic() - t0) * 1000
                t1 = time.monotonic()
                driver.find_element("css selector", "#f-text").send_keys("zzz-no-match")
                filt = (time.monotonic() - t1) * 1000
                print(
                    f"{p}: {size / 1e6:.2f} MB, ready {page_ms:.0f} ms after navigation start "
                    f"(wall {wall:.0f} ms), filter keystrokes {filt:.0f} ms"
                )
        finally:
            driver.quit()


if __name__ == "__main__":
    measure(sys.argv[1:])
