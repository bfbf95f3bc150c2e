"""Stage `demo`: draw the embedded demo dataset (procedural anime faces) into one zip."""

from spade import paths
from spade.config import load_params
from spade.console import run
from spade.synthetic import write_faces_zip


def main() -> None:
    cfg = load_params().demo
    write_faces_zip(
        paths.DEMO_ZIP, count=cfg.count, size=cfg.size, seed=cfg.seed, n_jobs=cfg.n_jobs
    )


if __name__ == "__main__":
    run(main)
