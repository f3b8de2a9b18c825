"""The HTML report in a real headless browser (Debian's ``chromium``; .ci/run installs it when missing): the page
loads with no console errors and no broken images, and a screenshot is written next to the report. The checker is
shown to fail on a planted broken image. On a report shaped like a default reproduction (a 39-metric task, 8-metric
grounding tables over 10 rows, an oracle and reference rows, captioning without intervals) the layout holds at
1400, 1000 and 800 px: no sideways page scroll, no text below 9 px (images: shown/natural width × the figures'
smallest font in px), no best mark on oracle/reference rows or on values that display equal."""
from __future__ import annotations

import json
import re
import struct

import pytest

from loupe_bench.errors import LoupeBenchError
from loupe_bench.report.browser import browser_check, find_chromium
from loupe_bench.report.plots import MIN_FONT_PT, PLOT_DPI
from loupe_bench.report.render import render_report

from test_report import _write

#: the token-interaction probe's 13 metric stems, each reported per object kind
TOKEN_STEMS = ("box_beats_shifted@I", "box_beats_shifted@phi", "part_interaction_positive", "mean_I", "mean_I_shifted",
               "mean_phi", "mean_phi_shifted", "mean_I_per_patch", "mean_I_shifted_per_patch", "mean_phi_per_patch",
               "mean_phi_shifted_per_patch", "mean_part_interaction", "mean_part_interaction_shifted")


@pytest.fixture()
def html_report(tmp_path):
    r = tmp_path / "results"
    for k, m in enumerate(("clip-tiny", "filip-tiny", "loupe-tiny")):
        _write(r, m, "synthetic-retrieval", {"i2t_R@1": 0.3 + 0.1 * k, "i2t_R@5": 0.6 + 0.1 * k, "rsum": 2.0 + k})
        _write(r, m, "synthetic-grounding", {"acc@0.5": 0.4 + 0.05 * k}, fp="fp-g")
        log = tmp_path / "runs" / m / "log.jsonl"
        log.parent.mkdir(parents=True)
        log.write_text("\n".join(json.dumps({"step": s, "loss": 2.0 / (s + 1) + k}) for s in range(6)))
    return render_report(r, out_dir=tmp_path / "report", quiet=True).html


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
    from loupe_bench.report import browser

    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    monkeypatch.setattr(browser, "CHROMIUM", str(tmp_path / "no-chromium"))
    with pytest.raises(LoupeBenchError, match="apt-get install -y chromium"):
        browser.find_chromium()


@pytest.fixture()
def wide_report(tmp_path):
    """A report shaped like a default reproduction's: the page's layout problems show on it."""
    r = tmp_path / "results"
    models = ("clip-tiny", "filip-tiny", "loupe-no-fsa", "loupe-no-tsa", "loupe-sampling", "loupe-tiny",
              "sparc-tiny", "loupe-oracle-regions")
    tags = ("anchor", "colour+shape", "colour-only", "mixed", "no-anchor", "shape-only")
    for k, m in enumerate(models):
        grounding = {"acc@0.5": 0.1 + 0.11 * k, "proposal_recall@10": 0.2 + 0.05 * k}
        grounding.update({f"acc@0.5:{t}": 0.1 + 0.02 * k + 0.01 * i for i, t in enumerate(tags)})
        _write(r, m, "synthetic-grounding-native", grounding, fp="fp-g")
        _write(r, m, "synthetic-captioning", {"CIDEr-D": 0.0068 + 0.0001 * (k % 3), "BLEU-2": 0.4750},
               fp="fp-c", ci=False)
        if k < 3:
            ti = {f"{base}:{part}": 0.3 + 0.01 * k for base in TOKEN_STEMS for part in ("all", "flat", "two-part")}
            _write(r, m, "synthetic-token-interaction", ti, fp="fp-t")
    for f in r.glob("*.json"):
        o = json.loads(f.read_text())
        if o["model"]["name"] == "loupe-oracle-regions":
            o["model"]["spec"]["description"] = "NOT LOUPE - an upper bound that uses box labels"
        if o["task"]["name"] == "synthetic-grounding-native":
            o["reference_rows"] = {"chance": {"acc@0.5": {"value": 0.05, "units": "fraction"}},
                                   "attribute-oracle": {"acc@0.5": {"value": 0.99, "units": "fraction"}}}
        f.write_text(json.dumps(o))
    for k, m in enumerate(models):
        log = tmp_path / "runs" / m / "log.jsonl"
        log.parent.mkdir(parents=True)
        log.write_text("\n".join(json.dumps({"step": s, "loss": 2.0 / (s + 1) + k, "loss/cmc": 1.0, "loss/fsa": 0.5})
                                 for s in range(6)))
    return render_report(r, out_dir=tmp_path / "report", quiet=True)


def test_report_layout_at_1400_1000_and_800_px(wide_report):
    html_path = wide_report.html
    seen = {w: browser_check(html_path, html_path.with_name(f"screenshot-{w}.png"), width=w, height=2000)
            for w in (1400, 1000, 800)}
    for w, s in seen.items():
        assert s.console_errors == [] and s.broken_images == []
        assert _png_size(s.screenshot) == (w, 2000)
        assert s.layout["scrollWidth"] <= s.layout["innerWidth"] == w, w       # only tables/figures scroll
        assert s.layout["smallText"] == [], (w, s.layout["smallText"][:5])
    font_px = MIN_FONT_PT * PLOT_DPI / 72
    for img in seen[800].layout["images"]:
        assert img["shown"] / img["natural"] * font_px >= 9, img
    html = html_path.read_text()
    assert '<nav class="toc">' in html and 'href="#task-synthetic-token-interaction"' in html
    table = wide_report.table
    # best marks: never on an oracle/reference row, never on captioning's values that display equal
    assert all(not set(w) & {"loupe-oracle-regions", "chance", "attribute-oracle"} for w in table.best.values())
    assert html.count('class="best"') == sum(len(w) for w in table.best.values()) > 0
    captioning = html[html.index('id="task-synthetic-captioning"'):]
    assert 'class="best"' not in captioning[:captioning.index("</section>")]
    for row in re.findall(r'<tr class="(?:oracle|reference)">.*?</tr>', html):
        assert 'class="best"' not in row
    assert html.count('<span class="tag">oracle</span>') >= 3 and '<span class="tag">reference</span>' in html
