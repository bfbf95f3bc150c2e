"""Take docs/studio.png: the studio on a trained model, in the real browser (Debian's chromium).

    python docs/screenshot.py                 # the model `make studio` paints with
    python docs/screenshot.py --model models/generator.pt --out out/teacher.png

Starts the studio's server on a free loopback port, opens the page, sets a seed and draws an
interpolation strip, waits for every face, and saves a screenshot of the whole page.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from devtools.browser import CHROMIUM, IDLE, LAUNCH_ARGS
from spade.painter import default_model, load_painter
from spade.studio.server import running


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, help="default: what the studio picks on a CPU")
    p.add_argument("--out", type=Path, default=Path("docs/studio.png"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--seed-to", type=int, default=8)
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    device = torch.device("cpu")
    path = args.model or default_model(device)
    with (
        running(load_painter(path, device, "auto"), model_name=path.name) as url,
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url + "/")
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
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
