"""Turn a user's own rough drawing (or, with `roughen`, any picture) into an anime face."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spade.data import to_model_range, to_uint8_hwc
from spade.errors import UserError
from spade.images import IMAGE_SUFFIXES, read_rgb, resize_square, save_png
from spade.networks import StyledGenerator
from spade.roughen import Recipe, roughen_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerateOptions:
    seed: int = 0
    roughen: bool = False
    style: Path | None = None
    interpolate: int = 0  # K > 1: a strip of K faces from `seed` to `seed_to`
    seed_to: int | None = None
    save_rough: bool = False


def list_inputs(path: Path) -> list[Path]:
    """One image file, or the image files of a folder (sorted, not recursive)."""
    if not path.exists():
        raise UserError(f"input {path} does not exist")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    stems = [p.stem for p in files]
    clashes = sorted({p.name for p in files if stems.count(p.stem) > 1})
    if clashes:
        raise UserError(f"outputs are named after the input's stem, and these clash: {clashes}")
    return files


def _to_tensor(img: np.ndarray, device: torch.device) -> torch.Tensor:
    return to_model_range(torch.from_numpy(img).permute(2, 0, 1)[None].to(device))


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation, the usual path between two Gaussian latents."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


class FaceGenerator:
    def __init__(self, model: StyledGenerator, recipe: dict, device: torch.device):
        self.model, self.device = model, device
        self.recipe = Recipe(**recipe)
        self.size = model.cfg.image_size

    def prepare(self, path: Path, roughen: bool) -> np.ndarray:
        """Read an input as a rough at the model's size (roughened first if asked)."""
        img = resize_square(read_rgb(path), self.size)
        return roughen_image(img, self.recipe) if roughen else img

    def z_for_seed(self, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(1, self.model.cfg.z_dim, generator=g).to(self.device)

    def style_z(self, style_path: Path) -> torch.Tensor:
        if self.model.encoder is None:
            raise UserError(
                "--style needs a model with the style encoder: train with train.use_vae: true"
            )
        style = _to_tensor(resize_square(read_rgb(style_path), self.size), self.device)
        mu, _ = self.model.encoder(style)
        return mu

    @torch.no_grad()
    def face(self, rough: np.ndarray, z: torch.Tensor, noise_seed: int) -> np.ndarray:
        torch.manual_seed(noise_seed)  # the per-layer noise
        fake, _, _ = self.model(_to_tensor(rough, self.device), z=z)
        return to_uint8_hwc(fake)[0]


def generate(
    gen: FaceGenerator, inputs: list[Path], out_dir: Path, opts: GenerateOptions
) -> list[Path]:
    """Write one face (or one strip) per input; unreadable inputs are reported at the end."""
    z = gen.style_z(opts.style) if opts.style else gen.z_for_seed(opts.seed)
    written, failed = [], []
    for path in inputs:
        try:
            rough = gen.prepare(path, opts.roughen)
        except UserError as e:
            log.error("%s", e)
            failed.append(path)
            continue
        if opts.interpolate > 1:
            z_to = gen.z_for_seed(opts.seed_to if opts.seed_to is not None else opts.seed + 1)
            steps = np.linspace(0.0, 1.0, opts.interpolate)
            faces = [gen.face(rough, slerp(z, z_to, float(t)), opts.seed) for t in steps]
            target = out_dir / f"{path.stem}_interp.png"
            save_png(target, np.concatenate(faces, axis=1))
        else:
            target = out_dir / f"{path.stem}.png"
            save_png(target, gen.face(rough, z, opts.seed))
        if opts.save_rough:
            save_png(out_dir / f"{path.stem}_rough.png", rough)
        written.append(target)
        log.info("%s → %s", path, target)
    if failed:
        raise UserError(
            f"{len(failed)} of {len(inputs)} inputs could not be read "
            f"({', '.join(str(p) for p in failed)}); the other {len(written)} were written"
        )
    return written
