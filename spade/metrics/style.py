"""Style control: a probe that reads each render-style factor off a face, and what it says of
generated faces.

The probe is a small CNN with one classifier head per factor (`StyleNet`), fitted on the real
*training* faces and their labels (`spade.style_labels`), so its accuracy on the real test
faces is honest: it says how visible each factor is, and it is the ceiling for style control.
Then, for generated faces:

- `style_control`: each test rough drawn with the style of another test face (a reference of a
  different identity): how often the probe gives the generated face the reference's level;
- `style_spread`: how often another random z changes the probe's answer for the same rough;
- `style_control_regional` (with region maps, `spade.style_labels`): each test rough painted
  with one reference's style inside one factor's region and another's everywhere else: how often
  the probe gives that factor the region's reference level (and, `…_kept`, the other factors the
  other reference's level).

Chance levels sit beside them: Σ p_l² (two independent faces of the data share a level) for
control, 1 − Σ p_l² for the spread real faces have.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from spade.data import to_model
from spade.files import load_torch, save_torch

log = logging.getLogger(__name__)

PROBE_FORMAT = "spade-anime-style-probe"
EPOCHS, BATCH, LR, WIDTH = 20, 32, 2e-3, 32


class StyleNet(nn.Module):
    """Image in [-1, 1] → logits per factor. Full resolution first (the demo's textures are one
    pixel), then stride-2 convs down to 8 px, mean- and max-pooled into the heads."""

    def __init__(self, n_levels: Sequence[int], image_size: int, width: int = WIDTH):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width // 2, 3, padding=1), nn.LeakyReLU(0.2)]
        cin, size = width // 2, image_size
        while size > 8:
            cout = min(2 * cin, 2 * width)
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            cin, size = cout, size // 2
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleList(nn.Linear(2 * cin, n) for n in n_levels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.trunk(x)
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return [head(pooled) for head in self.heads]


@dataclass
class StyleProbe:
    """The fitted network, the factors' level names, and its accuracy on real test faces."""

    net: StyleNet
    levels: dict[str, list[str]]
    image_size: int
    accuracy: dict[str, float]

    @torch.no_grad()
    def probabilities(self, images: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
        """{factor: (N, levels) probabilities} for uint8 (N, S, S, 3) images."""
        self.net.eval()
        device = next(self.net.parameters()).device
        out: list[list[np.ndarray]] = [[] for _ in self.levels]
        for start in range(0, len(images), batch_size):
            logits = self.net(to_model(images[start : start + batch_size], device))
            for o, lg in zip(out, logits, strict=True):
                o.append(lg.float().softmax(1).cpu().numpy())
        return {f: np.concatenate(o) for f, o in zip(self.levels, out, strict=True)}

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """{factor: the most likely level's index, per image}."""
        return {f: p.argmax(1) for f, p in self.probabilities(images).items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROBE_FORMAT,
            "levels": self.levels,
            "image_size": self.image_size,
            "accuracy": self.accuracy,
            "state_dict": {k: v.cpu() for k, v in self.net.state_dict().items()},
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> StyleProbe:
        levels, size = state["levels"], state["image_size"]
        net = StyleNet([len(v) for v in levels.values()], size)
        net.load_state_dict(state["state_dict"])
        return cls(net.eval().requires_grad_(False), levels, size, state["accuracy"])


def level_indices(labels: dict[str, list[str]]) -> tuple[dict[str, list[str]], np.ndarray]:
    """({factor: sorted level names}, (N, F) level indices) from {factor: level per image}."""
    levels = {f: sorted(set(v)) for f, v in labels.items()}
    idx = np.stack([[levels[f].index(x) for x in v] for f, v in labels.items()], axis=1)
    return levels, idx


def fit_style_probe(
    images: np.ndarray,
    labels: dict[str, list[str]],
    test_images: np.ndarray,
    test_labels: dict[str, list[str]],
    *,
    seed: int,
    device: torch.device,
) -> StyleProbe:
    """Fit on (images, labels) with random horizontal flips; score on the test set."""
    levels, y = level_indices(labels)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        net = StyleNet([len(v) for v in levels.values()], images.shape[1]).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=LR)
        order = torch.Generator().manual_seed(seed)
        targets = torch.from_numpy(y).to(device)
        for _ in tqdm(range(EPOCHS), desc="style probe", unit="epoch"):
            net.train()
            for batch in torch.randperm(len(images), generator=order).split(BATCH):
                x = to_model(images[batch.numpy()], device)
                flip = torch.rand(len(x), generator=order) < 0.5
                x = torch.where(flip.view(-1, 1, 1, 1).to(device), x.flip(-1), x)
                logits = net(x)
                loss = sum(F.cross_entropy(lg, targets[batch, i]) for i, lg in enumerate(logits))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    probe = StyleProbe(net.eval().requires_grad_(False), levels, images.shape[1], {})
    probe.accuracy = agreement(probe.predict(test_images), test_labels, levels)
    log.info("style probe accuracy on the real test faces: %s", probe.accuracy)
    return probe


def agreement(
    predicted: dict[str, np.ndarray], labels: dict[str, list[str]], levels: dict[str, list[str]]
) -> dict[str, float]:
    """Per factor (and `mean`): the share of images whose predicted level is the label."""
    acc = {
        f: float(np.mean([levels[f][p] == x for p, x in zip(predicted[f], v, strict=True)]))
        for f, v in labels.items()
    }
    return _with_mean(acc)


def regional_control(
    predicted: dict[str, dict[str, np.ndarray]],
    inside: dict[str, list[str]],
    outside: dict[str, list[str]],
    levels: dict[str, list[str]],
) -> tuple[dict[str, float], dict[str, float]]:
    """From {factor f: the probe's predictions of the faces with f's region restyled}: per factor
    (and `mean`), how often f reads the region's reference level (`inside`), and how often the
    other factors read the level of the reference painted outside the region (`outside`)."""
    took, kept = {}, {}
    for f, pred in predicted.items():
        took[f] = agreement({f: pred[f]}, {f: inside[f]}, levels)[f]
        rest = {g: v for g, v in outside.items() if g != f}
        kept[f] = float(np.mean([agreement({g: pred[g]}, {g: rest[g]}, levels)[g] for g in rest]))
    return _with_mean(took), _with_mean(kept)


def control_chance(labels: dict[str, list[str]]) -> dict[str, float]:
    """Σ p_l²: how often two independently drawn faces share a level."""
    chance = {}
    for f, v in labels.items():
        _, counts = np.unique(v, return_counts=True)
        chance[f] = float(((counts / counts.sum()) ** 2).sum())
    return _with_mean(chance)


def spread(predictions: Sequence[dict[str, np.ndarray]]) -> dict[str, float]:
    """Over K predictions of the same roughs (one per z): per factor, the share of pairs of
    faces of one rough that the probe puts at different levels."""
    factors = list(predictions[0])
    pairs = list(itertools.combinations(range(len(predictions)), 2))
    return _with_mean(
        {
            f: float(np.mean([predictions[a][f] != predictions[b][f] for a, b in pairs]))
            for f in factors
        }
    )


def _with_mean(per_factor: dict[str, float]) -> dict[str, float]:
    rounded = {f: round(v, 4) for f, v in per_factor.items()}
    return rounded | {"mean": round(float(np.mean(list(per_factor.values()))), 4)}


def save_probe(path: Path, probe: StyleProbe) -> None:
    save_torch(path, probe.to_dict())


def load_probe(path: Path, device: torch.device) -> StyleProbe:
    probe = StyleProbe.from_dict(load_torch(path, "style probe"))
    probe.net.to(device)
    return probe
