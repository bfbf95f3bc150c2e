"""Stage `roughen`: apply the rough recipe to every sampled image, in parallel, with a cache."""

from pathlib import Path

from spade.config import load_params
from spade.console import run
from spade.files import atomic_paths
from spade.images import load_image_array, open_image_array
from spade.roughen import RoughCache, default_cache_dir, roughen_array

IN = Path("data/sampled")
OUT = Path("data/roughs")
SPLITS = ("train", "test")


def main() -> None:
    params = load_params()
    recipe, speed = params.roughen, params.run.roughen
    cache = RoughCache(default_cache_dir())
    with atomic_paths([OUT / f"{split}.npy" for split in SPLITS]) as temps:
        for split, tmp in zip(SPLITS, temps, strict=True):
            images = load_image_array(IN / f"{split}.npy")
            out = open_image_array(tmp, images.shape)
            roughen_array(
                images,
                out,
                recipe,
                backend=speed.backend,
                n_jobs=speed.n_jobs,
                batch_size=speed.batch_size,
                scheduler=speed.scheduler,
                cache=cache,
                desc=f"roughen {split}",
            )
            out.flush()
            del out


if __name__ == "__main__":
    run(main)
