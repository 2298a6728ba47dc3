"""The static site: escaping, highlighting, ablations, and a real browser check."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bench.report.model import CellResult, MetricValue
from bench.report.site import Ablation, AblationRow, Paired, SiteData, build_site

EVIL = "<script>window.__pwned = 1</script>"


def _cell(cid: str, driver: str, psnr: float, fid: float, fps: float) -> CellResult:
    return CellResult(
        cell_id=cid, dataset="vico-mini", split="test", task="talking", driver=driver,
        renderer="rig", postproc="none", fps=fps, device="cpu", n_clips=4,
        metrics={"psnr": MetricValue(psnr, True, psnr - 0.2, psnr + 0.2, backend="torchmetrics"),
                 "fid": MetricValue(fid, False, fid - 1, fid + 1)},
    )


@pytest.fixture
def site(tmp_path: Path) -> Path:
    cells = [
        _cell("c1", "static", 17.0, 40.0, 30.0),
        _cell("c2", "lstm", 18.5, 25.0, 20.0),
        _cell("c3", EVIL, 18.0, 20.0, 10.0),
    ]
    ablation = Ablation(
        slug="table2", title="Table 2", description="regularisers", reference="full",
        rows=[AblationRow("full", cells[1]),
              AblationRow("static", cells[0], {"psnr": Paired(-1.5, -1.8, -1.2, True),
                                               "fid": Paired(15.0, -2.0, 30.0, False)}),
              AblationRow("w/o BN", None)],
    )
    data = SiteData(
        cells=cells,
        clip_values={"c1": {"psnr": [16.5, 17.5]}, "c2": {"psnr": [18.0, 19.0]}},
        ablations=[ablation], provenance=[("headbench", "0.1.0"), ("plugin", EVIL)],
    )
    build_site(data, tmp_path / "site")
    return tmp_path / "site"


def test_plugin_names_are_escaped(site: Path) -> None:
    for page in site.glob("*.html"):
        html = page.read_text()
        assert EVIL not in html
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in (site / "index.html").read_text()


def test_best_highlight_and_ablation_significance(site: Path) -> None:
    html = (site / "index.html").read_text()
    assert html.count('class="best"') == 2  # psnr best: lstm; fid best: EVIL
    assert "<svg" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing loaded from a network
    ab = (site / "ablation-table2.html").read_text()
    assert 'class="sig"' in ab and 'class="nosig"' in ab
    assert "w/o BN" in ab  # listed as missing


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_leaderboard_in_a_real_browser(site: Path, tmp_path: Path) -> None:
    """Loads the page in headless Chromium: table rendered, best highlighted, sorting works."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    exe = _chromium()
    if exe is None:
        pytest.skip("Chromium is not installed (Debian package 'chromium'; .ci/run installs it)")
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=exe,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((site / "index.html").as_uri())
        rows = page.locator("table.leaderboard tbody tr")
        assert rows.count() == 3
        assert page.locator("table.leaderboard td.best").count() == 2
        assert page.evaluate("window.__pwned === undefined")
        page.locator("table.leaderboard th", has_text="psnr").click()
        first_sorted = page.locator("table.leaderboard tbody tr").first.locator("td").first.inner_text()
        assert first_sorted.startswith("static")  # ascending psnr: 17.0 first
        page.locator("table.leaderboard th", has_text="psnr").click()
        assert page.locator("table.leaderboard tbody tr").first.locator("td").first.inner_text().startswith("lstm")
        page.screenshot(path=str(tmp_path / "leaderboard.png"), full_page=True)
        browser.close()
    assert errors == []
    assert (tmp_path / "leaderboard.png").stat().st_size > 10_000


def test_sample_strip_rows_are_gt_generated_and_amplified_difference() -> None:
    import base64
    import io

    import numpy as np
    import torch
    from PIL import Image

    from bench.report.strips import strip_png

    gt = torch.zeros(2, 3, 8, 8)
    gen = torch.full((2, 3, 8, 8), 10 / 255)
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(strip_png(gt, gen, gain=4.0)))))
    assert image.shape == (3 * 8, 2 * 8, 3)  # rows: GT, generated, difference; one column per frame
    assert (image[:8] == 0).all() and (image[8:16] == 10).all()
    assert (image[16:] == 40).all()  # |10 - 0| levels x gain 4
