"""SPADE generator, style encoder and multi-scale PatchGAN discriminator (pure nn.Modules).

The generator is conditioned on the 3-channel rough itself (no one-hot label map): every SPADE
layer reads the rough, resized to its feature map, and predicts a per-pixel scale and bias.
Shapes in comments: B batch, C channels, S image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

START_SIZE = 4
MAX_MULT = 16  # widest layer = ngf * MAX_MULT, at the 4×4 start


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything needed to rebuild a generator (and its style encoder) from a weights file."""

    image_size: int = 256
    ngf: int = 64
    spade_hidden: int = 128
    z_dim: int = 256
    noise: bool = True
    use_vae: bool = False
    nef: int = 64
    cond_channels: int = 3

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GeneratorConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def num_upsamplings(image_size: int) -> int:
    n = math.log2(image_size / START_SIZE)
    if image_size < 32 or not n.is_integer():
        raise ValueError(f"image_size must be a power of two >= 32, got {image_size}")
    return int(n)


def generator_channels(cfg: GeneratorConfig) -> list[int]:
    """Output width of each residual block, one per resolution 4, 8, …, image_size."""
    resolutions = [START_SIZE * 2**i for i in range(num_upsamplings(cfg.image_size) + 1)]
    return [cfg.ngf * min(MAX_MULT, cfg.image_size // r) for r in resolutions]


class SPADE(nn.Module):
    """Parameter-free BatchNorm, then a per-pixel affine predicted from the rough."""

    def __init__(self, channels: int, cond_channels: int, hidden: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        cond = F.interpolate(cond, size=x.shape[-2:], mode="nearest")
        h = self.shared(cond)
        return self.norm(x) * (1 + self.gamma(h)) + self.beta(h)


class NoiseInjection(nn.Module):
    """x + w·n with n ~ N(0, 1) of shape (B, 1, H, W) and one learnable scalar w, initially 0."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        return x + self.weight * noise


class SPADEResBlock(nn.Module):
    def __init__(self, fin: int, fout: int, cond_channels: int, hidden: int, noise: bool):
        super().__init__()
        fmid = min(fin, fout)
        self.norm_0 = SPADE(fin, cond_channels, hidden)
        self.conv_0 = spectral_norm(nn.Conv2d(fin, fmid, 3, padding=1))
        self.norm_1 = SPADE(fmid, cond_channels, hidden)
        self.conv_1 = spectral_norm(nn.Conv2d(fmid, fout, 3, padding=1))
        self.noise = NoiseInjection() if noise else nn.Identity()
        self.learned_shortcut = fin != fout
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, cond_channels, hidden)
            self.conv_s = spectral_norm(nn.Conv2d(fin, fout, 1, bias=False))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        skip = self.conv_s(self.norm_s(x, cond)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, cond), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, cond), 0.2))
        return skip + self.noise(dx)


class Generator(nn.Module):
    """z → Linear → (B, 16·ngf, 4, 4) → [SPADE block, ×2 nearest up]… → (B, 3, S, S) in [-1, 1]."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        widths = generator_channels(cfg)
        self.fc = nn.Linear(cfg.z_dim, widths[0] * START_SIZE * START_SIZE)
        fins = [widths[0], *widths[:-1]]
        self.blocks = nn.ModuleList(
            SPADEResBlock(fin, fout, cfg.cond_channels, cfg.spade_hidden, cfg.noise)
            for fin, fout in zip(fins, widths, strict=True)
        )
        self.to_rgb = nn.Conv2d(widths[-1], 3, 3, padding=1)

    def sample_z(self, batch: int, device: torch.device) -> torch.Tensor:
        return torch.randn(batch, self.cfg.z_dim, device=device)

    def forward(self, cond: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if z is None:
            z = self.sample_z(cond.shape[0], cond.device)
        x = self.fc(z).view(z.shape[0], -1, START_SIZE, START_SIZE)  # (B, 16ngf, 4, 4)
        for i, block in enumerate(self.blocks):
            if i > 0:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(x, cond)
        return torch.tanh(self.to_rgb(F.leaky_relu(x, 0.2)))  # (B, 3, S, S)


class StyleEncoder(nn.Module):
    """Image → (μ, log σ²) of z: stride-2 3×3 convs down to 4×4, then two linear heads.

    Unlike the NVlabs encoder (fixed to 256 px input) the number of convs follows the image size,
    so it works at every size the generator supports.
    """

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        n_down = num_upsamplings(cfg.image_size)
        layers: list[nn.Module] = []
        cin = 3
        for i in range(n_down):
            cout = cfg.nef * min(8, 2**i)
            layers += [
                spectral_norm(nn.Conv2d(cin, cout, 3, stride=2, padding=1)),
                nn.InstanceNorm2d(cout),
                nn.LeakyReLU(0.2),
            ]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.fc_mu = nn.Linear(cin * START_SIZE * START_SIZE, cfg.z_dim)
        self.fc_logvar = nn.Linear(cin * START_SIZE * START_SIZE, cfg.z_dim)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(image).flatten(1)  # (B, 8nef·4·4)
        return self.fc_mu(h), self.fc_logvar(h)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


class PatchDiscriminator(nn.Module):
    """PatchGAN on (image ⊕ rough); returns every layer's output (the last is the patch logits)."""

    def __init__(self, in_channels: int, ndf: int, n_layers: int):
        super().__init__()
        layers = [nn.Sequential(nn.Conv2d(in_channels, ndf, 4, 2, 2), nn.LeakyReLU(0.2))]
        nf = ndf
        for n in range(1, n_layers):
            nf_prev, nf = nf, min(nf * 2, 512)
            stride = 1 if n == n_layers - 1 else 2
            layers.append(
                nn.Sequential(
                    spectral_norm(nn.Conv2d(nf_prev, nf, 4, stride, 2)),
                    nn.InstanceNorm2d(nf),
                    nn.LeakyReLU(0.2),
                )
            )
        layers.append(nn.Conv2d(nf, 1, 4, 1, 2))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features


class MultiscaleDiscriminator(nn.Module):
    """`num_d` PatchGANs on the input at full, ½, ¼… resolution."""

    def __init__(self, *, in_channels: int = 6, ndf: int = 64, n_layers: int = 4, num_d: int = 2):
        super().__init__()
        self.scales = nn.ModuleList(
            PatchDiscriminator(in_channels, ndf, n_layers) for _ in range(num_d)
        )

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        outputs = []
        for i, d in enumerate(self.scales):
            if i > 0:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outputs.append(d(x))
        return outputs


class StyledGenerator(nn.Module):
    """The generator and its optional style encoder, trained, averaged and saved together."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.generator = Generator(cfg)
        self.encoder = StyleEncoder(cfg) if cfg.use_vae else None

    def forward(
        self, cond: torch.Tensor, style: torch.Tensor | None = None, z: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Returns (image, μ, log σ²); μ and log σ² are None unless the encoder saw `style`."""
        mu = logvar = None
        if z is None and style is not None and self.encoder is not None:
            mu, logvar = self.encoder(style)
            z = reparameterize(mu, logvar) if self.training else mu
        return self.generator(cond, z), mu, logvar
