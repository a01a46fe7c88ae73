"""The report in a real browser: headless Chromium (Debian's chromium; `make test` installs it
when missing, see .ci/install-chromium.sh) loads report.html with no console error, no request
leaving the file, and every image decoded with a non-zero natural size. The screenshot is kept
as a test artifact: test-artifacts/report.png (or $TRANSFERKIT_TEST_ARTIFACTS/report.png)."""

import os
from pathlib import Path

import pytest

from transferkit.reports.browser import find_chromium, inspect_page

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium on PATH: `make test` installs Debian's chromium with apt-get when it can "
           "(.ci/install-chromium.sh printed why it could not); or set TRANSFERKIT_CHROMIUM")

ARTIFACTS = Path(os.environ.get("TRANSFERKIT_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


@needs_chromium
def test_report_renders_in_chromium(full_dir):
    html = full_dir / "report.html"
    n_img = html.read_text().count("<img ")
    shot = ARTIFACTS / "report.png"
    res = inspect_page(html, screenshot=shot)
    print(f"\nreport screenshot: {shot}")
    assert res["console_errors"] == []
    assert res["requests"] == []
    assert res["title"] == "transferkit report: synthetic"
    assert len(res["images"]) == n_img >= 10
    for im in res["images"]:
        assert im["complete"] and im["naturalWidth"] > 0 and im["naturalHeight"] > 0, im
    from PIL import Image

    with Image.open(shot) as im:
        w, h = im.size
    assert w == 1200 and h == res["page_size"][1] > 2000  # the whole page


@needs_chromium
def test_browser_check_catches_broken_pages(tmp_path):
    """The same check fails on a console error, an undecodable image and an outside request."""
    page = tmp_path / "bad.html"
    page.write_text('<html><body><img src="data:image/png;base64,AAAA">'
                    '<img src="http://127.0.0.1:9/x.png"><script>console.error("boom")</script></body></html>')
    res = inspect_page(page, timeout=30)
    assert any("boom" in e for e in res["console_errors"])
    assert any(im["naturalWidth"] == 0 for im in res["images"])
    assert res["requests"] == ["http://127.0.0.1:9/x.png"]
