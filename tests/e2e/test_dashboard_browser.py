"""The dashboard page in headless Chromium (Debian's chromium + chromium-driver) against the
running stack: sign in with a token, see live campaign status and the firing alert."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.e2e.conftest import Stack
from tests.e2e.test_stack import T0, dialer_cdr
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


def rows(browser: WebDriver, table: str) -> list[str]:
    """Row texts of a table, read in one script call (the page re-renders every 2 s)."""
    script = "return Array.from(document.querySelectorAll(arguments[0])).map(r => r.innerText);"
    return list(browser.execute_script(script, f"#{table} tbody tr"))


def sign_in(browser: WebDriver, stack: Stack, token: str) -> None:
    browser.get(stack.api_url + "/")
    field = browser.find_element(By.ID, "token")
    field.send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()


def test_dashboard_shows_live_campaign_status_and_firing_alert(
    stack: Stack, browser: WebDriver, tmp_path: Path
) -> None:
    campaign = f"e2e-ui-{uuid.uuid4().hex[:8]}"
    kinds = ["silent"] * 8 + ["connected"] * 102
    cdrs = [
        dialer_cdr(campaign, i, kind, T0 + timedelta(seconds=5 * i)) for i, kind in enumerate(kinds)
    ]
    with stack.client("ingest") as ingest:
        assert ingest.post("/v1/cdrs", json=cdrs).status_code == 202

    sign_in(browser, stack, stack.tokens["viewer"])

    def campaign_row_text() -> str | None:
        return next((text for text in rows(browser, "campaigns") if campaign in text), None)

    row = wait_until(
        lambda: (text := campaign_row_text()) and "violation" in text.lower() and text,
        timeout=60,
        interval=0.5,
        message="the campaign never showed as in violation on the dashboard",
    )
    assert "7.27 %" in row  # 8 silent / 110 answered by a person, cumulative

    def alert_row() -> str | None:
        return next(
            (
                t
                for t in rows(browser, "alerts")
                if campaign in t and "it-silent-rate-cumulative" in t
            ),
            None,
        )

    alert = wait_until(alert_row, timeout=30, interval=0.5, message="no firing alert row")
    assert "violation" in alert.lower() and "8 / 110" in alert
    browser.save_screenshot(str(tmp_path / "dashboard.png"))


def test_dashboard_refuses_a_wrong_token_without_showing_data(
    stack: Stack, browser: WebDriver
) -> None:
    sign_in(browser, stack, "cdrw_not-a-real-token")
    error = wait_until(lambda: browser.find_element(By.ID, "error").text, timeout=15, interval=0.2)
    assert error == "token refused"
    assert browser.find_element(By.ID, "board").get_attribute("hidden") is not None
    assert browser.find_element(By.ID, "login").get_attribute("hidden") is None
