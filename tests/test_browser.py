"""The web page in a real browser: Debian's chromium, driven by selenium through the driver
Debian ships (nothing is downloaded), against a real uvicorn server and the bundled model."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import skimage.data

from xlir_qdrant.config import Overrides, Settings
from xlir_qdrant.index import Index
from xlir_qdrant.serve.server import WebServer

CHROMIUM = Path("/usr/bin/chromium")
DRIVER = Path("/usr/bin/chromedriver")
SKIMAGE = Path(skimage.data.__file__).parent
PHOTOS = ["chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "motorcycle_left.png"]

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and DRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install '.[test]')")


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    from selenium.webdriver.chrome.service import Service

    # Both paths are given, so Selenium Manager has nothing to find; should it run, it stays offline.
    monkeypatch.setenv("SE_OFFLINE", "true")
    monkeypatch.setenv("SE_AVOID_STATS", "true")

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="xlir-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,900", "--lang=en-US", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(DRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[WebServer]:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in PHOTOS:
        shutil.copy(SKIMAGE / name, photos / name)
    with Index(Settings.load(Overrides(store=tmp_path / "store"))) as idx:  # the bundled default model
        assert idx.index([photos]).added == len(PHOTOS)
        with WebServer(idx, port=0) as running:
            yield running


def test_search_in_spanish_see_the_cat_click_for_similar_and_german_tags(browser, server: WebServer,  # noqa: ANN001
                                                                        tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 60)

    def hits() -> list[object]:
        return browser.find_elements(By.CSS_SELECTOR, "#grid .hit")

    def names() -> list[str]:
        return [Path(h.get_attribute("data-path")).name for h in hits()]

    browser.get(server.url + "/")
    box = wait.until(lambda d: d.find_element(By.ID, "q"))
    assert "5 photos" in wait.until(lambda d: d.find_element(By.ID, "footer").text or None)
    box.send_keys("gato", Keys.ENTER)
    wait.until(lambda d: len(hits()) >= 1)  # the default model's scores are calibrated: weak matches are dropped
    assert names()[0] == "chelsea.png" and len(names()) < len(PHOTOS)
    first = hits()[0].find_element(By.TAG_NAME, "img")
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", first))
    assert "/api/thumb/" in first.get_attribute("src")
    assert "score" in hits()[0].get_attribute("aria-label")

    browser.find_element(By.CSS_SELECTOR, "#filters summary").click()
    Select(browser.find_element(By.ID, "lang")).select_by_value("de")
    hits()[0].click()
    wait.until(lambda d: "More like chelsea.png" in d.find_element(By.ID, "results-title").text)
    chips = wait.until(lambda d: [c.text.split("\n")[0] for c in d.find_elements(By.CSS_SELECTOR, "#chips li button")]
                       or None)
    assert "Katze" in chips
    assert "chelsea.png" not in names() and len(names()) == len(PHOTOS) - 1
    assert browser.find_element(By.ID, "detail-name").text == "chelsea.png"
    browser.save_screenshot(str(tmp_path / "page.png"))
    assert (tmp_path / "page.png").stat().st_size > 10_000

    # search by an image (what a drop does), then the phone layout: no sideways scrolling
    browser.find_element(By.ID, "pick").send_keys(str(SKIMAGE / "coffee.png"))
    wait.until(lambda d: "Photos like coffee.png" in d.find_element(By.ID, "results-title").text)
    assert names()[0] == "coffee.png"
    browser.set_window_size(390, 844)
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    browser.save_screenshot(str(tmp_path / "phone.png"))


def test_errors_and_the_empty_index_are_shown(browser, tmp_path: Path) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    with Index(Settings.load(Overrides(store=tmp_path / "store"))) as idx, WebServer(idx, port=0) as running:
        browser.get(running.url + "/")
        notice = wait.until(lambda d: d.find_element(By.ID, "notice").text or None)
        assert "Nothing is indexed yet" in notice
        browser.find_element(By.ID, "q").send_keys("gato", Keys.ENTER)
        wait.until(lambda d: "Nothing is indexed yet" in d.find_element(By.ID, "notice").text)
        browser.find_element(By.ID, "index-path").send_keys("relative/folder", Keys.ENTER)
        job = wait.until(lambda d: d.find_element(By.ID, "job-text").text or None)
        assert "absolute" in job
