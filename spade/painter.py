"""The painter: a loaded model and its recipe, turning one rough (or picture) into one face.

`Painter` is the model-side API of `spade generate` and the studio: every call takes its
randomness from its own seeded stream, so concurrent callers never change each other's faces and
the same seed always gives the same face. z is the stream's first draw and the per-layer noise
follows it, also when z is given (interpolation, style), so the face of `seed` is the start of
every strip from `seed`. The randomness is drawn here, on the CPU, and handed to a runner
(`spade.runtime`: PyTorch, ONNX Runtime or OpenVINO), so every runtime paints a seed's face.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spade import paths
from spade.checkpoint import load_generator
from spade.config import Recipe
from spade.data import to_images, to_model
from spade.errors import UserError
from spade.images import resize_square
from spade.inference import seeded
from spade.networks import FaceModel, RandomStream
from spade.regions import code_masks
from spade.roughen import roughen_image
from spade.runtime import PRECISIONS, Runner, TorchRunner, make_runner

MAX_INTERPOLATE = 64  # faces in one strip


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation, the usual path between two Gaussian latents."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


@dataclass(frozen=True)
class RegionStyle:
    """One region of the rough painted with a style code of its own: an (S, S) bool mask (e.g.
    `spade.regions.region_at`) and its (1, z_dim) code (`Painter.z_for_seed`, `style_z`)."""

    mask: np.ndarray
    z: torch.Tensor


class Painter:
    """A loaded generator with its recipe: rough (or picture) → face at the model's size.

    `runner` computes the faces (PyTorch on `device` by default); the style encoder, used once
    per reference picture, always runs in PyTorch.
    """

    def __init__(
        self,
        model: FaceModel,
        recipe: Recipe,
        device: torch.device,
        runner: Runner | None = None,
    ):
        self.model, self.recipe, self.device = model, recipe, device
        self.size = model.image_size
        self.runner = runner or TorchRunner(model)

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
    def style_z(self, rgb: np.ndarray, mask: np.ndarray | None = None) -> torch.Tensor:
        """z of a reference face: the style encoder's mean, of the whole picture or, with an
        (S, S) bool `mask`, of the part of it inside the mask (a region's reference: the faces
        are portraits, so the mask of the rough's hair finds the reference's hair)."""
        if not self.has_style_encoder:
            raise UserError(
                "style from a reference needs a model with the style encoder: "
                "train with train.arch.use_vae: true"
            )
        picture = to_model(resize_square(rgb, self.size)[None], self.device)
        inside = None
        if mask is not None:
            inside = torch.from_numpy(np.asarray(mask, bool))[None, None].to(self.device)
        mu, _ = self.model.encoder(picture, inside)
        return mu.cpu()

    def randomness(
        self, seed: int, z: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The z (the seed's own unless given) and per-layer noise of one face, on the CPU."""
        rng = seeded(seed)
        own_z = self._draw_z(rng)  # drawn even when z is given: the noise follows it
        z = own_z if z is None else z
        return z.float(), self.model.generator.draw_noise(rng, 1, torch.device("cpu"))

    @torch.inference_mode()
    def face(
        self,
        rough: np.ndarray,
        seed: int,
        z: torch.Tensor | None = None,
        regions: Sequence[RegionStyle] = (),
    ) -> np.ndarray:
        """One face; z (the base style) defaults to the seed's own, and each of `regions` is
        painted with its own code (a later region wins where two overlap)."""
        z, noise = self.randomness(seed, z)
        codes, masks = self.style_map(z, regions)
        fake = self.runner(to_model(rough[None], torch.device("cpu")), codes, noise, masks)
        return to_images(fake)[0]

    def style_map(
        self, z: torch.Tensor, regions: Sequence[RegionStyle]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The codes and masks a face with base style `z` (1, z_dim) and `regions` is painted
        with: `z` and None without regions, else (1, K, z_dim) codes and (1, K, S, S) masks."""
        if not regions:
            return z, None
        codes = torch.cat([z, *(r.z.float() for r in regions)])[None]
        return codes, code_masks([r.mask for r in regions], self.size)

    def strip(self, rough: np.ndarray, seed: int, seed_to: int, k: int) -> list[np.ndarray]:
        """k faces along the path from the z of `seed` to the z of `seed_to`."""
        return list(self.strip_faces(rough, seed, seed_to, k))

    def path(self, seed: int, seed_to: int, k: int) -> list[torch.Tensor]:
        """The k (1, z_dim) codes of a strip: from the z of `seed` to the z of `seed_to` (slerp;
        the first and last are exactly the seeds' own)."""
        z_a, z_b = self.z_for_seed(seed), self.z_for_seed(seed_to)
        return [slerp(z_a, z_b, float(t)) for t in np.linspace(0, 1, k)]

    def strip_faces(
        self,
        rough: np.ndarray,
        seed: int,
        seed_to: int,
        k: int,
        regions: Sequence[RegionStyle] = (),
    ) -> Iterator[np.ndarray]:
        """The faces of `strip` one by one, each computed when asked for (a caller can stop);
        `regions` keep their own codes all along."""
        for code in self.path(seed, seed_to, k):
            yield self.face(rough, seed, code, regions)

    def region_strip_faces(
        self,
        rough: np.ndarray,
        seed: int,
        seed_to: int,
        k: int,
        mask: np.ndarray,
        z: torch.Tensor | None = None,
        regions: Sequence[RegionStyle] = (),
    ) -> Iterator[np.ndarray]:
        """k faces where only the region `mask` changes: its code runs from the z of `seed` to
        the z of `seed_to`, while the base style (`z`, else the seed's) and the other `regions`
        keep theirs. A region of `regions` with this very mask is the one that varies."""
        others = [r for r in regions if not np.array_equal(r.mask, mask)]
        for code in self.path(seed, seed_to, k):
            yield self.face(rough, seed, z, [*others, RegionStyle(mask, code)])


def load_painter(
    path: Path, device: torch.device, runtime: str = "auto", precision: str = "fp32"
) -> Painter:
    """A model file, ready to paint: on `device`, through `runtime` (`spade.runtime`)."""
    model, recipe = load_generator(path, device)
    runner = make_runner(runtime, model, PRECISIONS[precision])
    return Painter(model, recipe, device, runner)


def default_model(device: torch.device) -> Path:
    """The model to paint with when none is named: on a CPU the distilled student when there is
    one (fast enough to paint with), else the teacher."""
    student = paths.STUDENT
    return student if device.type == "cpu" and student.is_file() else paths.GENERATOR
