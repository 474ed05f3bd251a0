"""The dashboard page in headless Chromium (Debian's chromium + chromium-driver) against the
running stack: sign in with a token, see a campaign posted during the test appear with its
cap, headroom and chart, and its alert arrive over the alert stream without a reload;
screenshots are saved under the test's tmp dir and named in the output (`-s`)."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.e2e.conftest import Stack
from tests.e2e.test_stack import dialer_cdr
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    assert chromium and driver_path, (
        "headless Chromium is missing: run `make system-deps` "
        "(Debian packages chromium and chromium-driver)"
    )
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager try to download
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,900",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def sign_in(browser: WebDriver, stack: Stack, token: str) -> None:
    browser.get(stack.api_url + "/")
    field = browser.find_element(By.ID, "token")
    field.send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()


def screenshot(browser: WebDriver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    assert browser.save_screenshot(str(path)), path
    print(f"screenshot: {path}")  # noqa: T201 - the test's output names its screenshots
    return path


CARD = "#campaigns .card[data-campaign='{}']"
# The chart is drawn when its canvas holds painted pixels (uPlot draws series and axes).
PAINTED_PIXELS = """
const canvas = document.querySelector(arguments[0] + ' .chart canvas');
if (!canvas || canvas.width === 0 || canvas.height === 0) return 0;
const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let painted = 0;
for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) painted++;
return painted;
"""


def card_text(browser: WebDriver, campaign: str) -> str | None:
    script = "const c = document.querySelector(arguments[0]); return c ? c.innerText : null;"
    text: str | None = browser.execute_script(script, CARD.format(campaign))
    return text


def alert_rows(browser: WebDriver) -> list[str]:
    script = "return Array.from(document.querySelectorAll(arguments[0])).map(r => r.innerText);"
    return list(browser.execute_script(script, "#alerts tbody tr"))


def test_dashboard_shows_a_new_campaign_its_chart_and_an_alert_without_reload(
    stack: Stack, browser: WebDriver, tmp_path: Path
) -> None:
    sign_in(browser, stack, stack.tokens["compliance"])
    wait_until(
        lambda: browser.find_element(By.ID, "connection").text.lower() == "live",
        timeout=30,
        interval=0.2,
        message="the dashboard never opened its alert stream",
    )
    browser.execute_script("window.cdrwatchPageMarker = 'same page';")  # gone on a reload
    screenshot(browser, tmp_path, "dashboard-before")

    campaign = f"e2e-ui-{uuid.uuid4().hex[:8]}"
    kinds = ["silent"] * 8 + ["connected"] * 102
    # Calls of the last half hour: the chart shows the last 3 hours of the wall clock.
    first = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    cdrs = [
        dialer_cdr(campaign, i, kind, first + timedelta(seconds=5 * i))
        for i, kind in enumerate(kinds)
    ]
    with stack.client("ingest") as ingest:
        assert ingest.post("/v1/cdrs", json=cdrs).status_code == 202

    card = wait_until(
        lambda: (text := card_text(browser, campaign)) and "VIOLATION" in text.upper() and text,
        timeout=60,
        interval=0.5,
        message="the campaign never showed as in violation on the dashboard",
    )
    assert "7.27 %" in card  # 8 silent / 110 answered by a person, cumulative
    regulatory = wait_until(
        lambda: "of cap 3.00 %" in (text := card_text(browser, campaign) or "") and text,
        timeout=30,
        interval=0.5,
        message="the card never showed the profile's cap",
    )
    assert "7.27 % of cap 3.00 %" in regulatory
    assert "last CDR received" in regulatory
    assert "LIVE" in regulatory.upper()

    alert = wait_until(
        lambda: next(
            (t for t in alert_rows(browser) if campaign in t and "it-silent-rate-cumulative" in t),
            None,
        ),
        timeout=30,
        interval=0.5,
        message="no firing alert row",
    )
    assert "violation" in alert.lower() and "8 / 110" in alert
    assert not re.search(r"\d:\d\d\.\d", alert)  # local times without fractions of seconds
    painted = wait_until(
        lambda: browser.execute_script(PAINTED_PIXELS, CARD.format(campaign)),
        timeout=30,
        interval=0.5,
        message="the campaign's chart was never drawn",
    )
    assert painted > 1000
    assert browser.execute_script("return window.cdrwatchPageMarker;") == "same page"
    screenshot(browser, tmp_path, "dashboard-alert")
    card_path = tmp_path / "dashboard-campaign-card.png"
    assert browser.find_element(By.CSS_SELECTOR, CARD.format(campaign)).screenshot(str(card_path))
    print(f"screenshot: {card_path}")  # noqa: T201

    # A compliance token sees the ack button; acknowledging shows who and the note.
    row = next(
        r
        for r in browser.find_elements(By.CSS_SELECTOR, "#alerts tbody tr")
        if campaign in r.text and "it-silent-rate-cumulative" in r.text
    )
    row.find_element(By.CSS_SELECTOR, "input").send_keys("dialer pacing lowered")
    row.find_element(By.CSS_SELECTOR, "button.ack").click()
    acked = wait_until(
        lambda: next(
            (
                t
                for t in alert_rows(browser)
                if campaign in t and "it-silent-rate-cumulative" in t and "by " in t
            ),
            None,
        ),
        timeout=20,
        interval=0.3,
        message="the acknowledgement never showed",
    )
    assert "dialer pacing lowered" in acked
    screenshot(browser, tmp_path, "dashboard-acknowledged")


def test_a_viewer_token_sees_alerts_but_no_ack_button(stack: Stack, browser: WebDriver) -> None:
    campaign = f"e2e-ui-viewer-{uuid.uuid4().hex[:8]}"
    first = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    kinds = ["silent"] * 4 + ["connected"]  # a 4th silent call: certain violation (IT)
    cdrs = [
        dialer_cdr(campaign, i, kind, first + timedelta(seconds=5 * i))
        for i, kind in enumerate(kinds)
    ]
    with stack.client("ingest") as ingest:
        assert ingest.post("/v1/cdrs", json=cdrs).status_code == 202
    sign_in(browser, stack, stack.tokens["viewer"])
    row = wait_until(
        lambda: next((t for t in alert_rows(browser) if campaign in t), None),
        timeout=60,
        interval=0.5,
        message="the viewer never saw the campaign's alert",
    )
    assert "not acknowledged" in row
    assert browser.find_elements(By.CSS_SELECTOR, "#alerts button.ack") == []


def test_dashboard_refuses_a_wrong_token_without_showing_data(
    stack: Stack, browser: WebDriver
) -> None:
    sign_in(browser, stack, "cdrw_not-a-real-token")
    error = wait_until(lambda: browser.find_element(By.ID, "error").text, timeout=15, interval=0.2)
    assert error == "token refused"
    assert browser.find_element(By.ID, "board").get_attribute("hidden") is not None
    assert browser.find_element(By.ID, "login").get_attribute("hidden") is None
