"""Incremental redraw (`spade.incremental`): a stroke's face equals a full redraw's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spade import incremental
from spade.config import GeneratorArch
from spade.data import to_model
from spade.errors import UserError
from spade.incremental import IncrementalGenerator
from spade.networks import FaceModel, NoiseInjection
from spade.regions import code_masks, region_at
from spade.strokes import brush_stroke

SIZE = 64
LEVEL = 1 / 127.5  # one level in 255, on the [-1, 1] scale
CPU = torch.device("cpu")
COLOURS = [(230, 80, 60), (40, 40, 40), (250, 220, 190), (90, 140, 230)]


def tiny_model(**arch) -> FaceModel:
    """A random tiny generator with BatchNorm statistics and noise weights that matter (fresh
    ones are 0 and 1, which would hide a normalisation or noise taken from the wrong place)."""
    torch.manual_seed(0)
    model = FaceModel(GeneratorArch(**({"ngf": 4, "spade_hidden": 8, "z_dim": 8} | arch)), SIZE)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
        if isinstance(m, NoiseInjection):
            m.weight.data.fill_(0.3)
    return model.eval().requires_grad_(False)


MODELS = {
    "student": {},  # noise, z in every layer
    "teacher": {"ngf": 8, "spade_hidden": 16},
    "plain": {"noise": False, "z_every_layer": False},
}


@pytest.fixture(scope="module", params=list(MODELS))
def model(request) -> FaceModel:
    return tiny_model(**MODELS[request.param])


def start_rough(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((SIZE, SIZE, 3), (148, 192, 230), dtype=np.uint8)
    for _ in range(4):
        img = brush_stroke(img, 0.08, COLOURS[int(rng.integers(len(COLOURS)))], rng)
    return img


def cond(rough: np.ndarray) -> torch.Tensor:
    return to_model(rough[None], CPU)


def full_face(model: FaceModel, rough: np.ndarray, z, noise) -> torch.Tensor:
    with torch.inference_mode():
        return model.generator(cond(rough), z, noise=noise)


def randomness(model: FaceModel, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(1, model.arch.z_dim, generator=g)
    return z, [torch.randn(s, generator=g) for s in model.generator.noise_shapes(1)]


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert (a.float() - b.float()).abs().max().item() <= LEVEL


def test_capture_is_the_face(model):
    z, noise = randomness(model)
    rough = start_rough()
    canvas = IncrementalGenerator(model.generator).capture(cond(rough), z, noise)
    assert_same(canvas.face, full_face(model, rough, z, noise))


@pytest.mark.parametrize("fraction", [0.002, 0.01, 0.03, 0.1, 0.3])
def test_strokes_equal_a_full_redraw(model, fraction):
    """Several strokes in a row, each redrawn from the canvas the last one left."""
    z, noise = randomness(model, 1)
    engine = IncrementalGenerator(model.generator)
    rough = start_rough()
    canvas = engine.capture(cond(rough), z, noise)
    rng = np.random.default_rng(int(fraction * 1000))
    for i in range(3):
        rough = brush_stroke(rough, fraction, COLOURS[i], rng)
        how = engine.redraw(canvas, cond(rough))
        assert how.incremental and 0 < how.changed <= 2 * fraction
        assert_same(canvas.face, full_face(model, rough, z, noise))


@pytest.mark.parametrize("where", [(0, 0), (0, SIZE - 1), (SIZE - 1, SIZE - 1), (SIZE // 2, 0)])
def test_strokes_at_borders_and_corners(model, where):
    z, noise = randomness(model, 2)
    engine = IncrementalGenerator(model.generator)
    rough = start_rough(1)
    canvas = engine.capture(cond(rough), z, noise)
    rough = brush_stroke(rough, 0.01, COLOURS[1], np.random.default_rng(0), start=where)
    engine.redraw(canvas, cond(rough))
    assert_same(canvas.face, full_face(model, rough, z, noise))


def test_single_pixels_everywhere(model):
    """One changed pixel at a time, on a grid that hits every tile and border position."""
    z, noise = randomness(model, 3)
    engine = IncrementalGenerator(model.generator, tile=4)
    rough = start_rough(2)
    canvas = engine.capture(cond(rough), z, noise)
    for y, x in [(0, 0), (1, 63), (31, 32), (62, 1), (63, 63), (16, 47)]:
        rough = rough.copy()
        rough[y, x] = 255 - rough[y, x]
        how = engine.redraw(canvas, cond(rough))
        assert how.recomputed < 1
        assert_same(canvas.face, full_face(model, rough, z, noise))


def test_empty_stroke_recomputes_nothing(model):
    z, noise = randomness(model)
    engine = IncrementalGenerator(model.generator)
    rough = start_rough()
    canvas = engine.capture(cond(rough), z, noise)
    before = canvas.face.clone()
    how = engine.redraw(canvas, cond(rough))
    assert how.changed == 0 and how.recomputed == 0
    assert torch.equal(canvas.face, before)


def test_a_small_stroke_recomputes_little():
    """Far fewer multiply-adds than a face for a touch that only the full-size rough sees (the
    coarser ones are the pixels at even coordinates, and coarser)."""
    model = tiny_model()
    z, noise = randomness(model)
    engine = IncrementalGenerator(model.generator)
    rough = start_rough()
    canvas = engine.capture(cond(rough), z, noise)
    rough = rough.copy()
    rough[37, 41] = COLOURS[0]
    how = engine.redraw(canvas, cond(rough))
    assert 0 < how.recomputed < 0.2
    assert_same(canvas.face, full_face(model, rough, z, noise))


def test_a_reach_too_short_is_caught(monkeypatch):
    """The comparison can fail: a redraw that dilates the change too little differs."""
    model = tiny_model()
    monkeypatch.setattr(incremental, "AFFINE_REACH", 1)
    z, noise = randomness(model)
    engine = IncrementalGenerator(model.generator, tile=2, dense_above=2.0)  # never whole
    rough = start_rough()
    canvas = engine.capture(cond(rough), z, noise)
    rough = brush_stroke(rough, 0.01, COLOURS[0], np.random.default_rng(5))
    engine.redraw(canvas, cond(rough))
    assert (canvas.face - full_face(model, rough, z, noise)).abs().max().item() > LEVEL


def test_bf16_generator_stays_close():
    model = tiny_model()
    generator = FaceModel(model.arch, SIZE).eval()
    generator.load_state_dict(model.state_dict())
    g16 = generator.generator.to(torch.bfloat16)
    z, noise = randomness(model)
    engine = IncrementalGenerator(g16)
    rough = start_rough()
    canvas = engine.capture(cond(rough), z, noise)
    rough = brush_stroke(rough, 0.03, COLOURS[2], np.random.default_rng(0))
    engine.redraw(canvas, cond(rough))
    with torch.inference_mode():
        dense = g16(cond(rough).bfloat16(), z.bfloat16(), noise=[n.bfloat16() for n in noise])
    assert (canvas.face.float() - dense.float()).abs().mean().item() < 4 * LEVEL


def test_training_mode_is_refused():
    with pytest.raises(ValueError, match="eval mode"):
        IncrementalGenerator(tiny_model().train().generator)


def test_stroke_sizes_are_checked():
    with pytest.raises(UserError, match="between 0 and 100"):
        brush_stroke(start_rough(), 1.5, COLOURS[0], np.random.default_rng(0))


@pytest.mark.parametrize("fraction", [0.01, 0.03, 0.1])
def test_brush_strokes_change_what_they_say(fraction):
    rough = start_rough()
    after = brush_stroke(rough, fraction, COLOURS[3], np.random.default_rng(0))
    changed = (after != rough).any(-1).mean()
    assert fraction <= changed <= fraction * 1.5


# Region styles: several codes, their masks following the rough's blobs.

REGION_MODELS = {
    "z every layer": {},
    "style from 16 px": {"style_from": 16},
}


def region_masks(rough: np.ndarray, points: list[tuple[int, int]]) -> torch.Tensor:
    """The (1, 1 + n, S, S) masks of the blobs under `points`, as the studio builds them."""
    return code_masks([region_at(rough, x, y) for x, y in points], SIZE)


def region_codes(model: FaceModel, n: int, seed: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 1 + n, model.arch.z_dim, generator=g)


def full_region_face(model: FaceModel, rough: np.ndarray, codes, noise, masks) -> torch.Tensor:
    with torch.inference_mode():
        return model.generator(cond(rough), codes, noise=noise, masks=masks)


@pytest.mark.parametrize("arch", list(REGION_MODELS))
@pytest.mark.parametrize("fraction", [0.01, 0.1])
def test_region_styles_follow_strokes(arch, fraction):
    """Strokes that reshape the restyled blobs (their masks move with them) and strokes
    elsewhere: every face equals a full redraw with the new masks."""
    model = tiny_model(**REGION_MODELS[arch])
    _, noise = randomness(model, 5)
    codes = region_codes(model, 2)
    points = [(12, 20), (50, 40)]
    engine = IncrementalGenerator(model.generator)
    rough = start_rough(3)
    canvas = engine.capture(cond(rough), codes, noise, masks=region_masks(rough, points))
    assert_same(
        canvas.face, full_region_face(model, rough, codes, noise, region_masks(rough, points))
    )
    rng = np.random.default_rng(int(fraction * 1000))
    for i, start in enumerate([points[0], None, points[1]]):
        rough = brush_stroke(rough, fraction, COLOURS[i], rng, start=start)
        masks = region_masks(rough, points)
        how = engine.redraw(canvas, cond(rough), masks)
        assert how.incremental
        assert how.recomputed < 1 or arch == "z every layer"  # there a moved mask moves the start
        assert_same(canvas.face, full_region_face(model, rough, codes, noise, masks))


def test_a_region_mask_change_alone_is_redrawn():
    """The same rough, a region grown by another blob: only the masks moved, and the face is
    the full redraw's (ignoring the masks would leave the old region's style)."""
    model = tiny_model()
    _, noise = randomness(model, 6)
    codes = region_codes(model, 1)
    rough = start_rough(4)
    engine = IncrementalGenerator(model.generator)
    small = torch.zeros(1, 2, SIZE, SIZE)
    small[:, 0], small[:, 1, 8:20, 8:20] = 1, 1
    small[:, 0, 8:20, 8:20] = 0
    grown = small.clone()
    grown[:, 1, 8:20, 8:30], grown[:, 0, 8:20, 8:30] = 1, 0
    canvas = engine.capture(cond(rough), codes, noise, masks=small)
    how = engine.redraw(canvas, cond(rough), grown)
    assert how.changed == 0 and 0 < how.recomputed < 1
    assert_same(canvas.face, full_region_face(model, rough, codes, noise, grown))
    stale = full_region_face(model, rough, codes, noise, small)
    assert (canvas.face - stale).abs().max().item() > 10 * LEVEL


def test_masks_must_match_the_canvas():
    model = tiny_model()
    z, noise = randomness(model)
    engine = IncrementalGenerator(model.generator)
    canvas = engine.capture(cond(start_rough()), z, noise)
    with pytest.raises(ValueError, match="region styles"):
        engine.redraw(canvas, cond(start_rough()), torch.ones(1, 1, SIZE, SIZE))
