"""Stage `demo`: draw the embedded demo dataset (procedural anime faces) into one zip."""

from spade import paths
from spade.config import load_params
from spade.console import run
from spade.synthetic import write_faces_zip


def main() -> None:
    params = load_params()
    cfg = params.demo
    n_jobs = params.run.demo.n_jobs
    write_faces_zip(paths.DEMO_ZIP, count=cfg.count, size=cfg.size, seed=cfg.seed, n_jobs=n_jobs)


if __name__ == "__main__":
    run(main)
