"""SPADE generator, style encoder and multi-scale PatchGAN discriminator (pure nn.Modules).

The generator is conditioned on the 3-channel rough itself (no one-hot label map): every SPADE
layer reads the rough, resized to its feature map, and predicts a per-pixel scale and bias.
Shapes in comments: B batch, C channels, S image size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from spade.config import (
    MAX_DISC_WIDTH,
    START_SIZE,
    DiscriminatorArch,
    GeneratorArch,
    generator_channels,
    num_upsamplings,
)

COND_CHANNELS = 3  # the rough is RGB


@dataclass(frozen=True)
class RandomStream:
    """Where a forward pass draws its random numbers (z, per-layer noise, the VAE sample).

    `source` None means torch's global RNG (training, whose state checkpoints save); a
    `torch.Generator` gives seeded inference that concurrent callers cannot disturb. Numbers are
    drawn on the source's device, so a CPU source gives the same face on every device.
    Under DDP, every process draws the numbers of the whole global batch and keeps the rows of
    its own samples (rank r holds global rows r, r + W, r + 2W…, as `ResumableSampler` deals
    them): the model then does not depend on how many processes share the batch.
    """

    source: torch.Generator | None = None
    shard: int = 0
    num_shards: int = 1

    def _draw(self, fn, shape, device: torch.device, dtype: torch.dtype | None) -> torch.Tensor:
        n = shape[0]
        where = self.source.device if self.source is not None else device
        x = fn((n * self.num_shards, *shape[1:]), generator=self.source, device=where, dtype=dtype)
        if self.num_shards > 1:
            x = x[self.shard :: self.num_shards]
        return x.to(device)

    def randn(self, *shape: int, device: torch.device, dtype: torch.dtype | None = None):
        return self._draw(torch.randn, shape, device, dtype)

    def rand(self, *shape: int, device: torch.device, dtype: torch.dtype | None = None):
        return self._draw(torch.rand, shape, device, dtype)


GLOBAL_RNG = RandomStream()


@dataclass(frozen=True)
class StyleMap:
    """Where each style code applies: K codes per face and K masks that sum to 1 per pixel.

    `w` is (B, K, D): the mapped codes. `masks` is None when K is 1 (one code everywhere: the
    plain global style), else {r: (B, K, r, r)}: the full-size masks area-averaged to each
    block's resolution r, so that at coarse layers a region's edge is a soft blend, not a seam.
    A SPADE layer's style term is Σ_k mask_k · Linear(w_k), which is Linear(w) at every pixel
    when there is one code.
    """

    w: torch.Tensor
    masks: dict[int, torch.Tensor] | None = None

    @classmethod
    def build(cls, w: torch.Tensor, masks: torch.Tensor | None, sizes: list[int]) -> StyleMap:
        """From (B, K, D) codes and (B, K, S, S) masks at full size (None: K must be 1)."""
        if masks is None:
            return cls(w)
        full = masks.shape[-1]
        return cls(w, {r: F.avg_pool2d(masks, full // r) if r < full else masks for r in sizes})

    def modulation(self, linear: nn.Linear, size: int) -> torch.Tensor:
        """Linear's per-pixel output at resolution `size`: (B, 2C, 1, 1) for one code, else
        (B, 2C, size, size)."""
        per_code = linear(self.w)  # (B, K, 2C)
        if self.masks is None:
            return per_code[:, 0, :, None, None]
        masks = self.masks[int(size)]  # (B, K, r, r)
        if torch.jit.is_tracing():  # an exported graph: K is fixed by the example inputs
            return self._per_region(per_code, masks)
        mixed = per_code.transpose(1, 2) @ masks.flatten(2)  # (B, 2C, r·r)
        return mixed.view(*mixed.shape[:2], *masks.shape[2:])

    @staticmethod
    def _per_region(per_code: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Σ_k mask_k · p_k written as p_0 + Σ_{k≥1} mask_k · (p_k − p_0), which is the same
        because the masks sum to 1. For an exported graph with a fixed number of codes: each
        region is one elementwise multiply-add, where the product over codes is a MatMul
        between layout copies (OpenVINO, the student at 256 px: regions cost 9.5 ms of node
        time that way, 5.6 ms this way)."""
        base = per_code[:, 0]
        out = base[:, :, None, None]
        for k in range(1, per_code.shape[1]):
            out = out + masks[:, k : k + 1] * (per_code[:, k] - base)[:, :, None, None]
        return out


class SPADE(nn.Module):
    """Parameter-free BatchNorm, then a per-pixel affine predicted from the rough.

    With `style_dim`, a style map (`StyleMap`) adds a scale and bias per channel and region to
    it (AdaIN-like), so z reaches every layer instead of only the 4×4 start, where the SPADE
    layers can wash it out.
    """

    def __init__(self, channels: int, cond_channels: int, hidden: int, style_dim: int = 0):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, 3, padding=1), nn.ReLU())
        self.gamma_beta = nn.Conv2d(hidden, 2 * channels, 3, padding=1)  # one conv for both
        self.style = nn.Linear(style_dim, 2 * channels) if style_dim else None

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor, style: StyleMap | None = None
    ) -> torch.Tensor:
        cond = F.interpolate(cond, size=x.shape[-2:], mode="nearest")
        affine = self.gamma_beta(self.shared(cond))  # (B, 2C, H, W)
        if self.style is not None:
            affine = affine + style.modulation(self.style, x.shape[-1])
        gamma, beta = affine.chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class NoiseInjection(nn.Module):
    """x + w·n with n ~ N(0, 1) of shape (B, 1, H, W) and one learnable scalar w, initially 0."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x + self.weight * noise.to(x.dtype)


class SPADEResBlock(nn.Module):
    def __init__(
        self,
        fin: int,
        fout: int,
        arch: GeneratorArch,
        styled: bool,
        cond_channels: int = COND_CHANNELS,
    ):
        super().__init__()
        fmid = min(fin, fout)
        hidden, style_dim = arch.spade_hidden, arch.z_dim if styled else 0
        self.norm_0 = SPADE(fin, cond_channels, hidden, style_dim)
        self.conv_0 = spectral_norm(nn.Conv2d(fin, fmid, 3, padding=1))
        self.norm_1 = SPADE(fmid, cond_channels, hidden, style_dim)
        self.conv_1 = spectral_norm(nn.Conv2d(fmid, fout, 3, padding=1))
        self.noise = NoiseInjection() if arch.noise else None
        self.learned_shortcut = fin != fout
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, cond_channels, hidden, style_dim)
            self.conv_s = spectral_norm(nn.Conv2d(fin, fout, 1, bias=False))

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        style: StyleMap | None,
        noise: torch.Tensor | None,
    ) -> torch.Tensor:
        skip = self.conv_s(self.norm_s(x, cond, style)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, cond, style), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, cond, style), 0.2))
        return skip + (self.noise(dx, noise) if self.noise is not None else dx)


def mapping_network(dim: int, depth: int = 2) -> nn.Sequential:
    """z → w: a small MLP, so per-layer styles need not be linear in z."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(dim, dim), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers)


class SpadeGenerator(nn.Module):
    """z → Linear → (B, 16·ngf, 4, 4) → [SPADE block, ×2 nearest up]… → (B, 3, S, S) in [-1, 1].

    Its randomness is z and one noise map per block; both are drawn from `rng` (z first, then
    the maps in block order) unless given, so a runtime that takes them as inputs (ONNX) and a
    teacher and student that share them see exactly the same numbers.

    z reaches the layers from `arch.style_from` px up (`arch.styled`): with 4 (the default) the
    4×4 start is fc(z) and every SPADE layer is styled; above 4 the start is a learned constant
    and only the styled layers read z, so coarse layers, where a cell spans several parts of the
    face, cannot tie one part's style to another's.

    Region styles: z may be K codes (B, K, z_dim) with `masks` (B, K, S, S) that sum to 1 per
    pixel; every styled SPADE layer then paints each region with its own code (`StyleMap`), and
    so does an fc(z) start (`start`: much of a style is set there; the first code alone left a
    restyled backdrop in the base style). One code with a mask of ones gives exactly the face
    of the plain (B, z_dim) z.
    """

    def __init__(self, arch: GeneratorArch, image_size: int):
        super().__init__()
        self.arch, self.image_size = arch, image_size
        widths = generator_channels(arch, image_size)
        # the 4×4 start: fc(z), or a learned constant when z first acts further up (style_from)
        self.fc, self.const = None, None
        if arch.style_from <= START_SIZE:
            self.fc = nn.Linear(arch.z_dim, widths[0] * START_SIZE * START_SIZE)
        else:
            self.const = nn.Parameter(torch.randn(1, widths[0], START_SIZE, START_SIZE))
        fins = [widths[0], *widths[:-1]]
        self.styled = [arch.styled(START_SIZE * 2**i) for i in range(len(widths))]
        self.blocks = nn.ModuleList(
            SPADEResBlock(fin, fout, arch, st)
            for fin, fout, st in zip(fins, widths, self.styled, strict=True)
        )
        self.to_rgb = nn.Conv2d(widths[-1], 3, 3, padding=1)
        self.mapping = mapping_network(arch.z_dim) if arch.z_every_layer else None

    def noise_shapes(self, batch: int) -> list[tuple[int, int, int, int]]:
        """The per-block noise maps' shapes: (B, 1, r, r) at r = 4, 8, …, S; none without noise."""
        if not self.arch.noise:
            return []
        return [(batch, 1, START_SIZE * 2**i, START_SIZE * 2**i) for i in range(len(self.blocks))]

    def draw_noise(self, rng: RandomStream, batch: int, device: torch.device) -> list[torch.Tensor]:
        return [rng.randn(*shape, device=device) for shape in self.noise_shapes(batch)]

    def start(self, codes: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        """The 4×4 features the blocks refine: fc(z), or with masks each code's fc(z_k) where its
        mask (area-averaged to 4×4) says, so a region's code shapes it from the first layer."""
        batch = codes.shape[0]
        if self.fc is None:  # reshaped to known sizes: ONNX's BatchNorm needs the channels
            const = self.const.expand(batch, -1, -1, -1)
            return const.reshape(batch, self.const.shape[1], START_SIZE, START_SIZE)
        channels = self.fc.out_features // START_SIZE**2  # a constant: ONNX needs it known
        if masks is None:
            return self.fc(codes[:, 0]).view(batch, channels, START_SIZE, START_SIZE)
        per_code = self.fc(codes).view(batch, -1, channels, START_SIZE * START_SIZE)
        coarse = F.adaptive_avg_pool2d(masks, START_SIZE).flatten(2)  # (B, K, 16)
        mixed = (per_code * coarse[:, :, None]).sum(1)  # (B, 16ngf, 16)
        return mixed.view(batch, channels, START_SIZE, START_SIZE)

    def forward(
        self,
        cond: torch.Tensor,
        z: torch.Tensor | None = None,
        rng: RandomStream = GLOBAL_RNG,
        noise: list[torch.Tensor] | None = None,
        masks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if z is None:
            z = rng.randn(cond.shape[0], self.arch.z_dim, device=cond.device)
        if noise is None:
            noise = self.draw_noise(rng, cond.shape[0], cond.device)
        codes = z if z.dim() == 3 else z[:, None]  # (B, K, z_dim)
        if masks is None and codes.shape[1] > 1:
            raise ValueError("several style codes need masks saying where each one paints")
        x = self.start(codes, masks)  # (B, 16ngf, 4, 4)
        style = None
        if self.mapping is not None:
            sizes = [START_SIZE * 2**i for i, st in enumerate(self.styled) if st]
            style = StyleMap.build(self.mapping(codes), masks, sizes)  # w: (B, K, z_dim)
        for i, block in enumerate(self.blocks):
            if i > 0:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(x, cond, style, noise[i] if noise else None)
        return torch.tanh(self.to_rgb(F.leaky_relu(x, 0.2)))  # (B, 3, S, S)


class StyleEncoder(nn.Module):
    """Image → (μ, log σ²) of z: stride-2 3×3 convs down to 4×4, pooled over space (mean and
    max), then two linear heads.

    Pooling makes the code say *what* the picture's style is (glints in the eyes, dots in the
    background), not *where* things are: a code that placed a glint at this face's eye would
    put it beside another face's eye. Unlike the NVlabs encoder (fixed to 256 px input) the
    number of convs follows the image size, so it works at every size the generator supports.
    """

    def __init__(self, arch: GeneratorArch, image_size: int):
        super().__init__()
        n_down = num_upsamplings(image_size)
        layers: list[nn.Module] = []
        cin = 3
        for i in range(n_down):
            cout = arch.nef * min(8, 2**i)
            layers += [
                spectral_norm(nn.Conv2d(cin, cout, 3, stride=2, padding=1)),
                nn.InstanceNorm2d(cout),
                nn.LeakyReLU(0.2),
            ]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.fc_mu = nn.Linear(2 * cin, arch.z_dim)
        self.fc_logvar = nn.Linear(2 * cin, arch.z_dim)

    def forward(
        self, image: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ²) of the whole picture, or, with a (B, 1, S, S) `mask`, of the part of it
        inside the mask (SEAN-like): the 4×4 features are pooled with the mask's area share of
        each cell as weights (the mean), and over the cells it touches (the max)."""
        h = self.body(image)  # (B, 8nef, 4, 4)
        if mask is None:
            pooled = self._whole(h)
            return self.fc_mu(pooled), self.fc_logvar(pooled)
        weight = F.adaptive_avg_pool2d(mask.to(h.dtype), h.shape[-2:])  # (B, 1, 4, 4)
        if bool((weight.sum(dim=(2, 3)) == 0).any()):
            raise ValueError("a style mask must cover at least one pixel")
        pooled = self._pool(h, weight)[:, 0]
        return self.fc_mu(pooled), self.fc_logvar(pooled)

    def regions(
        self, image: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ²), each (B, K, z_dim): the code of each of K (B, K, S, S) masks' parts of
        the picture, as `forward` pools one; an empty mask gets the whole picture's code."""
        h = self.body(image)
        weight = F.adaptive_avg_pool2d(masks.to(h.dtype), h.shape[-2:])  # (B, K, 4, 4)
        empty = (weight.sum(dim=(2, 3)) == 0)[..., None]  # (B, K, 1)
        whole = self._whole(h)[:, None]
        pooled = torch.where(empty, whole, self._pool(h, torch.where(empty[..., None], 1, weight)))
        return self.fc_mu(pooled), self.fc_logvar(pooled)

    @staticmethod
    def _whole(h: torch.Tensor) -> torch.Tensor:
        """(B, 2C): the mean and the max of the (B, C, 4, 4) features over the whole picture."""
        return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)

    @staticmethod
    def _pool(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """(B, K, 2C): per mask, the weighted mean of the (B, C, 4, 4) features and their max over
        the cells of non-zero (B, K, 4, 4) weight."""
        mean = torch.einsum("bchw,bkhw->bkc", h, weight) / weight.sum(dim=(2, 3))[..., None]
        outside = (weight == 0)[:, :, None]  # (B, K, 1, 4, 4)
        peak = h[:, None].masked_fill(outside, float("-inf")).amax(dim=(3, 4))
        return torch.cat([mean, peak], dim=2)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, rng: RandomStream) -> torch.Tensor:
    eps = rng.randn(*mu.shape, device=mu.device, dtype=mu.dtype)
    return mu + eps * torch.exp(0.5 * logvar)


class PatchDiscriminator(nn.Module):
    """PatchGAN on (image ⊕ rough); returns every layer's output (the last is the patch logits)."""

    def __init__(self, in_channels: int, ndf: int, n_layers: int):
        super().__init__()
        layers = [nn.Sequential(nn.Conv2d(in_channels, ndf, 4, 2, 2), nn.LeakyReLU(0.2))]
        nf = ndf
        for n in range(1, n_layers):
            nf_prev, nf = nf, min(nf * 2, MAX_DISC_WIDTH)
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

    def __init__(self, arch: DiscriminatorArch, in_channels: int = 3 + COND_CHANNELS):
        super().__init__()
        self.arch = arch
        self.scales = nn.ModuleList(
            PatchDiscriminator(in_channels, arch.ndf, arch.n_layers) for _ in range(arch.num_d)
        )

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        outputs = []
        for i, d in enumerate(self.scales):
            if i > 0:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outputs.append(d(x))
        return outputs


class FaceModel(nn.Module):
    """The generator and its optional style encoder, trained, averaged and saved together."""

    def __init__(self, arch: GeneratorArch, image_size: int):
        super().__init__()
        self.arch, self.image_size = arch, image_size
        self.generator = SpadeGenerator(arch, image_size)
        self.encoder = StyleEncoder(arch, image_size) if arch.use_vae else None
        self.style_frozen = False

    def freeze_style(self) -> FaceModel:
        """Fix the style encoder and mapping network (a student shares its teacher's): no
        gradients, and eval mode even while the rest trains, so that spectral norm's power
        iteration cannot move them away from the teacher's."""
        self.style_frozen = True
        for part in self.style_parts():
            part.requires_grad_(False)
        return self.train(self.training)

    def style_parts(self) -> list[nn.Module]:
        return [m for m in (self.encoder, self.generator.mapping) if m is not None]

    def train(self, mode: bool = True) -> FaceModel:
        super().train(mode)
        if self.style_frozen:
            for part in self.style_parts():
                part.eval()
        return self

    def forward(
        self,
        cond: torch.Tensor,
        style: torch.Tensor | None = None,
        z: torch.Tensor | None = None,
        rng: RandomStream = GLOBAL_RNG,
        noise: list[torch.Tensor] | None = None,
        masks: torch.Tensor | None = None,
        mix: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Returns (image, μ, log σ²); μ and log σ² are None unless the encoder saw `style`.
        `z` and `masks` may be region codes (`SpadeGenerator`); in training, a (B, 1, S, S)
        `mix` (`spade.regions.random_region_masks`) paints its pixels with a second code: with
        the encoder and `style`, each part of the face gets the code of the same part of `style`
        (`StyleEncoder.regions`; μ and log σ² are then (B, 2, z_dim)), so the face is still
        `style`'s, and each region must be painted from its own code; without, a random one."""
        mu = logvar = None
        if mix is not None and z is None and style is not None and self.encoder is not None:
            masks = torch.cat([1 - mix, mix], dim=1)
            mu, logvar = self.encoder.regions(style, masks)
            z = reparameterize(mu, logvar, rng) if self.training else mu
            return self.generator(cond, z, rng, noise, masks), mu, logvar
        if z is None and style is not None and self.encoder is not None:
            mu, logvar = self.encoder(style)
            z = reparameterize(mu, logvar, rng) if self.training else mu
        if mix is not None:  # regional style mixing: a random code paints where `mix` is 1
            base = z if z is not None else rng.randn(len(cond), self.arch.z_dim, device=cond.device)
            other = rng.randn(*base.shape, device=cond.device, dtype=base.dtype)
            z, masks = torch.stack([base, other], dim=1), torch.cat([1 - mix, mix], dim=1)
        return self.generator(cond, z, rng, noise, masks), mu, logvar
