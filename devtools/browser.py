"""Driving the studio page in a real browser (its tests, docs/screenshot.py).

Debian's chromium with the flags that work on machines without a display or network as root
(never `playwright install`), and the page's own signal that it is idle: `body` data attributes
the page sets when the newest canvas's face is shown and no request is in flight.
"""

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IDLE = """() => { const s = document.body.dataset;
  return s.ready === "1" && s.busy === "0" && s.shown === s.want; }"""
