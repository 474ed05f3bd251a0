"""/docs and the dashboard in headless Chromium under the Content-Security-Policy of every
answer: Swagger UI renders from files of this origin only (no CDN: the browser here has no
network), and neither page trips a CSP violation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.e2e.conftest import Stack
from tests.e2e.test_dashboard_browser import browser, sign_in  # noqa: F401 - fixture
from tests.e2e.test_stack import dialer_cdr
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

# Installed before any page script runs: every CSP violation the page reports is kept.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


def watch_csp(driver: WebDriver) -> None:
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_VIOLATIONS})


def violations(driver: WebDriver) -> list[str]:
    return list(driver.execute_script("return window.__cspViolations || [];"))


def resource_origins(driver: WebDriver) -> set[str]:
    urls = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name);"
    )
    return {f"{urlsplit(u).scheme}://{urlsplit(u).netloc}" for u in urls if "://" in u}


@pytest.mark.parametrize("service", ["api", "ingest"])
def test_docs_render_offline_from_this_origin(stack: Stack, browser: WebDriver, service):  # noqa: F811
    base = stack.api_url if service == "api" else stack.ingest_url
    watch_csp(browser)
    browser.get(base + "/docs")

    def operations() -> list[str]:
        blocks = browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
        return [block.text for block in blocks]

    paths = wait_until(
        lambda: (found := operations()) and "/v1/cdrs" in found and found,
        timeout=30,
        interval=0.3,
        message=f"Swagger UI did not list the operations of {service}",
    )
    if service == "api":
        assert {
            "/v1/campaigns",
            "/v1/alerts/{alert_id}/ack",
            "/v1/reports/compliance",
            "/v1/calls/{call_id}",
        } <= set(paths)
    # The CDR body is a documented schema, not a bare object: its model is listed.
    wait_until(
        lambda: "CdrV1" in browser.find_element(By.TAG_NAME, "body").text,
        timeout=15,
        interval=0.3,
        message=f"Swagger UI of {service} did not list the CdrV1 schema",
    )
    assert violations(browser) == []
    assert resource_origins(browser) <= {base}


def test_the_dashboard_works_under_the_csp(stack: Stack, browser: WebDriver):  # noqa: F811
    watch_csp(browser)
    sign_in(browser, stack, stack.tokens["viewer"])
    wait_until(
        lambda: browser.find_element(By.ID, "board").get_attribute("hidden") is None,
        timeout=15,
        interval=0.2,
        message="the dashboard did not show its board",
    )
    wait_until(
        lambda: browser.find_element(By.ID, "updated").text.startswith("updated"),
        timeout=15,
        interval=0.2,
        message="the dashboard never refreshed",
    )
    # A campaign card with its chart (uPlot, its stylesheet, a canvas) under the CSP too.
    campaign = f"e2e-csp-{uuid.uuid4().hex[:8]}"
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    with stack.client("ingest") as ingest:
        assert (
            ingest.post("/v1/cdrs", json=[dialer_cdr(campaign, 0, "silent", at)]).status_code == 202
        )
    wait_until(
        lambda: browser.find_elements(
            By.CSS_SELECTOR, f"#campaigns .card[data-campaign='{campaign}'] .chart canvas"
        ),
        timeout=60,
        interval=0.5,
        message="the campaign's chart never appeared",
    )
    # The stylesheet applied: the header is the dark bar of dashboard.css.
    header = browser.find_element(By.TAG_NAME, "header")
    assert header.value_of_css_property("background-color") == "rgba(32, 35, 42, 1)"
    assert violations(browser) == []
    assert resource_origins(browser) <= {stack.api_url}
    # The recorder works: an inline script is blocked, and reported.
    browser.execute_script(
        "const s = document.createElement('script'); s.textContent = 'window.__ran = 1';"
        "document.body.append(s);"
    )
    reported = wait_until(lambda: violations(browser), timeout=5, interval=0.1)
    assert reported[0].startswith("script-src")
    assert browser.execute_script("return window.__ran === undefined;")
