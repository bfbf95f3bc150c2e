"""Take docs/studio.png: the studio on a trained model, in the real browser (Debian's chromium).

    python docs/screenshot.py                 # the model `make studio` paints with
    python docs/screenshot.py --model models/generator.pt --out out/teacher.png
    python docs/screenshot.py --region 32,12 --out out/hair.png    # restyle the blob at (32, 12)

Starts the studio's server on a free loopback port, opens the page, sets a seed and draws an
interpolation strip, waits for every face, and saves a screenshot of the whole page. With
`--region X,Y` (a pixel of the rough at the model's size) it selects the blob there with the
Region tool instead, draws a strip for that region alone, and gives the region the strip's last
face (seed `--seed-to`), so the picture shows the outlined region, its strip and the face with
that region restyled.
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


def point(text: str) -> tuple[int, int]:
    """X,Y → (x, y)."""
    try:
        x, y = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not X,Y (two integers)") from None
    return x, y


def click_rough(page, x: int, y: int, size: int) -> None:
    """Click the centre of the rough's pixel (x, y)."""
    box = page.locator("#rough").bounding_box()
    page.mouse.click(
        box["x"] + (x + 0.5) * box["width"] / size, box["y"] + (y + 0.5) * box["height"] / size
    )


def region_strip(page, x: int, y: int, size: int) -> None:
    """Select the blob at (x, y), draw its strip, and give it the strip's last face."""
    page.click('button.tool[data-tool="region"]')
    click_rough(page, x, y, size)
    page.wait_for_function(f"() => document.body.dataset.region === '{x},{y}'")
    page.click("#region-strip")
    page.wait_for_function("() => document.body.dataset.stripKind === 'region'")
    box = page.locator("#strip").bounding_box()
    page.mouse.click(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
    page.wait_for_function("() => document.body.dataset.regions === '1'")
    page.wait_for_function(IDLE)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, help="default: what the studio picks on a CPU")
    p.add_argument("--out", type=Path, default=Path("docs/studio.png"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--seed-to", type=int, default=8)
    p.add_argument("--region", type=point, help="X,Y: restyle the blob there (model pixels)")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    device = torch.device("cpu")
    path = args.model or default_model(device)
    painter = load_painter(path, device, "auto")
    with running(painter, model_name=path.name) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url + "/")
        page.wait_for_function(IDLE)
        page.fill("#seed", str(args.seed))
        page.dispatch_event("#seed", "change")
        page.wait_for_function(IDLE)
        page.fill("#seed-to", str(args.seed_to))
        if args.region:
            region_strip(page, *args.region, painter.size)
        else:
            page.click("#strip-button")
            page.wait_for_selector("#strip:not([hidden])")
            page.wait_for_function(IDLE)
        page.screenshot(path=str(args.out), full_page=True)
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
