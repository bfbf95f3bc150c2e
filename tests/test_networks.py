import pytest
import torch

from spade.config import (
    DiscriminatorArch,
    GeneratorArch,
    discriminator_parameters,
    generator_parameters,
)
from spade.networks import (
    FaceModel,
    MultiscaleDiscriminator,
    NoiseInjection,
    StyleEncoder,
    StyleMap,
    generator_channels,
    num_upsamplings,
)


def tiny(size: int, **kw) -> FaceModel:
    return FaceModel(GeneratorArch(ngf=4, spade_hidden=8, z_dim=16, nef=4, **kw), size)


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_generator_encoder_discriminator_shapes(size):
    torch.manual_seed(0)
    G = tiny(size, use_vae=True)
    D = MultiscaleDiscriminator(DiscriminatorArch(ndf=4, n_layers=4, num_d=2))
    rough = torch.rand(2, 3, size, size) * 2 - 1
    fake, mu, logvar = G(rough, style=rough)
    assert fake.shape == (2, 3, size, size)
    assert mu.shape == logvar.shape == (2, 16)
    assert fake.abs().max() <= 1 and torch.isfinite(fake).all()
    out = D(torch.cat([fake, rough], dim=1))
    assert len(out) == 2 and len(out[0]) == 5  # 4 layers + logits
    assert out[1][-1].shape[-1] < out[0][-1].shape[-1]  # second scale sees a smaller input
    assert all(torch.isfinite(t).all() for scale in out for t in scale)


def test_encoder_works_below_256():
    mu, logvar = StyleEncoder(GeneratorArch(ngf=4, spade_hidden=8, z_dim=16, nef=4), 64)(
        torch.randn(3, 3, 64, 64)
    )
    assert mu.shape == (3, 16) and torch.isfinite(logvar).all()


def test_channel_schedule_matches_nvlabs_at_256():
    assert generator_channels(GeneratorArch(ngf=64), 256) == [1024, 1024, 1024, 512, 256, 128, 64]
    assert num_upsamplings(256) == 6


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("size", [32, 128])
@pytest.mark.parametrize(
    "switches",
    [
        {},
        {"use_vae": False, "z_every_layer": False, "noise": False},
        {"z_every_layer": False},
        {"style_from": 16},
    ],
    ids=["all", "none", "vae-and-noise", "style-from-16"],
)
def test_parameter_counts_without_building_match_the_modules(size, switches):
    """`spade check` estimates training memory from these counts before any network exists."""
    arch = GeneratorArch(ngf=3, spade_hidden=5, z_dim=7, nef=2, **switches)
    assert generator_parameters(arch, size) == count(FaceModel(arch, size))
    for disc in (DiscriminatorArch(ndf=4, num_d=2, n_layers=4), DiscriminatorArch(ndf=300)):
        assert discriminator_parameters(disc) == count(MultiscaleDiscriminator(disc))


@torch.no_grad()
def test_with_style_from_16_z_leaves_the_coarse_layers_to_the_rough():
    """The 4×4 start is a learned constant and the 4 and 8 px blocks have no style term, so two
    codes give the same 8 px features and different faces."""
    torch.manual_seed(0)
    model = FaceModel(GeneratorArch(ngf=4, spade_hidden=8, z_dim=8, nef=4, style_from=16), 32)
    g = model.eval().generator
    assert g.fc is None and g.styled == [False, False, True, True]
    assert [b.norm_0.style is None for b in g.blocks] == [True, True, False, False]
    cond = torch.rand(1, 3, 32, 32) * 2 - 1
    z_a, z_b = torch.randn(2, 1, 8).unbind(0)
    seen = []
    hook = g.blocks[1].register_forward_hook(lambda m, i, o: seen.append(o))
    faces = [
        g(cond, z, noise=[torch.zeros(1, 1, r, r) for r in (4, 8, 16, 32)]) for z in (z_a, z_b)
    ]
    hook.remove()
    assert torch.equal(seen[0], seen[1]) and not torch.equal(faces[0], faces[1])


@pytest.mark.parametrize(
    ("style_from", "z_every_layer", "words"),
    [(12, True, "power of two"), (16, False, "needs z_every_layer")],
)
def test_a_style_that_reaches_no_layer_is_refused(style_from, z_every_layer, words):
    with pytest.raises(ValueError, match=words):
        GeneratorArch(style_from=style_from, z_every_layer=z_every_layer)


@pytest.mark.parametrize("size", [16, 48, 100])
def test_bad_sizes_are_rejected(size):
    with pytest.raises(ValueError, match="power of two"):
        num_upsamplings(size)


def test_gradient_reaches_noise_weights():
    torch.manual_seed(0)
    G = tiny(32)
    rough = torch.rand(2, 3, 32, 32) * 2 - 1
    fake, _, _ = G(rough)
    fake.square().mean().backward()
    noise = [m for m in G.modules() if isinstance(m, NoiseInjection)]
    assert len(noise) == len(G.generator.blocks)
    assert all(m.weight.item() == 0 for m in noise)  # initialised to 0
    assert all(m.weight.grad is not None and m.weight.grad.abs() > 0 for m in noise)


def test_no_noise_option():
    G = tiny(32, noise=False).eval()
    rough = torch.rand(1, 3, 32, 32)
    z = torch.randn(1, 16)
    assert not any(isinstance(m, NoiseInjection) for m in G.modules())
    assert torch.equal(G(rough, z=z)[0], G(rough, z=z)[0])


def test_z_changes_the_output():
    torch.manual_seed(0)
    G = tiny(32).eval()
    rough = torch.rand(1, 3, 32, 32)
    a = G(rough, z=torch.randn(1, 16))[0]
    b = G(rough, z=torch.randn(1, 16))[0]
    assert not torch.allclose(a, b)


@pytest.mark.gpu
def test_bf16_channels_last_forward(gpu_device):
    G = tiny(64).to(gpu_device, memory_format=torch.channels_last)
    rough = (torch.rand(2, 3, 64, 64, device=gpu_device) * 2 - 1).contiguous(
        memory_format=torch.channels_last
    )
    with torch.autocast(gpu_device.type, dtype=torch.bfloat16):
        fake, _, _ = G(rough)
    assert fake.shape == (2, 3, 64, 64) and torch.isfinite(fake.float()).all()


def test_z_every_layer_modulates_every_spade_layer():
    torch.manual_seed(0)
    G = tiny(32, z_every_layer=True).eval()
    spades = [m for m in G.modules() if m.__class__.__name__ == "SPADE"]
    assert spades and all(m.style is not None for m in spades)
    rough = torch.rand(1, 3, 32, 32) * 2 - 1
    z = torch.randn(1, 16)
    a = G(rough, z=z)[0]
    G.generator.fc.weight.data.zero_()  # cut z's path through the 4×4 start…
    G.generator.fc.bias.data.zero_()
    b = G(rough, z=z)[0]
    c = G(rough, z=torch.randn(1, 16))[0]
    assert not torch.allclose(a, b) and not torch.allclose(b, c)  # …z still reaches the face


def test_plain_architecture_is_unchanged_by_the_option():
    names = {n for n, _ in tiny(32, z_every_layer=False, use_vae=False).named_parameters()}
    assert not any("style" in n or "mapping" in n for n in names)


def test_the_traced_per_region_sum_is_the_product_over_codes():
    """Exported graphs write Σ_k mask_k·Linear(w_k) as a base plus one multiply-add per region:
    the same map wherever the masks sum to 1, at every block size."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 3, 8, generator=g)
    masks = torch.rand(2, 3, 16, 16, generator=g)
    style = StyleMap.build(w, masks / masks.sum(1, keepdim=True), [4, 16])
    linear = torch.nn.Linear(8, 6)
    for size in (4, 16):
        eager = style.modulation(linear, size)
        per_region = StyleMap._per_region(linear(w), style.masks[size])
        assert eager.shape == per_region.shape == (2, 6, size, size)
        torch.testing.assert_close(per_region, eager, rtol=0, atol=1e-5)
