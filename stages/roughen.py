"""Stage `roughen`: apply the rough recipe to every sampled image, in parallel, with a cache."""

from spade import paths
from spade.config import load_params
from spade.console import run
from spade.files import atomic_paths, user_cache_dir
from spade.images import load_image_array, open_image_array
from spade.roughen import RoughCache, roughen_array


def main() -> None:
    params = load_params()
    recipe, speed = params.roughen, params.run.roughen
    cache = RoughCache(user_cache_dir("roughen"))
    outputs = [paths.split_array(paths.ROUGHS, split) for split in paths.SPLITS]
    with atomic_paths(outputs) as temps:
        for split, tmp in zip(paths.SPLITS, temps, strict=True):
            images = load_image_array(paths.split_array(paths.SAMPLED, split))
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
