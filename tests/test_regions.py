"""Region styles: the style map in the generator, regions of a rough, and regional mixing."""

import numpy as np
import pytest
import torch

from spade.config import GeneratorArch
from spade.errors import UserError
from spade.networks import FaceModel, RandomStream
from spade.regions import (
    MAX_CODES,
    code_masks,
    components,
    random_region_masks,
    region_at,
    region_of_color,
)

SIZE = 64
LEVEL = 2 / 255  # one level in 255, in the generator's [-1, 1]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FaceModel(GeneratorArch(ngf=8, spade_hidden=8, z_dim=16, nef=8), SIZE).eval()


def _inputs(model, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    cond = torch.rand(batch, 3, SIZE, SIZE, generator=g) * 2 - 1
    z = torch.randn(batch, model.arch.z_dim, generator=g)
    noise = model.generator.draw_noise(RandomStream(g), batch, torch.device("cpu"))
    return cond, z, noise


@torch.no_grad()
def test_one_code_with_a_mask_of_ones_is_exactly_the_global_face(model):
    cond, z, noise = _inputs(model)
    plain = model.generator(cond, z, noise=noise)
    mapped = model.generator(cond, z[:, None], noise=noise, masks=torch.ones(2, 1, SIZE, SIZE))
    assert torch.equal(plain, mapped)


@torch.no_grad()
def test_the_same_code_in_two_regions_is_the_global_face(model):
    cond, z, noise = _inputs(model)
    half = torch.zeros(2, 1, SIZE, SIZE)
    half[..., :, : SIZE // 2 + 3] = 1  # not on a coarse cell's edge: the masks blend there
    split = model.generator(
        cond, torch.stack([z, z], 1), noise=noise, masks=torch.cat([half, 1 - half], 1)
    )
    assert (split - model.generator(cond, z, noise=noise)).abs().max() < 1e-5


@torch.no_grad()
def test_a_regions_code_changes_the_region_and_leaves_far_pixels_within_a_level(model):
    cond, z, noise = _inputs(model, batch=1)
    corner = torch.zeros(1, 1, SIZE, SIZE)
    corner[..., :16, :16] = 1
    other = torch.randn(1, model.arch.z_dim, generator=torch.Generator().manual_seed(7)) * 3
    base = model.generator(cond, z, noise=noise)
    mixed = model.generator(
        cond, torch.stack([z, other], 1), noise=noise, masks=torch.cat([1 - corner, corner], 1)
    )
    change = (mixed - base).abs().amax(1)[0]  # (S, S)
    assert change[:16, :16].mean() > 20 * LEVEL  # the region took the other style
    # the opposite corner, 32 px away: within a level (measured 0.8 levels at most; 3.3 at 32
    # px from the region in one axis only, as the 4×4 start's cells reach their neighbours)
    assert change[SIZE - 16 :, SIZE - 16 :].max() < LEVEL


def test_several_codes_need_masks(model):
    cond, z, noise = _inputs(model)
    with pytest.raises(ValueError, match="masks"):
        model.generator(cond, torch.stack([z, z], 1), noise=noise)


@torch.no_grad()
def test_the_encoder_pools_inside_a_mask(model):
    picture = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    whole, _ = model.encoder(picture)
    everywhere, _ = model.encoder(picture, torch.ones(2, 1, SIZE, SIZE))
    assert torch.allclose(whole, everywhere, atol=1e-5)
    top = torch.zeros(2, 1, SIZE, SIZE)
    top[..., :20, :] = 1
    inside, _ = model.encoder(picture, top)
    assert not torch.allclose(whole, inside, atol=1e-3)
    with pytest.raises(ValueError, match="at least one pixel"):
        model.encoder(picture, torch.zeros(2, 1, SIZE, SIZE))


@torch.no_grad()
def test_the_encoder_gives_each_region_its_code_and_an_empty_one_the_whole_picture(model):
    """Training's regional mixing codes: one per mask, as `forward` pools it alone."""
    picture = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    top = torch.zeros(2, 1, SIZE, SIZE)
    top[..., :20, :] = 1
    top[1] = 0  # the second picture has no mixed region
    mu, logvar = model.encoder.regions(picture, torch.cat([1 - top, top], 1))
    assert mu.shape == logvar.shape == (2, 2, model.arch.z_dim)
    whole, _ = model.encoder(picture)
    assert torch.allclose(mu[0, 0], model.encoder(picture[:1], 1 - top[:1])[0][0], atol=1e-5)
    assert torch.allclose(mu[0, 1], model.encoder(picture[:1], top[:1])[0][0], atol=1e-5)
    assert torch.allclose(mu[1], whole[1].expand(2, -1), atol=1e-5)


def test_with_the_encoder_a_mixed_face_is_painted_from_the_real_faces_own_region_codes(model):
    """In training, `mix` splits the real face's style into the codes of its parts; they sit
    near the whole face's code, where a random code would not."""
    picture = torch.rand(1, 3, SIZE, SIZE) * 2 - 1
    rough = torch.rand(1, 3, SIZE, SIZE) * 2 - 1
    mix = torch.zeros(1, 1, SIZE, SIZE)
    mix[..., :, : SIZE // 2] = 1
    model.train()
    try:
        _, mu, logvar = model(rough, style=picture, mix=mix, rng=RandomStream(torch.Generator()))
    finally:
        model.eval()
    assert mu.shape == logvar.shape == (1, 2, model.arch.z_dim)
    parts, _ = model.encoder.regions(picture, torch.cat([1 - mix, mix], 1))
    assert torch.allclose(mu, parts, atol=1e-5)


def _two_blobs() -> np.ndarray:
    """A backdrop (blue), two separate red blobs, and a green one touching the right one."""
    rough = np.zeros((16, 16, 3), np.uint8)
    rough[:] = (0, 0, 200)
    rough[2:6, 2:6] = (200, 0, 0)
    rough[10:14, 10:14] = (200, 0, 0)
    rough[10:14, 6:10] = (0, 200, 0)
    return rough


def test_a_region_is_one_connected_blob_of_one_colour():
    rough = _two_blobs()
    labels = components(rough)
    assert len(np.unique(labels)) == 4  # backdrop, two red blobs, one green
    assert labels[3, 3] != labels[12, 12]
    np.testing.assert_array_equal(components(rough), labels)  # the same rough, the same labels
    left = region_at(rough, 3, 3)
    assert left.sum() == 16 and left[2:6, 2:6].all()
    assert region_of_color(rough, (200, 0, 0)).sum() == 32  # both red blobs
    with pytest.raises(UserError, match="outside"):
        region_at(rough, 16, 0)
    with pytest.raises(UserError, match="#010203"):
        region_of_color(rough, (1, 2, 3))


def _labels_by_flood_fill(rough: np.ndarray) -> np.ndarray:
    """The definition, slowly: blobs numbered by colour, then by their first pixel in raster
    order, each filled from that pixel through its 4-neighbours of the same colour."""
    colour = [[tuple(px) for px in row] for row in rough]
    size = len(colour)
    blob = -np.ones((size, size), np.int64)
    starts = []  # (colour, first pixel) of each blob, found in raster order
    for y in range(size):
        for x in range(size):
            if blob[y, x] >= 0:
                continue
            blob[y, x] = len(starts)
            starts.append((colour[y][x], y * size + x))
            todo = [(y, x)]
            while todo:
                cy, cx = todo.pop()
                for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                    inside = 0 <= ny < size and 0 <= nx < size
                    if inside and blob[ny, nx] < 0 and colour[ny][nx] == colour[cy][cx]:
                        blob[ny, nx] = blob[y, x]
                        todo.append((ny, nx))
    order = sorted(range(len(starts)), key=lambda b: starts[b])
    rank = np.empty(len(starts), np.int64)
    rank[order] = np.arange(len(starts))
    return rank[blob]


@pytest.mark.parametrize("seed", range(6))
def test_labels_are_numbered_by_colour_then_first_pixel(seed):
    """Speckled roughs of few colours (many blobs, touching diagonally, wrapping round others)."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (3 + seed % 3, 3), dtype=np.uint8)
    rough = palette[rng.integers(0, len(palette), (24, 24))]
    rough[4:12, 4:20] = palette[0]  # a big blob among the speckles
    np.testing.assert_array_equal(components(rough), _labels_by_flood_fill(rough))
    np.testing.assert_array_equal(components(_two_blobs()), _labels_by_flood_fill(_two_blobs()))


def test_code_masks_sum_to_one_and_a_later_region_wins():
    a = np.zeros((8, 8), bool)
    a[:4] = True
    b = np.zeros((8, 8), bool)
    b[2:6] = True
    masks = code_masks([a, b], 8)
    assert masks.shape == (1, 3, 8, 8)
    assert torch.equal(masks.sum(1), torch.ones(1, 8, 8))
    assert masks[0, 1, :2].all() and masks[0, 2, 2:6].all() and masks[0, 0, 6:].all()
    with pytest.raises(UserError, match=f"at most {MAX_CODES - 1}"):
        code_masks([a] * MAX_CODES, 8)


def test_regional_mixing_picks_whole_regions_reproducibly():
    rough = torch.from_numpy(_two_blobs()).permute(2, 0, 1)[None].float() / 127.5 - 1
    rough = rough.repeat(16, 1, 1, 1)
    labels = components(_two_blobs())

    def draw(mix, seed=0):
        return random_region_masks(rough, mix, RandomStream(torch.Generator().manual_seed(seed)))

    assert not draw(0.0).any()
    masks = draw(1.0)
    assert torch.equal(masks, draw(1.0))
    for mask in masks[:, 0].numpy():
        for label in np.unique(labels):
            assert len(np.unique(mask[labels == label])) == 1  # a region is all in or all out
    assert 0 < masks.mean() < 1  # some regions in, some out
    assert not torch.equal(masks, draw(1.0, seed=1))
