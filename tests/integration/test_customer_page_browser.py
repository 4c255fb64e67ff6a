"""The customer page in a real browser (issue 16): headless Chromium (Debian's
``chromium`` and ``chromium-driver``, driven by Selenium; ``./dev test`` installs
them) opens the page for a scripted customer on a real worker, finds it by the
search box, checks what it shows, clears a flag with the review form, and the review
is audited on ``crm.flags``. A screenshot goes to the test's tmp dir, or to
``docs/img/customer-page.png`` with ``CRM_SCREENSHOT_DOCS=1`` (README picture).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas.flags import Flag
from tests.integration.broker import consume
from tests.integration.staff import CONTACT, basic, send_script, ui_env, wait_page

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium sending the staff credentials with every request (basic auth,
    as a browser sends it once the user has signed in)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert os.path.exists(CHROMIUM) and os.path.exists(DRIVER), (
        "Chromium is missing: apt-get install chromium chromium-driver (./dev test does)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1366,1700")
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": basic()}}
        )
        yield driver
    finally:
        driver.quit()


def _screenshot_path(tmp_path: Path) -> Path:
    if os.environ.get("CRM_SCREENSHOT_DOCS") == "1":
        path = ROOT / "docs" / "img" / "customer-page.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path / "customer-page.png"


def _arrive(browser, arrived, timeout: float = 15.0) -> None:
    """Wait until a click's navigation has happened and the new page has loaded (a click
    that submits a form returns before the browser leaves the page)."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, timeout).until(
        lambda b: arrived(b) and b.execute_script("return document.readyState") == "complete"
    )


def test_staff_find_a_customer_see_what_to_act_on_and_clear_a_flag_in_a_browser(
    crm_settings, workers, tmp_path, browser
):
    from selenium.webdriver.common.by import By

    _, port = workers.start(**ui_env(tmp_path))
    base = f"http://127.0.0.1:{port}"
    send_script(crm_settings, "cust-4711")
    wait_page(port, "/ui/customers/cust-4711", "repeated_returns", "cmp-1", "open_complaint")

    # Given the operator page, staff search the customer by id
    browser.get(f"{base}/ui")
    assert "Operator" in browser.find_element(By.TAG_NAME, "h1").text
    browser.find_element(By.ID, "q").send_keys("cust-4711")
    browser.find_element(By.CSS_SELECTOR, "header form button").click()
    _arrive(browser, lambda b: b.current_url.endswith("/ui/customers/cust-4711"))

    # Then the customer page shows what they act on
    assert "cust-4711" in browser.find_element(By.TAG_NAME, "h1").text
    complaint = browser.find_element(By.ID, "complaint-cmp-1").text
    assert "product" in complaint and "high" in complaint and "left" in complaint
    flags = browser.find_element(By.ID, "flags").find_element(By.XPATH, "following-sibling::table")
    assert "repeated_returns" in flags.text
    decisions = browser.find_element(By.ID, "decisions").find_element(
        By.XPATH, "following-sibling::table"
    )
    assert "suppressed" in decisions.text and "open_complaint" in decisions.text
    consent = browser.find_element(By.ID, "consent").find_element(
        By.XPATH, "following-sibling::table"
    )
    assert "withdrawn" in consent.text and "granted" in consent.text
    source = browser.page_source
    for detail in CONTACT.values():
        assert detail not in source
    assert browser.execute_script("return document.scripts.length") == 0
    browser.save_screenshot(str(_screenshot_path(tmp_path)))

    # When they open the flag's review form and clear it
    flags.find_element(By.PARTIAL_LINK_TEXT, "review").click()
    _arrive(browser, lambda b: "/flags/" in b.current_url)
    flag_id = browser.find_element(By.CSS_SELECTOR, "h1 code").text
    browser.find_element(By.ID, "operator").send_keys("op-grace")
    browser.find_element(By.ID, "reason").send_keys("returns were a courier fault")
    browser.find_element(By.CSS_SELECTOR, "button[value=cleared]").click()
    _arrive(browser, lambda b: "/flags/" not in b.current_url)

    # Then they are back on the customer page, told the review was sent ...
    assert "/ui/customers/cust-4711" in browser.current_url
    assert "Review sent" in browser.find_element(By.CSS_SELECTOR, ".notice").text
    # ... and the review is audited on crm.flags like crmstream flags clear's
    records = consume(
        crm_settings,
        crm_settings.topics.flags,
        until=lambda r: any(x["status"] == "cleared" for x in r),
        settle=0,
    )
    review = Flag.model_validate(next(r for r in records if r["status"] == "cleared"))
    assert (review.flag_id, review.reviewed_by) == (flag_id, "op-grace")
    assert review.reason == "returns were a courier fault"
