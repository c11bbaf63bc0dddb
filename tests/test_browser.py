"""One real-browser test: Explorer in headless Debian Chromium, on the tiny zoo.

Moving the Streamlit lam slider (keyboard arrows commit per press) changes the metric and the chart's
marker; dragging the chart's own Plotly slider moves the marker and the readout with no server rerun.
Run with `pytest -m e2e`; needs /usr/bin/chromium (apt-get install chromium) and playwright (no download).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import browser_helpers as bh

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not Path(bh.CHROMIUM).exists(), reason="needs Debian's /usr/bin/chromium")]
pytest.importorskip("playwright.sync_api")


def test_explorer_lam_slider_moves_metric_and_marker(tiny_zoo, tmp_path):
    with bh.server(tiny_zoo) as url, bh.browser_page() as page:
        # a deep link as the first request of a fresh server still runs app.py (sidebar, our navigation)
        page.goto(f"{url}/layers")
        bh.wait_idle(page)
        page.wait_for_selector('[data-testid="stPlotlyChart"]', timeout=120_000)
        nav = page.locator('[data-testid="stSidebarNavLink"]').all_inner_texts()
        assert any("Layers (LEWC fit)" in n for n in nav), nav
        assert page.locator('[data-testid="stSidebar"] [data-testid="stTextInput"]').count() == 1
        assert page.locator('[data-testid="stDialog"]').count() == 0

        bh.open_explorer(page, url)
        first, marks = bh.metrics(page), bh.markers(page)
        assert marks and all(x == pytest.approx(0.5) for x in marks)

        # client side: the chart's own slider moves markers and readout while dragging, no rerun
        seen = bh.drag_plotly_slider(page, dx=150)
        moved = [m for m, _ in seen if m and m[0] > 0.55]
        assert moved, seen
        assert any(r and "λ=0.5" not in r for _, r in seen)
        assert bh.metrics(page) == first  # nothing was sent to the server

        # server side: one arrow press commits lam = 0.51; metric and marker follow
        seconds = bh.press(page, bh.slider(page, "λ (1 = model A"), "ArrowRight")
        page.wait_for_function(f"() => {{ const m = ({bh.MARKERS_JS})(); return m && Math.abs(m[0] - 0.51) < 1e-9; }}",
                               timeout=60_000)
        assert bh.metrics(page) != first
        assert page.locator('[data-testid="stSliderThumbValue"]').first.inner_text() == "0.51"
        shot = tmp_path / "explorer.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        keep = os.environ.get("LMCDASH_E2E_ARTIFACTS")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(keep) / "explorer.png")
        print(f"lam change to new metric in the browser: {seconds:.3f} s")
