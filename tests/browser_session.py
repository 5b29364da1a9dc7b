"""Headless Chromium for the UI tests: the driver, and waiting on what a page shows.

Chromium and chromedriver are Debian's ``chromium`` and ``chromium-driver`` (``make
browser-deps`` installs them). The ``browser`` fixture in ``conftest.py`` yields a driver.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

#: Seconds to wait for one thing (a server to answer, a page to show its content).
WAIT = 60


def browser_binaries() -> tuple[str, str]:
    """Chromium and chromedriver on PATH, or fail saying how to install them."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail(
            "the browser tests need Chromium and chromedriver on PATH (found chromium="
            f"{chromium}, chromedriver={driver}): run `make browser-deps`, which installs the "
            "Debian packages chromium and chromium-driver with apt-get, or install them by hand",
            pytrace=False,
        )
    return chromium, driver


@contextmanager
def chromium() -> Iterator:
    """Headless Chromium driven by the system chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def body_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def wait_for_text(driver, wanted: list[str], what: str) -> str:
    """Wait until the page's visible text shows every string of ``wanted``; return the text."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, WAIT).until(lambda d: all(w in body_text(d) for w in wanted))
    except TimeoutException:
        text = body_text(driver)
        missing = [w for w in wanted if w not in text]
        pytest.fail(f"{what} ({driver.current_url}) never showed {missing}; it shows:\n{text}")
    return body_text(driver)


def log_in(driver, base: str, user: str, password: str, screenshot=None) -> None:
    """Sign in through the Airflow UI's login form (where a visitor without a session goes)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, WAIT)
    driver.get(f"{base}/")
    wait.until(ec.visibility_of_element_located((By.NAME, "username")))
    assert "/auth/login" in driver.current_url
    driver.find_element(By.NAME, "username").send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(password)
    if screenshot is not None:
        driver.save_screenshot(str(screenshot))
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: "/auth/login" not in d.current_url)
