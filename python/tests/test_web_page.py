"""The service's page at `/` in headless Chromium (Debian's chromium and chromium-driver, driven
by Selenium): choose an example image, wait for its caption, compare it with `lightcap caption`
on the same file; a text file shows the service's error. The screenshot is written to
$LIGHTCAP_SCREENSHOT when set (docs/server-page.png was made so)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMEDRIVER is None and not os.environ.get("LIGHTCAP_REQUIRE_SWIFT"),
    reason="chromium-driver is not installed (scripts/setup.sh --python installs it)")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=900,760"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def test_page_captions_an_example_like_the_command_line(lightcap_server, browser, lightcap_exe, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    image = ROOT / "examples" / "scene1.png"
    browser.get(lightcap_server)
    assert browser.title == "LightCap"
    browser.find_element(By.ID, "file").send_keys(str(image))
    WebDriverWait(browser, 60).until(lambda d: d.execute_script("return document.body.dataset.captioned"))
    caption = browser.find_element(By.ID, "caption").text
    expected = subprocess.run([str(lightcap_exe), "caption", str(image)], capture_output=True, text=True,
                              check=True, cwd=ROOT).stdout.strip()
    assert caption == expected
    bars = browser.find_elements(By.CSS_SELECTOR, "#concepts .bar")
    assert len(bars) > 0 and all(float(b.text.split()[-1]) > 0 for b in bars)
    stages = [row.text.split()[0] for row in browser.find_elements(By.CSS_SELECTOR, "#timings tr")]
    assert stages == ["queue", "decode", "preprocess", "backbone", "concepts", "fusion", "total"]
    shot = Path(os.environ.get("LIGHTCAP_SCREENSHOT") or tmp_path / "page.png")
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "error").is_displayed())
    assert "notes.png: " in browser.find_element(By.ID, "error").text
    assert "not a JPEG, PNG or WebP" in browser.find_element(By.ID, "error").text
