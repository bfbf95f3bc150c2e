"""Stage `demo`: draw the embedded demo dataset (procedural anime faces) into one zip."""

from pathlib import Path

from spade.cli import run
from spade.config import DemoConfig, load_section
from spade.demo import write_demo_zip

OUT = Path("data/demo/faces.zip")


def main() -> None:
    cfg = load_section("demo", DemoConfig)
    write_demo_zip(OUT, count=cfg.count, size=cfg.size, seed=cfg.seed)


if __name__ == "__main__":
    run(main)
