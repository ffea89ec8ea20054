"""The evaluation report's ``report.html``, opened in a real headless Chromium.

Chromium and its WebDriver come from Debian's packages (``chromium``,
``chromium-driver``; ``scripts/setup.sh`` installs them). The test drives
``chromedriver`` over the W3C WebDriver protocol with plain httpx: loading a
page waits for its ``load`` event, which waits for every image, so reading
``naturalWidth`` afterwards tells a loaded image from a broken one.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.serve import free_port
from uq_guard.evaluation.records import read_records
from uq_guard.evaluation.report import write_report

pytestmark = pytest.mark.slow

RECORDS = Path(__file__).parents[2] / "benchmarks" / "results" / "nq" / "records.jsonl"
# what the page holds once loaded: its tables and each image's natural size
PAGE_FACTS = """
return {
  tables: Array.from(document.querySelectorAll('table'), t => ({
    rows: t.rows.length, columns: t.querySelectorAll('th').length,
    cells: t.querySelectorAll('td').length})),
  images: Array.from(document.images, i => ({
    src: i.getAttribute('src'), complete: i.complete,
    width: i.naturalWidth, height: i.naturalHeight})),
};
"""


def _executable(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: `make setup` installs Debian's chromium and "
            "chromium-driver (scripts/setup.sh; it needs apt-get and root or sudo)"
        )
    return path


class Browser:
    """One headless Chromium session through chromedriver's WebDriver API."""

    def __init__(self, client: httpx.Client, session: str) -> None:
        self.client, self.session = client, session

    def _call(self, method: str, path: str, **body: Any) -> Any:
        url = f"/session/{self.session}/{path}"
        response = self.client.request(method, url, json=body if method == "POST" else None)
        response.raise_for_status()
        return response.json()["value"]

    def open(self, path: Path) -> dict[str, Any]:
        """Load ``path`` (returns after its load event) and return :data:`PAGE_FACTS`."""
        self._call("POST", "url", url=path.as_uri())
        return self._call("POST", "execute/sync", script=PAGE_FACTS, args=[])

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self._call("GET", "screenshot")))
        return path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    chromium, chromedriver = _executable("chromium"), _executable("chromedriver")
    port = free_port()
    driver = subprocess.Popen(
        [chromedriver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        deadline = time.monotonic() + 30
        while True:
            if driver.poll() is not None:
                pytest.fail(f"chromedriver exited: {driver.stderr.read().decode()[-2000:]}")
            try:
                if client.get("/status").json()["value"]["ready"]:
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                pytest.fail("chromedriver did not answer within 30 s")
            time.sleep(0.1)
        # /usr/bin/chromium is Debian's launcher script; chromedriver needs the binary itself
        binary = Path("/usr/lib/chromium/chromium")
        options = {
            "binary": str(binary if binary.is_file() else chromium),
            "args": [
                "--headless=new",
                "--no-sandbox",  # CI runs as root
                "--disable-dev-shm-usage",
                "--disable-gpu",
                "--window-size=1300,2400",
                f"--user-data-dir={tmp_path / 'profile'}",
            ],
        }
        capabilities = {"browserName": "chrome", "goog:chromeOptions": options}
        response = client.post("/session", json={"capabilities": {"alwaysMatch": capabilities}})
        assert response.status_code == 200, f"Chromium did not start: {response.text[:2000]}"
        session = response.json()["value"]["sessionId"]
        try:
            yield Browser(client, session)
        finally:
            client.delete(f"/session/{session}")
    finally:
        client.close()
        driver.terminate()
        try:
            driver.wait(timeout=10)
        except subprocess.TimeoutExpired:
            driver.kill()


def test_report_html_renders_its_table_and_every_plot(browser: Browser, tmp_path: Path) -> None:
    records = read_records(RECORDS)[:150]
    written = write_report(records, tmp_path / "report", n_resamples=50)
    plots = {name: path for name, path in written.items() if path.suffix == ".png"}
    assert len(plots) == 3, f"expected three plots, got {sorted(plots)}"

    page = browser.open(written["html"])
    screenshot = browser.screenshot(tmp_path / "report.png")

    # the methods table: as many rows as report.md's (less its --- line), each one full
    md_table = [
        line for line in written["markdown"].read_text().splitlines() if line.startswith("|")
    ]
    assert len(page["tables"]) == 1, page["tables"]
    table = page["tables"][0]
    assert table["rows"] == len(md_table) - 1 >= 3, (table, len(md_table))
    assert table["columns"] >= 5 and table["cells"] == (table["rows"] - 1) * table["columns"], table
    # every plot is on the page and drawn; a broken image has naturalWidth 0
    assert sorted(image["src"] for image in page["images"]) == sorted(
        p.name for p in plots.values()
    )
    broken = [image for image in page["images"] if not image["complete"] or image["width"] == 0]
    assert not broken, f"images that did not load: {broken}"
    assert screenshot.read_bytes().startswith(b"\x89PNG") and screenshot.stat().st_size > 10_000


def test_the_browser_check_sees_a_broken_image(browser: Browser, tmp_path: Path) -> None:
    """The check above can fail: a plot missing from the folder reads as broken."""
    records = read_records(RECORDS)[:60]
    written = write_report(records, tmp_path / "report", n_resamples=20)
    written["histograms"].unlink()

    page = browser.open(written["html"])

    sizes = {image["src"]: image["width"] for image in page["images"]}
    assert sizes["histograms.png"] == 0
    assert sizes["reliability.png"] > 0 and sizes["risk_coverage.png"] > 0
