"""The HTML report in a real headless browser (Debian's ``chromium``; .ci/run installs it when missing): the page
loads with no console errors and no broken images, and a screenshot is written next to the report. The checker is
shown to fail on a planted broken image."""
from __future__ import annotations

import json
import re
import struct

import pytest

from loupe_bench.errors import LoupeBenchError
from loupe_bench.report.browser import browser_check, find_chromium
from loupe_bench.report.render import report

from test_report import _write


@pytest.fixture()
def html_report(tmp_path):
    r = tmp_path / "results"
    for k, m in enumerate(("clip-tiny", "filip-tiny", "loupe-tiny")):
        _write(r, m, "synthetic-retrieval", {"i2t_R@1": 0.3 + 0.1 * k, "i2t_R@5": 0.6 + 0.1 * k, "rsum": 2.0 + k})
        _write(r, m, "synthetic-grounding", {"acc@0.5": 0.4 + 0.05 * k}, fp="fp-g")
        log = tmp_path / "runs" / m / "log.jsonl"
        log.parent.mkdir(parents=True)
        log.write_text("\n".join(json.dumps({"step": s, "loss": 2.0 / (s + 1) + k}) for s in range(6)))
    return report(r, out_dir=tmp_path / "report", quiet=True).html


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_report_loads_in_headless_chromium(html_report):
    assert find_chromium()            # no browser is a failure, not a skip (.ci/run installs it)
    shot = html_report.with_name("report-screenshot.png")
    seen = browser_check(html_report, shot)
    assert seen.console_errors == []
    assert seen.broken_images == []
    assert seen.n_images == html_report.read_text().count("<img ") >= 3    # bar charts + training curves
    assert seen.title == "loupe-bench report: results"
    assert seen.screenshot == shot and _png_size(shot) == (1280, 2000)


def test_browser_check_finds_a_broken_image_and_console_errors(html_report, tmp_path):
    html = html_report.read_text()
    first = re.search(r'<img alt="([^"]+)" src="data:image/png;base64,[A-Za-z0-9+/=]+"', html)
    broken = html[:first.start()] + f'<img alt="{first.group(1)}" src="data:image/png;base64,iVBORw0KGgo!!not-a-png"' \
        + html[first.end():]
    page = tmp_path / "broken.html"
    page.write_text(broken)
    seen = browser_check(page)
    assert seen.broken_images == [first.group(1)]
    assert seen.n_images == html.count("<img ")
    page.write_text(html.replace("</body>", "<script>console.error('planted'); missingFunction();</script></body>"))
    seen = browser_check(page)
    assert seen.broken_images == []
    assert any("planted" in e for e in seen.console_errors)
    assert any("missingFunction" in e for e in seen.console_errors)


def test_missing_chromium_is_an_error(monkeypatch, tmp_path):
    from loupe_bench.report import browser  # loupe_bench.report (the attribute) is the report() function

    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    monkeypatch.setattr(browser, "CHROMIUM", str(tmp_path / "no-chromium"))
    with pytest.raises(LoupeBenchError, match="apt-get install -y chromium"):
        browser.find_chromium()
