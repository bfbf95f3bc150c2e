"""Incremental redraw: after a stroke, recompute only what the changed pixels of the rough reach.

The generator is local everywhere but its 4×4 start and its style code (both from z), and its
BatchNorm is frozen at inference, so a change of the rough reaches, at each resolution r:

- each SPADE layer's per-pixel scale and bias (its "affine"): the rough resized to r (nearest:
  the pixels at multiples of S/r), through two 3×3 convs: the changed pixels of that rough,
  dilated by 2;
- a block's output: its input's change dilated by 2 (two 3×3 convs) and the affines' (the
  rough's at r, dilated by 4);
- the face: the last block's change dilated by 1 (`to_rgb`).

A `Canvas` keeps what one face computed: the rough at every resolution, every SPADE affine and
every block's output. `IncrementalGenerator.redraw` compares a new rough with it, finds the
tiles (squares of `tile` px at each resolution) that the change reaches, gathers them with
their halo into one batch, runs each convolution densely on that batch without padding (the
image's own zero padding is restored by masking what lies outside it), and writes the results
back; a resolution where most tiles are active is computed whole. A changed z (seed, style) or
noise is a new `Canvas` (`capture`), since the start and the style code reach every pixel.

Region styles (several codes, `SpadeGenerator`) work the same way: the codes are part of the
canvas, and their masks are part of the rough. A stroke that reshapes a region moves its mask,
and a styled SPADE layer's affine changes exactly where the mask (area-averaged to that layer)
does, so those pixels join the rough's change; the 4×4 start, mixed from the codes by the masks
at 4×4, is recomputed (it is tiny) and compared.

Cached maps are channels-last, so a tile gather is one `index_select` of pixel rows and a
scatter one `index_copy_`. The networks stay plain modules: this reads their weights once, with
each SPADE layer's frozen BatchNorm and style folded into the conv that predicts its affine
(`_Spade`), which also makes a full redraw here cheaper than the module's forward.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from spade.config import START_SIZE
from spade.networks import SPADE, SpadeGenerator, SPADEResBlock

CL = torch.channels_last
SPADE_NAMES = ("norm_0", "norm_1", "norm_s")
AFFINE_REACH = 2  # the rough → affine: two 3×3 convs
BLOCK_REACH = 2  # a block's input → its output: two 3×3 convs
# What a tile reads around it: the reaches above, kept apart from the masks' (which tests vary).
HALO, AFFINE_HALO = 2, 2


@dataclass
class Canvas:
    """What one face computed, for redrawing the next rough of the same page incrementally.

    `conds[i]`, `affines[i][name]` and `outs[i]` are block i's rough, SPADE affines ([A; B],
    `_Spade`) and output (channels-last); `biases[i][name]` is each affine conv's bias for this
    face's style: (2C,), or (K, 2C), one per code, with region styles. `masks[i]` are then the
    K masks at block i's resolution (channels-last), else None.
    """

    key: tuple
    cond: torch.Tensor  # (1, 3, S, S)
    codes: torch.Tensor  # (1, K, z_dim)
    start: torch.Tensor  # (1, C0, 4, 4): the block 0 input, from z
    conds: list[torch.Tensor]
    masks: list[torch.Tensor | None]
    affines: list[dict[str, torch.Tensor]]
    biases: list[dict[str, torch.Tensor]]
    outs: list[torch.Tensor]
    noise: list[torch.Tensor | None]
    face: torch.Tensor  # (1, 3, S, S) in [-1, 1]

    @property
    def nbytes(self) -> int:
        """Memory held by the cached tensors."""
        tensors = [self.cond, self.codes, self.start, self.face, *self.conds, *self.outs]
        tensors += [m for m in self.masks if m is not None]
        tensors += [t for d in (*self.affines, *self.biases) for t in d.values()]
        tensors += [t for t in self.noise if t is not None]
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class Redraw:
    """How a face was computed: `incremental` or not, the fraction of the rough's pixels that
    changed, and the fraction of a full face's multiply-adds that were computed."""

    incremental: bool
    changed: float
    recomputed: float
    levels: list[str] = field(default_factory=list)  # per resolution: dense, tiles n/N or idle


class _Macs:
    """Multiply-adds counted as convolutions run (for `Redraw.recomputed`)."""

    def __init__(self) -> None:
        self.total = 0

    def conv(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int
    ) -> torch.Tensor:
        """A stride-1 convolution, counting its multiply-adds."""
        out = F.conv2d(x, weight, bias, padding=padding)
        self.total += out.numel() * weight[0].numel()
        return out


def _plain(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A conv's weight and bias as plain tensors (spectral norm's eval-mode weight, once)."""
    bias = None if conv.bias is None else conv.bias.detach()
    return _channels_last(conv.weight.detach().clone()), bias


def _channels_last(weight: torch.Tensor) -> torch.Tensor:
    """A conv weight in the maps' layout: else each convolution would copy it to that layout."""
    return weight.contiguous(memory_format=CL)


@dataclass
class _Spade:
    """A SPADE layer with its frozen BatchNorm folded into the conv that predicts its affine:
    norm(x)·(1 + γ) + β = x·A + B with A = s·(1 + γ), B = t·(1 + γ) + β (s, t: the norm's
    per-channel scale and shift), both linear in the hidden layer, so one conv gives [A; B]
    and modulating is one multiply-add. The style term (from w) is folded into its bias."""

    shared: tuple[torch.Tensor, torch.Tensor]
    weight: torch.Tensor  # (2C, hidden, 3, 3): [s·W_γ; W_β + t·W_γ]
    scale: torch.Tensor  # s, (C,)
    shift: torch.Tensor  # t, (C,)
    gamma_bias: torch.Tensor  # b_γ + 1
    beta_bias: torch.Tensor
    style: nn.Linear | None

    @classmethod
    def fold(cls, spade: SPADE) -> _Spade:
        norm = spade.norm
        scale = torch.rsqrt(norm.running_var + norm.eps)
        shift = -norm.running_mean * scale
        w, b = _plain(spade.gamma_beta)
        w_g, w_b = w.chunk(2)
        b_g, b_b = b.chunk(2)
        per = (slice(None), None, None, None)
        weight = _channels_last(torch.cat([w_g * scale[per], w_b + w_g * shift[per]]))
        return cls(_plain(spade.shared[0]), weight, scale, shift, b_g + 1, b_b, spade.style)

    def bias(self, w: torch.Tensor | None, regional: bool) -> torch.Tensor:
        """The bias of [A; B] for the mapped codes w (1, K, z_dim): (2C,) for one code or an
        unstyled layer, else (K, 2C) when `regional` (the masks mix them per pixel: they sum
        to 1, so Σ_k mask_k · bias_k is the module's Σ_k mask_k · Linear(w_k) folded)."""
        g, b = self.gamma_bias, self.beta_bias
        if self.style is None:
            return torch.cat([g * self.scale, b + g * self.shift])
        st_g, st_b = self.style(w[0] if regional else w[0, :1]).chunk(2, dim=-1)
        g, b = g + st_g, b + st_b
        out = torch.cat([g * self.scale, b + g * self.shift], dim=-1)
        return out if regional else out[0]


@dataclass
class _Block:
    """A residual block's weights as plain tensors, its SPADE layers folded."""

    spades: dict[str, _Spade]
    conv_0: tuple[torch.Tensor, torch.Tensor | None]
    conv_1: tuple[torch.Tensor, torch.Tensor | None]
    conv_s: tuple[torch.Tensor, torch.Tensor | None] | None
    noise: torch.Tensor | None  # the noise weight

    @classmethod
    def fold(cls, block: SPADEResBlock) -> _Block:
        spades = {k: _Spade.fold(getattr(block, k)) for k in SPADE_NAMES if hasattr(block, k)}
        conv_s = _plain(block.conv_s) if block.learned_shortcut else None
        noise = block.noise.weight.detach() if block.noise is not None else None
        return cls(spades, _plain(block.conv_0), _plain(block.conv_1), conv_s, noise)


def _modulate(x: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    a, b = affine.chunk(2, dim=1)
    return torch.addcmul(b, x, a)


def _affine(
    macs: _Macs,
    spade: _Spade,
    cond: torch.Tensor,
    bias: torch.Tensor,
    pad: int,
    valid,
    masks: torch.Tensor | None = None,
) -> torch.Tensor:
    """[A; B] (n, 2C, h, w) from the rough (with a halo of 2 when `pad` is 0: `valid` zeroes
    the hidden layer outside the image, where the dense conv pads with 0). A (K, 2C) `bias` is
    one per code, mixed per pixel by the (n, K, h, w) `masks`."""
    hidden = F.relu_(macs.conv(cond, *spade.shared, pad))
    if valid is not None:
        hidden = hidden * valid
    if bias.dim() == 1:
        return macs.conv(hidden, spade.weight, bias, pad)
    per_pixel = torch.einsum("kc,nkhw->nchw", bias, masks)
    return macs.conv(hidden, spade.weight, None, pad).add_(per_pixel)


def _block(
    macs: _Macs,
    block: _Block,
    x: torch.Tensor,
    affines: dict[str, torch.Tensor],
    noise: torch.Tensor | None,
    pad: int,
    valid2=None,
    valid1=None,
) -> torch.Tensor:
    """A residual block from its input and affines. Dense (`pad` 1) or on tiles with a halo of
    2 (`pad` 0): then `x` and `affines["norm_0"]` carry a halo of 2, `norm_1`'s a halo of 1,
    and `valid2` / `valid1` (None: every tile lies inside) zero what lies outside the image
    before each conv."""
    h = 0 if pad else HALO
    a = F.leaky_relu_(_modulate(x, affines["norm_0"]), 0.2)
    if valid2 is not None:
        a = a * valid2
    dx = macs.conv(a, *block.conv_0, pad)
    scale, shift = affines["norm_1"].chunk(2, dim=1)
    a = F.leaky_relu_(dx.mul_(scale).add_(shift), 0.2)  # in place: no new map to fault in
    if valid1 is not None:
        a = a * valid1
    dx = macs.conv(a, *block.conv_1, pad)
    centre = x[:, :, h : x.shape[2] - h, h : x.shape[3] - h] if h else x
    if block.conv_s is not None:
        skip = macs.conv(_modulate(centre, affines["norm_s"]), *block.conv_s, 0)
    else:
        skip = centre
    if block.noise is not None:
        dx.addcmul_(noise.to(dx.dtype), block.noise)
    return dx.add_(skip)


def _dilate(mask: torch.Tensor, reach: int) -> torch.Tensor:
    """A (r, r) bool mask grown by `reach` pixels (a square neighbourhood): shifted ORs along
    each axis, cheaper than a max-pool over floats on these small maps."""
    if reach == 0 or not mask.any() or mask.all():
        return mask
    grown = mask.clone()
    for s in range(1, reach + 1):
        grown[s:] |= mask[:-s]
        grown[:-s] |= mask[s:]
    rows = grown.clone()
    for s in range(1, reach + 1):
        grown[:, s:] |= rows[:, :-s]
        grown[:, :-s] |= rows[:, s:]
    return grown


def _upsample(mask: torch.Tensor) -> torch.Tensor:
    return mask.repeat_interleave(2, 0).repeat_interleave(2, 1)


def _active_tiles(mask: torch.Tensor, tile: int) -> torch.Tensor:
    """Flat indices of the `tile`-px squares of `mask` holding any True pixel."""
    n = mask.shape[0] // tile
    if not mask.any():
        return torch.zeros(0, dtype=torch.long)
    if mask.all():
        return torch.arange(n * n)
    hit = mask.view(n, tile, n, tile).any(3).any(1)
    return hit.flatten().nonzero()[:, 0].cpu()


@functools.lru_cache(maxsize=256)
def _tile_geometry(
    size: int, tile: int, halo: int, factor: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every tile of a (size, size) map: the flat source-pixel indices of the tile with its
    halo, in a source map `factor` times smaller (nearest upsampling folded into the gather;
    positions outside the image are clamped), and a (1, side, side) mask of what is inside."""
    n, side = size // tile, tile + 2 * halo
    starts = torch.arange(n) * tile - halo
    coords = starts[:, None] + torch.arange(side)[None, :]  # (n, side)
    inside = (coords >= 0) & (coords < size)
    src = coords.clamp(0, size - 1) // factor
    width = size // factor
    rows, cols = src[:, None, :, None], src[None, :, None, :]  # tile (ty, tx) → (side, side)
    index = (rows * width + cols).reshape(n * n, side * side)
    valid = (inside[:, None, :, None] & inside[None, :, None, :]).reshape(n * n, 1, side, side)
    return index, valid


def _gather(
    src: torch.Tensor, tiles: torch.Tensor, size: int, tile: int, halo: int
) -> torch.Tensor:
    """Tiles (with halo) of a channels-last (1, C, s, s) map, as a channels-last batch
    (n, C, side, side); `size` is the resolution they are read at (s or 2s: upsampled)."""
    index, _ = _tile_geometry(size, tile, halo, size // src.shape[-1])
    side = tile + 2 * halo
    c = src.shape[1]
    rows = src.permute(0, 2, 3, 1).reshape(-1, c)  # (s·s, C): a view of channels-last memory
    picked = rows.index_select(0, index[tiles].flatten().to(src.device))
    return picked.view(len(tiles), side, side, c).permute(0, 3, 1, 2)


def _valid(
    tiles: torch.Tensor, like: torch.Tensor, size: int, tile: int, halo: int
) -> torch.Tensor | None:
    """1 inside the image, 0 outside, for each tile with its halo: (n, 1, side, side); None
    when every tile lies inside (nothing to zero)."""
    valid = _tile_geometry(size, tile, halo, 1)[1][tiles]
    return None if valid.all() else valid.to(like.device, like.dtype)


def _scatter(dst: torch.Tensor, tiles: torch.Tensor, values: torch.Tensor, tile: int) -> None:
    """Write a (n, C, tile, tile) batch into its tiles of the channels-last (1, C, s, s) map."""
    index, _ = _tile_geometry(dst.shape[-1], tile, 0, 1)
    c = dst.shape[1]
    rows = dst.permute(0, 2, 3, 1).reshape(-1, c)
    assert rows.data_ptr() == dst.data_ptr(), "cached maps must be channels-last"
    flat = values.permute(0, 2, 3, 1).reshape(-1, c)
    rows.index_copy_(0, index[tiles].flatten().to(dst.device), flat)


class IncrementalGenerator:
    """A generator (eval mode, frozen) that redraws a `Canvas` for a new rough, computing only
    the tiles the change reaches.

    `tile` is the tile side in pixels at every resolution (smaller maps are one tile); a
    resolution where at least `dense_above` of the tiles are active is computed whole.
    """

    def __init__(self, generator: SpadeGenerator, tile: int = 8, dense_above: float = 0.5):
        if generator.training:
            raise ValueError("incremental redraw needs the generator in eval mode")
        if tile < 2 or tile & (tile - 1):
            raise ValueError(f"tile must be a power of two >= 2, got {tile}")
        self.g, self.tile, self.dense_above = generator, tile, dense_above
        with torch.no_grad():
            self.blocks = [_Block.fold(b) for b in generator.blocks]
            self.to_rgb = _plain(generator.to_rgb)
        self.dtype = next(generator.parameters()).dtype
        self.device = next(generator.parameters()).device
        n = len(generator.blocks)
        self.sizes = [START_SIZE * 2**i for i in range(n)]
        self.full_macs = 0  # of one face, counted by the first capture

    def _prepare(self, cond: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The rough on the engine's device and dtype, and resized to every block (nearest,
        as each SPADE layer resizes it)."""
        move = {"device": self.device, "dtype": self.dtype}
        cond = cond.to(**move).contiguous(memory_format=CL)
        full = cond.shape[-1]  # nearest resizing by an integer factor f reads every f-th pixel
        conds = [cond[:, :, :: full // r, :: full // r] for r in self.sizes]
        return cond, [c.contiguous(memory_format=CL) for c in conds]

    def _masks(self, masks: torch.Tensor | None) -> list[torch.Tensor | None]:
        """(1, K, S, S) region masks at every block's resolution, area-averaged as `StyleMap`
        does (None: one code everywhere)."""
        if masks is None:
            return [None] * len(self.sizes)
        masks = masks.to(device=self.device, dtype=self.dtype)
        full = masks.shape[-1]
        scaled = [F.avg_pool2d(masks, full // r) if r < full else masks for r in self.sizes]
        return [m.contiguous(memory_format=CL) for m in scaled]

    def _start(self, codes: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        return self.g.start(codes, masks).contiguous(memory_format=CL)

    @torch.inference_mode()
    def capture(
        self,
        cond: torch.Tensor,
        z: torch.Tensor,
        noise: list[torch.Tensor],
        key: tuple = (),
        masks: torch.Tensor | None = None,
    ) -> Canvas:
        """A full redraw of one (1, 3, S, S) rough, keeping everything a redraw can reuse. `z`
        is (1, z_dim), or (1, K, z_dim) region codes with their (1, K, S, S) `masks`."""
        if cond.shape[0] != 1:
            raise ValueError("a canvas holds one face")
        g, macs = self.g, _Macs()
        move = {"device": self.device, "dtype": self.dtype}
        cond, conds = self._prepare(cond)
        codes = (z if z.dim() == 3 else z[:, None]).to(**move)
        if masks is None and codes.shape[1] > 1:
            raise ValueError("several style codes need masks saying where each one paints")
        noise = [n.to(**move) for n in noise] if noise else [None] * len(g.blocks)
        start = self._start(codes, masks)
        scaled = self._masks(masks)
        w = g.mapping(codes) if g.mapping is not None else None
        regional = masks is not None
        biases = [{k: s.bias(w, regional) for k, s in b.spades.items()} for b in self.blocks]
        affines, outs = [], []
        x = start
        for i, block in enumerate(self.blocks):
            if i > 0:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            aff = {
                k: _affine(macs, s, conds[i], biases[i][k], 1, None, scaled[i]).contiguous(
                    memory_format=CL
                )
                for k, s in block.spades.items()
            }
            x = _block(macs, block, x, aff, noise[i], 1).contiguous(memory_format=CL)
            affines.append(aff)
            outs.append(x)
        face = torch.tanh(macs.conv(F.leaky_relu(x, 0.2), *self.to_rgb, 1))
        face = face.contiguous(memory_format=CL)
        self.full_macs = macs.total
        return Canvas(key, cond, codes, start, conds, scaled, affines, biases, outs, noise, face)

    @torch.inference_mode()
    def redraw(
        self, canvas: Canvas, cond: torch.Tensor, masks: torch.Tensor | None = None
    ) -> Redraw:
        """Bring `canvas` to the rough `cond` (same codes and noise) and, with region styles,
        to the codes' new `masks`, updating it in place; its `face` is then the new face."""
        if (masks is None) != (canvas.masks[0] is None):
            raise ValueError("a canvas with region styles is redrawn with masks, and only it")
        cond, conds = self._prepare(cond)
        scaled = self._masks(masks)
        changed = (cond != canvas.cond).any(1)[0].cpu()
        macs, levels = _Macs(), []
        moved = torch.zeros(START_SIZE, START_SIZE, dtype=torch.bool)  # the block input's change
        if masks is not None:
            start = self._start(canvas.codes, masks)
            moved = (start != canvas.start).any(1)[0].cpu()
            canvas.start = start
        for i, block in enumerate(self.blocks):
            r = self.sizes[i]
            if i > 0:
                moved = _upsample(moved)
            cond_moved = (conds[i] != canvas.conds[i]).any(1)[0].cpu()
            if masks is not None and self.g.styled[i]:  # a styled layer's affine follows them
                cond_moved |= (scaled[i] != canvas.masks[i]).any(1)[0].cpu()
            canvas.conds[i], canvas.masks[i] = conds[i], scaled[i]
            levels.append(self._affines(macs, canvas, i, block, cond_moved))
            moved = _dilate(moved, BLOCK_REACH) | _dilate(cond_moved, AFFINE_REACH + BLOCK_REACH)
            levels[-1] += " / " + self._outputs(macs, canvas, i, block, moved, r)
        self._face(macs, canvas, _dilate(moved, 1))
        canvas.cond = cond
        full = self.full_macs or macs.total or 1
        return Redraw(True, changed.float().mean().item(), macs.total / full, levels)

    def _plan(self, mask: torch.Tensor, size: int) -> tuple[int, torch.Tensor | None]:
        """(tile side, active tiles) at this resolution; tiles None means compute it whole."""
        tile = min(self.tile, size)
        tiles = _active_tiles(mask, tile)
        if len(tiles) >= self.dense_above * (size // tile) ** 2:
            return tile, None
        return tile, tiles

    @staticmethod
    def _describe(tiles: torch.Tensor | None, tile: int, size: int) -> str:
        if tiles is None:
            return "dense"
        return f"{len(tiles)}/{(size // tile) ** 2}" if len(tiles) else "idle"

    def _affines(self, macs, canvas: Canvas, i: int, block, moved: torch.Tensor) -> str:
        """Recompute block i's SPADE affines where the rough at its resolution changed."""
        r = self.sizes[i]
        if not moved.any():
            return "idle"
        tile, tiles = self._plan(_dilate(moved, AFFINE_REACH), r)
        biases, masks = canvas.biases[i], canvas.masks[i]
        if tiles is None:
            for k, s in block.spades.items():
                new = _affine(macs, s, canvas.conds[i], biases[k], 1, None, masks)
                canvas.affines[i][k] = new.contiguous(memory_format=CL)
            return "dense"
        cond = _gather(canvas.conds[i], tiles, r, tile, AFFINE_HALO)
        valid2 = _valid(tiles, cond, r, tile, AFFINE_HALO)
        if valid2 is not None:
            cond = cond * valid2  # the conv's zero padding
        valid = _valid(tiles, cond, r, tile, AFFINE_HALO - 1)
        if masks is not None:
            masks = _gather(masks, tiles, r, tile, 0)
        for k, s in block.spades.items():
            new = _affine(macs, s, cond, biases[k], 0, valid, masks)
            _scatter(canvas.affines[i][k], tiles, new, tile)
        return self._describe(tiles, tile, r)

    def _outputs(self, macs, canvas: Canvas, i: int, block, moved: torch.Tensor, r: int) -> str:
        """Recompute block i's output where `moved` (its input's or affines' change) reaches."""
        if not moved.any():
            return "idle"
        tile, tiles = self._plan(moved, r)
        src = canvas.start if i == 0 else canvas.outs[i - 1]
        noise = canvas.noise[i]
        if tiles is None:
            x = src if i == 0 else F.interpolate(src, scale_factor=2, mode="nearest")
            new = _block(macs, block, x, canvas.affines[i], noise, 1)
            canvas.outs[i] = new.contiguous(memory_format=CL)
            return "dense"
        h = HALO
        x = _gather(src, tiles, r, tile, h)
        aff = canvas.affines[i]
        tiled = {"norm_0": _gather(aff["norm_0"], tiles, r, tile, h)}
        tiled["norm_1"] = _gather(aff["norm_1"], tiles, r, tile, h - 1)
        if "norm_s" in aff:
            tiled["norm_s"] = _gather(aff["norm_s"], tiles, r, tile, 0)
        if noise is not None:
            noise = _gather(noise.contiguous(memory_format=CL), tiles, r, tile, 0)
        valid2 = _valid(tiles, x, r, tile, h)
        valid1 = _valid(tiles, x, r, tile, h - 1)
        new = _block(macs, block, x, tiled, noise, 0, valid2, valid1)
        _scatter(canvas.outs[i], tiles, new, tile)
        return self._describe(tiles, tile, r)

    def _face(self, macs, canvas: Canvas, moved: torch.Tensor) -> None:
        size = canvas.face.shape[-1]
        if not moved.any():
            return
        tile, tiles = self._plan(moved, size)
        last = canvas.outs[-1]
        if tiles is None:
            face = torch.tanh(macs.conv(F.leaky_relu(last, 0.2), *self.to_rgb, 1))
            canvas.face = face.contiguous(memory_format=CL)
            return
        x = F.leaky_relu(_gather(last, tiles, size, tile, 1), 0.2)
        valid = _valid(tiles, x, size, tile, 1)
        x = x if valid is None else x * valid
        _scatter(canvas.face, tiles, torch.tanh(macs.conv(x, *self.to_rgb, 0)), tile)
