"""report.html in headless Chromium: tables and figures render, no console errors, no sideways scroll.

Needs Debian's `chromium` and `chromium-driver` and the `selenium` package; skipped
(with the reason) where Chromium is not installed.
"""

from __future__ import annotations

import shutil

import pytest

from safeswap.report import build_report
from test_report_build import make_runs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Chromium: apt-get install -y chromium chromium-driver",
)


@pytest.fixture()
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1280,1000",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_report_renders_in_chromium(tmp_path, browser):
    out = build_report(make_runs(tmp_path, refusal_judge=True), tmp_path / "report")
    browser.get((out / "report.html").as_uri())
    assert browser.execute_script("return document.readyState") == "complete"

    tables = browser.execute_script(
        "return [...document.querySelectorAll('table.booktabs')].map(t => [t.id, t.tBodies[0].rows.length, t.getBoundingClientRect().width])"
    )
    ids = [t[0] for t in tables]
    assert {"table-main", "table-categories", "table-general-mmmlu", "table-over-refusal", "table-all-safety"} <= set(ids)
    assert all(rows > 0 and width > 100 for _, rows, width in tables), tables
    main_rows = next(rows for table_id, rows, _ in tables if table_id == "table-main")
    assert main_rows == 5

    images = browser.execute_script(
        "return [...document.images].map(i => [i.complete, i.naturalWidth, i.getBoundingClientRect().width])"
    )
    assert len(images) == 6
    assert all(complete and natural > 0 and shown > 50 for complete, natural, shown in images), images

    # A paper-like page: nothing wider than the window.
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")

    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(height + 100, 8000))
    screenshot = tmp_path / "report.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 50_000

    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    # The log is really being read: an error the page makes now shows up.
    browser.execute_script("console.error('safeswap-probe')")
    assert any("safeswap-probe" in entry["message"] for entry in browser.get_log("browser"))
