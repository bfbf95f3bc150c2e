"""Turn a user's own rough drawing (or, with `roughen`, any picture) into an anime face.

`FaceGenerator` is the model-side API shared by `spade generate` and the studio: every call
takes its randomness from its own seeded stream, so concurrent callers never change each
other's faces and the same seed always gives the same face. z is the stream's first draw and
the per-layer noise follows it, also when z is given (interpolation, style), so the face of
`seed` is the start of every strip from `seed`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from spade.config import Recipe
from spade.data import to_images, to_model
from spade.errors import UserError
from spade.images import IMAGE_SUFFIXES, read_rgb, resize_square, save_png
from spade.inference import seeded
from spade.networks import RandomStream, StyledGenerator
from spade.roughen import roughen_image

log = logging.getLogger(__name__)

MAX_INTERPOLATE = 64  # faces in one strip


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation, the usual path between two Gaussian latents."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


class FaceGenerator:
    """A loaded generator with its recipe: rough (or picture) → face at the model's size."""

    def __init__(self, model: StyledGenerator, recipe: Recipe, device: torch.device):
        self.model, self.recipe, self.device = model, recipe, device
        self.size = model.image_size

    @property
    def has_style_encoder(self) -> bool:
        return self.model.encoder is not None

    def prepare(self, rgb: np.ndarray, roughen: bool = False) -> np.ndarray:
        """Any RGB picture → a rough at the model's size (roughened with the model's recipe)."""
        img = resize_square(rgb, self.size)
        return roughen_image(img, self.recipe) if roughen else img

    def _draw_z(self, rng: RandomStream) -> torch.Tensor:
        """A seed's z: the first draw of its stream, on the CPU."""
        return rng.randn(1, self.model.arch.z_dim, device=torch.device("cpu"))

    def z_for_seed(self, seed: int) -> torch.Tensor:
        return self._draw_z(seeded(seed))

    @torch.inference_mode()
    def style_z(self, rgb: np.ndarray) -> torch.Tensor:
        """z of a reference face: the style encoder's mean."""
        if not self.has_style_encoder:
            raise UserError(
                "style from a reference needs a model with the style encoder: "
                "train with train.arch.use_vae: true"
            )
        mu, _ = self.model.encoder(to_model(resize_square(rgb, self.size)[None], self.device))
        return mu.cpu()

    @torch.inference_mode()
    def face(self, rough: np.ndarray, seed: int, z: torch.Tensor | None = None) -> np.ndarray:
        """One face; z defaults to the seed's own."""
        rng = seeded(seed)
        own_z = self._draw_z(rng)  # drawn even when z is given: the noise follows it
        z = own_z if z is None else z
        fake, _, _ = self.model(to_model(rough[None], self.device), z=z.to(self.device), rng=rng)
        return to_images(fake)[0]

    def strip(self, rough: np.ndarray, seed: int, seed_to: int, k: int) -> list[np.ndarray]:
        """k faces along the path from the z of `seed` to the z of `seed_to`."""
        z_a, z_b = self.z_for_seed(seed), self.z_for_seed(seed_to)
        return [self.face(rough, seed, slerp(z_a, z_b, float(t))) for t in np.linspace(0, 1, k)]


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


def targets(path: Path, out_dir: Path, opts: GenerateOptions) -> list[Path]:
    """The files written for one input: the face (or strip), then the rough if asked."""
    face = out_dir / (f"{path.stem}_interp.png" if opts.interpolate > 1 else f"{path.stem}.png")
    return [face, out_dir / f"{path.stem}_rough.png"] if opts.save_rough else [face]


def check_out_dir(out_dir: Path, inputs: list[Path], opts: GenerateOptions) -> None:
    """A writable folder, and no output that would replace an input (nothing the user gave us
    is ever overwritten)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; give a folder for the faces")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the --out folder {out_dir}: {e.strerror}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to the --out folder {out_dir}: permission denied")
    given = {p.resolve() for p in [*inputs, *([opts.style] if opts.style else [])]}
    for path in inputs:
        for target in targets(path, out_dir, opts):
            if target.resolve() in given:
                raise UserError(
                    f"refusing to overwrite the input {target}: choose another --out folder"
                )


def _write(target: Path, img: np.ndarray) -> None:
    try:
        save_png(target, img)
    except OSError as e:
        raise UserError(f"cannot write {target}: {e.strerror or e}") from None


def generate(
    gen: FaceGenerator, inputs: list[Path], out_dir: Path, opts: GenerateOptions
) -> list[Path]:
    """Write one face (or one strip) per input; unreadable inputs are reported at the end."""
    check_out_dir(out_dir, inputs, opts)
    z = gen.style_z(read_rgb(opts.style)) if opts.style else None
    seed_to = opts.seed_to if opts.seed_to is not None else opts.seed + 1
    written, failed = [], []
    per_input = max(1, opts.interpolate)
    bar = tqdm(total=len(inputs) * per_input, desc="generate", unit="face", disable=None)
    for path in inputs:
        try:
            rough = gen.prepare(read_rgb(path), opts.roughen)
        except UserError as e:
            log.error("%s", e)
            failed.append(path)
            bar.update(per_input)
            continue
        face_path, *rough_path = targets(path, out_dir, opts)
        if opts.interpolate > 1:
            faces = []
            for face in gen.strip(rough, opts.seed, seed_to, opts.interpolate):
                faces.append(face)
                bar.update()
            _write(face_path, np.concatenate(faces, axis=1))
        else:
            _write(face_path, gen.face(rough, opts.seed, z))
            bar.update()
        if rough_path:
            _write(rough_path[0], rough)
        written.append(face_path)
        log.info("%s → %s", path, face_path)
    bar.close()
    if failed:
        raise UserError(
            f"{len(failed)} of {len(inputs)} inputs could not be read "
            f"({', '.join(str(p) for p in failed)}); the other {len(written)} were written"
        )
    return written
