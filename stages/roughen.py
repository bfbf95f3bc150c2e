"""Stage `roughen`: apply the rough recipe to every sampled image, in parallel, with a cache."""

import os
from pathlib import Path

from spade.cli import run
from spade.config import RoughenConfig, load_section
from spade.images import atomic_path, load_image_array, open_image_array
from spade.roughen import DEFAULT_CACHE_DIR, Recipe, RoughCache, roughen_array

IN = Path("data/sampled")
OUT = Path("data/roughs")


def main() -> None:
    cfg = load_section("roughen", RoughenConfig)
    recipe = Recipe.from_config(cfg)
    cache = RoughCache(os.environ.get("SPADE_ROUGHEN_CACHE", DEFAULT_CACHE_DIR))
    OUT.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        images = load_image_array(IN / f"{split}.npy")
        with atomic_path(OUT / f"{split}.npy") as tmp:
            out = open_image_array(tmp, images.shape)
            roughen_array(
                images,
                out,
                recipe,
                n_jobs=cfg.n_jobs,
                batch_size=cfg.batch_size,
                cache=cache,
                desc=f"roughen {split}",
            )
            out.flush()
            del out


if __name__ == "__main__":
    run(main)
