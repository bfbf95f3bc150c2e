"""Take docs/studio.png: the studio on a trained model, in the real browser (Debian's chromium).

    python docs/screenshot.py --model models/generator.pt --out docs/studio.png

Starts the studio's server on a free loopback port, opens the page, sets a seed and draws an
interpolation strip, waits for every face, and saves a screenshot of the whole page.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from spade.checkpoint import load_generator
from spade.generate import FaceGenerator
from spade.studio.browser import CHROMIUM, IDLE, LAUNCH_ARGS
from spade.studio.server import bind, make_server


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, default=Path("models/generator.pt"))
    p.add_argument("--out", type=Path, default=Path("docs/studio.png"))
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--seed-to", type=int, default=11)
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    device = torch.device("cpu")
    model, recipe = load_generator(args.model, device)
    sock = bind("127.0.0.1", 0)
    server = make_server(FaceGenerator(model, recipe, device), "127.0.0.1", model_name="demo")
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.wait_for_function(IDLE)
        page.fill("#seed", str(args.seed))
        page.dispatch_event("#seed", "change")
        page.wait_for_function(IDLE)
        page.fill("#seed-to", str(args.seed_to))
        page.click("#strip-button")
        page.wait_for_selector("#strip:not([hidden])")
        page.wait_for_function(IDLE)
        page.screenshot(path=str(args.out), full_page=True)
        browser.close()
    server.should_exit = True
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
