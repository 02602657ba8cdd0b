"""The search page in a real browser: Debian's chromium driven by Playwright.

The service runs as `python -m bgan_tf.serve` on 127.0.0.1 (free port) over a
small index built with the pixel-lsh baseline encoder. Skips only when chromium
is absent and CI is unset; in CI the browser must be there
(scripts/install_browser.sh installs it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from bgan_tf.inference.pixel_lsh import PixelLSHEncoder
from bgan_tf.search import indexer as indexing

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if not os.path.exists(CHROMIUM) and not os.environ.get("CI"):
    pytest.skip(f"{CHROMIUM} not installed (run scripts/install_browser.sh); required when CI is set",
                allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir()
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / "imgs" / f"{i}.png")
    indexing.build_index(PixelLSHEncoder(32), root / "imgs", root / "idx", progress=False,
                         model_ref="pixel-lsh:32")
    port = _free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "bgan_tf.serve", f"--index={root / 'idx'}",
                             "--host=127.0.0.1", f"--port={port}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"service did not start: {proc.stdout.read() if proc.poll() is not None else 'timeout'}")
            time.sleep(0.2)
        yield url, root
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_upload_shows_k_results(server):
    from playwright.sync_api import sync_playwright

    url, root = server
    k = 5
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.wait_for_selector("#samples .card")  # the page loaded its sample images
            page.fill("#k", str(k))
            page.set_input_files("[data-testid=file-input]", str(root / "imgs" / "3.png"))
            page.wait_for_function(f"document.querySelectorAll('#results .result').length === {k}",
                                   timeout=15000)
            dists = [int(t) for t in page.locator("#results .result .dist").all_inner_texts()]
            assert len(dists) == k and dists[0] == 0 and dists == sorted(dists)
            # Every neighbour image actually loaded from /images/{id}.
            page.wait_for_function(
                "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)",
                timeout=15000)
            assert page.locator("#error").inner_text() == ""
            # Picking an indexed image searches with it too.
            page.click("#samples .card >> nth=2")
            page.wait_for_function("document.querySelector('#status').textContent.includes('results in')")
            # A failed query shows its error and no neighbours: the previous query's
            # results must not stay on screen under it.
            (root / "broken.png").write_bytes(b"not an image")
            page.set_input_files("[data-testid=file-input]", str(root / "broken.png"))
            page.wait_for_function("document.querySelector('#error').textContent.includes('cannot decode')",
                                   timeout=15000)
            assert page.locator("#results .result").count() == 0
            assert page.locator("#status").inner_text() == ""
        finally:
            browser.close()
