"""Drive the dashboard in headless Debian Chromium (Playwright, no browser download).

Used by tests/test_browser.py, and runnable on its own against any zoo:

    PYTHONPATH=. .venv/bin/python tests/browser_helpers.py --zoo checkpoints --family mlp1_wd3e-3 --width 32 \
        --screenshot docs/screenshot.png

which opens Explorer on that pair, prints the measured latencies (first view of the pair, a lam change
to a new and to an already computed lam, a temperature change) as JSON, and saves a screenshot.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic"]
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
METRICS_JS = "() => Array.from(document.querySelectorAll('[data-testid=\"stMetricValue\"]')).map(e => e.innerText)"
MARKERS_JS = """() => { const gd = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
  return gd && gd.data ? gd.data.filter(t => t.mode === 'markers').map(t => t.x[0]) : null; }"""
READOUT_JS = """() => { const el = Array.from(document.querySelectorAll(
  '[data-testid="stPlotlyChart"] g.slider-container text')).find(e => e.textContent.startsWith('drag'));
  return el ? el.textContent : null; }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(zoo: Path, port: int | None = None, timeout: float = 60.0, log: Path | None = None) -> Iterator[str]:
    """Run `streamlit run app.py` on a free localhost port with LMCDASH_CHECKPOINTS=zoo; yield its URL.

    The server's output goes to ``log`` (a temporary file by default), never to an undrained pipe.
    """
    port = port or free_port()
    log = Path(log) if log else Path(tempfile.mkstemp(prefix="lmcdash-streamlit-", suffix=".log")[1])
    env = {**os.environ, "LMCDASH_CHECKPOINTS": str(Path(zoo).resolve()), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless=true", f"--server.port={port}",
           "--server.address=127.0.0.1", "--server.fileWatcherType=none", "--browser.gatherUsageStats=false"]
    out = open(log, "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        out.close()


@contextlib.contextmanager
def browser_page(width: int = 1500, height: int = 1100):
    """Yield a Playwright page in headless /usr/bin/chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def wait_idle(page, timeout: float = 300.0) -> None:
    page.wait_for_selector(IDLE, timeout=timeout * 1000)


def open_explorer(page, url: str, timeout: float = 300.0) -> None:
    page.goto(f"{url}/")  # Explorer is the default page: it lives at the root URL
    wait_idle(page, timeout)
    page.wait_for_selector('[data-testid="stMetricValue"]', timeout=timeout * 1000)


def metrics(page) -> list[str]:
    return page.evaluate(METRICS_JS)


def markers(page) -> list[float] | None:
    return page.evaluate(MARKERS_JS)


def readout(page) -> str | None:
    return page.evaluate(READOUT_JS)


def wait_metrics_change(page, before: list[str], timeout: float = 300.0) -> float:
    """Return the seconds until the metric values differ from ``before``."""
    t0 = time.perf_counter()
    page.wait_for_function(f"(b) => JSON.stringify(({METRICS_JS})()) !== JSON.stringify(b)", arg=before,
                           timeout=timeout * 1000, polling=20)
    return time.perf_counter() - t0


def slider(page, label: str):
    return page.locator('[data-testid="stSlider"]', has_text=label).locator('input[type="range"]').first


def press(page, locator, key: str, timeout: float = 300.0) -> float:
    """Focus a slider, press ``key`` (keyboard arrows commit per press) and return the seconds to new metrics."""
    locator.focus()
    before = metrics(page)
    page.keyboard.press(key)
    return wait_metrics_change(page, before, timeout)


def choose(page, label: str, option: str, timeout: float = 300.0) -> None:
    """Pick ``option`` in the selectbox labelled ``label``."""
    box = page.locator('[data-testid="stSelectbox"]', has_text=label).first
    box.click()
    page.get_by_role("option", name=option, exact=True).first.click()
    wait_idle(page, timeout)


def drag_plotly_slider(page, dx: float, steps: int = 10) -> list[tuple[list[float] | None, str | None]]:
    """Drag the chart's client-side lam slider by dx pixels; return (markers, readout) seen while dragging."""
    grip = page.locator('[data-testid="stPlotlyChart"] .slider-grip-rect').first
    box = grip.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    grip.scroll_into_view_if_needed()
    box = grip.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    seen = []
    for i in range(0, steps + 1):
        page.mouse.move(x + dx * i / steps, y, steps=2)
        time.sleep(0.05)  # a human-speed drag: plotly handles each mousemove as it comes
        seen.append((markers(page), readout(page)))
    page.mouse.up()
    return seen


def _stats(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"median_s": round(xs[len(xs) // 2], 3), "min_s": round(xs[0], 3), "max_s": round(xs[-1], 3), "n": len(xs)}


def measure(url: str, family: str, width: int, screenshot: Path | None = None, height: int = 1800,
            repeats: int = 5) -> dict:
    """Return browser latencies on Explorer for one pair; optionally save a screenshot (lam back at 0.5).

    cold lam: arrow presses to lams never computed for this pair (Evaluator.point computes that lam);
    warm lam: presses back to lams already computed (cached); temperature: presses of the manual
    temperature slider (cached logits, no network). Each is the time from the key press to new metrics.
    """
    out = {}
    with browser_page(1500, height) as page:
        open_explorer(page, url)
        choose(page, "Family", family)
        before = metrics(page)
        t0 = time.perf_counter()
        choose(page, "Width", str(width))
        if metrics(page) == before:
            wait_metrics_change(page, before)
        out["first_view_of_pair_s"] = round(time.perf_counter() - t0, 3)
        lam = slider(page, "λ (1 = model A")
        out["lam_cold"] = _stats([press(page, lam, "ArrowRight") for _ in range(repeats)])
        out["lam_warm"] = _stats([press(page, lam, "ArrowLeft") for _ in range(repeats)])
        wait_idle(page)
        choose(page, "Temperature", "manual")
        temp = slider(page, "Manual temperature")
        out["temperature"] = _stats([press(page, temp, "ArrowLeft") for _ in range(repeats)])
        choose(page, "Temperature", "calibrated per λ")
        if screenshot is not None:
            wait_idle(page)
            time.sleep(1.0)
            page.screenshot(path=str(screenshot), full_page=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", default=str(ROOT / "checkpoints"))
    ap.add_argument("--family", default="mlp1_wd3e-3")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--screenshot", default=None)
    args = ap.parse_args()
    with server(Path(args.zoo)) as url:
        result = measure(url, args.family, args.width, Path(args.screenshot) if args.screenshot else None)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
