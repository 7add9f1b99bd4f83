"""VDVAE latent space and generator: tied to the published architecture (openai/vdvae hps.py, README
parameter counts) and to Brain-Diffuser's use of it (vdvae_extract_features.py, vdvae_reconstruct_images.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodecode._core.errors import MissingFileError, OfflineError, ShapeMismatchError, UnsafeCheckpointError
from neurodecode.latents import available_spaces, get_space
from neurodecode.latents._vdvae_net import IMAGENET64, TINY, VDVAEConfig
from neurodecode.latents.vdvae import WEIGHTS_FILE, WEIGHTS_URL, build_vdvae, convert_vdvae_checkpoint, load_vdvae


# ------------------------------------------------------------------ the published architecture, counted independently
def _blocks(spec):
    """openai/vdvae block strings, read here on their own: RxN (N blocks), RdK / RmM (one block)."""
    out = []
    for item in spec.split(","):
        if "x" in item:
            res, n = item.split("x")
            out += [int(res)] * int(n)
        else:
            out.append(int(item.replace("m", "d").split("d")[0]))
    return out


def _bottleneck(c_in, mid, c_out, res):
    k2 = 9 if res > 2 else 1  # 3x3 convs only above 2 x 2
    return (c_in * mid + mid) + 2 * (mid * mid * k2 + mid) + (mid * c_out + c_out)


def _published_count(width, zdim, enc, dec, mixtures=10, no_bias_above=64, bottleneck=0.25):
    """Parameters of a VDVAE from its hps (every conv has a bias)."""
    w, mid = width, int(width * bottleneck)
    n = 3 * w * 9 + w + sum(_bottleneck(w, mid, w, r) for r in _blocks(enc))
    for r in _blocks(dec):
        n += _bottleneck(2 * w, mid, 2 * zdim, r) + _bottleneck(w, mid, 2 * zdim + w, r) + (zdim * w + w)
        n += _bottleneck(w, mid, w, r)
    n += sum(w * r * r for r in sorted(set(_blocks(dec))) if r <= no_bias_above)
    n += 2 * w + (w * mixtures * 10 + mixtures * 10)
    return n


def _count(config):
    net = build_vdvae(config, device="meta")
    return sum(p.numel() for p in net.parameters()), net


@pytest.mark.parametrize("config, published", [
    # openai/vdvae hps.py + README: "125M parameter model" (ImageNet 64), "119M" (ImageNet 32), "39M" (CIFAR-10)
    (IMAGENET64, 125e6),
    (VDVAEConfig(image_size=32, dec_blocks="1x2,4m1,4x4,8m4,8x9,16m8,16x19,32m16,32x40",
                 enc_blocks="32x15,32d2,16x9,16d2,8x8,8d2,4x6,4d4,1x6", n_latent_layers=31), 119e6),
    (VDVAEConfig(image_size=32, width=384, dec_blocks="1x1,4m1,4x2,8m4,8x5,16m8,16x10,32m16,32x21",
                 enc_blocks="32x11,32d2,16x6,16d2,8x6,8d2,4x3,4d4,1x3", n_latent_layers=10), 39e6),
])
def test_parameter_count_is_the_published_one(config, published):
    got, _ = _count(config)
    assert got == _published_count(config.width, config.zdim, config.enc_blocks, config.dec_blocks)
    assert abs(got - published) < 0.5e6, got  # the README rounds to the million


def test_imagenet64_is_the_published_config_and_31_layers_are_91168_dims():
    # hps.py imagenet64 (= imagenet32 with 64 px strings): width 512, zdim 16, bottleneck 0.25, 10 mixtures
    assert (IMAGENET64.width, IMAGENET64.zdim, IMAGENET64.bottleneck_multiple, IMAGENET64.num_mixtures) == (512, 16, 0.25, 10)
    assert IMAGENET64.enc_blocks == "64x11,64d2,32x20,32d2,16x9,16d2,8x8,8d2,4x7,4d4,1x5"
    assert IMAGENET64.dec_blocks == "1x2,4m1,4x3,8m4,8x7,16m8,16x15,32m16,32x31,64m32,64x12"
    # data.py imagenet64 input normalisation
    assert IMAGENET64.input_shift == pytest.approx(-115.92961967) and IMAGENET64.input_scale == pytest.approx(1 / 69.37404)
    _, net = _count(IMAGENET64)
    assert len(net.decoder.blocks) == 75 and net.n_features == 91168
    # Brain-Diffuser vdvae_reconstruct_images.py: the per-layer sizes of the 31 regressed layers
    reference = [2**4] * 2 + [2**8] * 4 + [2**10] * 8 + [2**12] * 16 + [2**14]
    assert [int(np.prod(s)) for s in net.layout] == reference and sum(reference) == 91168
    space = get_space("vdvae", weights="random", device="meta")
    assert space.shape == (91168,) and space.image_size == 64


def test_registered_with_a_tiny_twin():
    assert "vdvae" in available_spaces(tiny=False) and "vdvae-tiny" in available_spaces(tiny=True)
    _, tiny = _count(TINY)
    assert tiny.n_features == 4 * (1 + 2 * 16 + 3 * 64 + 256) == 1924
    assert TINY.width not in (16, 24, 32, 40, 48, 64)  # distinct from the other tiny components


# ------------------------------------------------------------------ tiny tier: encode / decode
@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (7, 40, 36, 3), dtype=np.uint8)


def test_encode_decode_shapes_and_reference_resize(images):
    from PIL import Image

    space = get_space("vdvae-tiny", batch_size=3)
    z = space.encode_images(images)
    assert z.shape == (7, 1924) and z.dtype == np.float32 and np.isfinite(z).all()
    # the reference resizes with torchvision on PIL images: PIL bilinear to size x size, no crop
    resized = np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.Resampling.BILINEAR)) for im in images])
    np.testing.assert_allclose(space.encode_images(resized), z, atol=1e-5)
    np.testing.assert_allclose(space.encode_images(images.astype(np.float32) / 255.0), z, atol=1e-5)
    out = space.decode_latents(z, seeds=4)
    assert out.shape == (7, 32, 32, 3) and out.dtype == np.uint8
    with pytest.raises(ShapeMismatchError, match=r"\(n, 1924\)"):
        space.decode_latents(z[:, :100])


def test_posterior_samples_are_seeded_per_image(images):
    space = get_space("vdvae-tiny", batch_size=7)
    z = space.encode_images(images)
    again = get_space("vdvae-tiny", batch_size=2).encode_images(images[::-1].copy())[::-1]
    np.testing.assert_allclose(again, z, atol=1e-5)  # same image -> same draw, whatever the batch or order
    other = get_space("vdvae-tiny", sample_seed=1).encode_images(images)
    assert np.abs(other - z).mean() > 0.1
    means = get_space("vdvae-tiny", sample="mean")
    m = means.encode_images(images[:1])
    np.testing.assert_allclose(get_space("vdvae-tiny", sample="mean", sample_seed=9).encode_images(images[:1]), m)
    # the first layer's posterior does not depend on earlier draws: its samples average to its mean
    first = np.stack([get_space("vdvae-tiny", sample_seed=s).encode_images(images[:1])[0, :4] for s in range(48)])
    assert first.std(0).min() > 0.05
    np.testing.assert_allclose(first.mean(0), m[0, :4], atol=4 * first.std(0).max() / np.sqrt(48))


def test_generator_matches_the_space_and_is_seeded(images):
    from neurodecode.generate import get_generator

    space = get_space("vdvae-tiny")
    z = space.encode_images(images)
    gen = get_generator("vdvae", weights="tiny")
    a = gen.generate({"vae_latents": z}, seeds=5, batch_size=7)
    np.testing.assert_array_equal(a, space.decode_latents(z, seeds=5, batch_size=7))  # one network, one code path
    assert a.shape == (7, 32, 32, 3)
    np.testing.assert_array_equal(gen.generate({"vae_latents": z}, seeds=5, batch_size=7), a)
    split = gen.generate({"vae_latents": z}, seeds=5, batch_size=2)
    assert np.mean(np.abs(split.astype(int) - a.astype(int)) > 1) < 0.01  # per-item noise: batching does not matter
    assert np.mean(gen.generate({"vae_latents": z}, seeds=6, batch_size=7) != a) > 0.3
    big = gen.generate({"vae_latents": z[:2]}, seeds=5, size=64)
    assert big.shape == (2, 64, 64, 3)
    with pytest.raises(ShapeMismatchError, match="1924"):
        gen.generate({"vae_latents": z[:, :-1]})


# ------------------------------------------------------------------ the released checkpoint
def _reference_state(config, seed=0):
    """A state dict named as openai/vdvae's VAE.state_dict() (DDP 'module.' prefix), shapes from its hps."""
    g = torch.Generator().manual_seed(seed)
    w, mid, z = config.width, int(config.width * config.bottleneck_multiple), config.zdim
    sd = {}

    def conv(name, c_in, c_out, k):
        sd[f"module.{name}.weight"] = torch.randn((c_out, c_in, k, k), generator=g)
        sd[f"module.{name}.bias"] = torch.randn((c_out,), generator=g)

    def block(name, c_in, c_out, res):
        k = 3 if res > 2 else 1
        conv(f"{name}.c1", c_in, mid, 1), conv(f"{name}.c2", mid, mid, k)
        conv(f"{name}.c3", mid, mid, k), conv(f"{name}.c4", mid, c_out, 1)

    conv("encoder.in_conv", 3, w, 3)
    for i, r in enumerate(_blocks(config.enc_blocks)):
        block(f"encoder.enc_blocks.{i}", w, w, r)
    dec = _blocks(config.dec_blocks)
    for i, r in enumerate(dec):
        block(f"decoder.dec_blocks.{i}.enc", 2 * w, 2 * z, r)
        block(f"decoder.dec_blocks.{i}.prior", w, 2 * z + w, r)
        conv(f"decoder.dec_blocks.{i}.z_proj", z, w, 1)
        block(f"decoder.dec_blocks.{i}.resnet", w, w, r)
    for j, r in enumerate(sorted(set(dec))):
        sd[f"module.decoder.bias_xs.{j}"] = torch.randn((1, w, r, r), generator=g)
    conv("decoder.out_net.out_conv", w, config.num_mixtures * 10, 1)
    sd["module.decoder.gain"] = torch.randn((1, w, 1, 1), generator=g)
    sd["module.decoder.bias"] = torch.randn((1, w, 1, 1), generator=g)
    return sd


def test_reference_checkpoint_keys_map_onto_ours(tmp_path):
    ref = _reference_state(TINY)
    path = tmp_path / WEIGHTS_FILE
    torch.save(ref, path)
    with pytest.raises(UnsafeCheckpointError, match="convert_vdvae_checkpoint"):
        load_vdvae(path, config=TINY)
    out = convert_vdvae_checkpoint(tmp_path, allow_pickle=True, config=TINY)
    assert out.name == "imagenet64-iter-1600000-model-ema.safetensors"
    net, used = load_vdvae(tmp_path, config=TINY)  # the safetensors file is found first now
    assert used == out
    ours = net.state_dict()
    assert len(ours) == len(ref)
    pairs = {
        "encoder.in_conv.weight": "encoder.stem.weight",
        "encoder.enc_blocks.2.c3.weight": "encoder.blocks.2.conv3.weight",
        "decoder.dec_blocks.4.enc.c2.weight": "decoder.blocks.4.posterior.conv2.weight",
        "decoder.dec_blocks.4.prior.c4.bias": "decoder.blocks.4.prior.conv4.bias",
        "decoder.dec_blocks.0.z_proj.weight": "decoder.blocks.0.z_proj.weight",
        "decoder.dec_blocks.10.resnet.c1.weight": "decoder.blocks.10.resnet.conv1.weight",
        "decoder.bias_xs.3": "decoder.res_bias.3",
        "decoder.out_net.out_conv.weight": "decoder.out_conv.weight",
        "decoder.gain": "decoder.gain",
    }
    for theirs, mine in pairs.items():
        torch.testing.assert_close(ours[mine], ref["module." + theirs], rtol=0, atol=0)
    values = sorted(float(v.sum()) for v in ref.values())
    np.testing.assert_allclose(sorted(float(v.sum()) for v in ours.values()), values, rtol=1e-6)
    space = get_space("vdvae-tiny", weights=out)
    assert space.weights_sha256() is not None and space.encode_images(np.zeros((2, 32, 32, 3), np.uint8)).shape == (2, 1924)


def test_missing_weights_teach_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURODECODE_HOME", str(tmp_path))
    monkeypatch.setenv("NEURODECODE_OFFLINE", "1")
    with pytest.raises(OfflineError, match=WEIGHTS_FILE) as info:
        get_space("vdvae")
    assert WEIGHTS_URL in str(info.value) and str(tmp_path) in str(info.value)
    monkeypatch.setenv("NEURODECODE_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(MissingFileError, match="convert_vdvae_checkpoint"):
        load_vdvae(tmp_path / "nowhere")


def test_output_mixture_follows_the_reference_layout():
    """sample_from_discretized_mix_logistic (openai/vdvae vae_helpers.py), written here in NumPy, channel-last."""
    m, n, s = 3, 2, 5
    rng = np.random.default_rng(3)
    feats = rng.standard_normal((n, m * 10, s, s)).astype(np.float32)
    u_mix = rng.uniform(0.01, 0.99, (n, m, s, s)).astype(np.float32)
    u_pix = rng.uniform(0.01, 0.99, (n, 3, s, s)).astype(np.float32)
    net = build_vdvae(VDVAEConfig(image_size=4, width=8, zdim=2, enc_blocks="4x1,4d4,1x1", dec_blocks="1x1,4m1",
                                  num_mixtures=m, n_latent_layers=2))
    got = net.pixels_from_features(torch.from_numpy(feats), (torch.from_numpy(u_mix), torch.from_numpy(u_pix)))
    mode = net.pixels_from_features(torch.from_numpy(feats), None)

    lst = feats.transpose(0, 2, 3, 1)                       # (n, s, s, 10 m)
    logits, rest = lst[..., :m], lst[..., m:].reshape(n, s, s, 3, 3 * m)
    um, up = u_mix.transpose(0, 2, 3, 1), u_pix.transpose(0, 2, 3, 1)
    um, up = um * (1 - 2e-5) + 1e-5, up * (1 - 2e-5) + 1e-5
    for pick, draw, result in ((np.argmax(logits - np.log(-np.log(um)), -1), True, got),
                               (np.argmax(logits, -1), False, mode)):
        sel = np.eye(m)[pick][..., None, :]                 # (n, s, s, 1, m)
        means = (rest[..., :m] * sel).sum(-1)
        log_scales = np.maximum((rest[..., m:2 * m] * sel).sum(-1), -7.0)
        coeffs = (np.tanh(rest[..., 2 * m:]) * sel).sum(-1)
        x = means + np.exp(log_scales) * (np.log(up) - np.log(1 - up)) if draw else means
        x0 = np.clip(x[..., 0], -1, 1)
        x1 = np.clip(x[..., 1] + coeffs[..., 0] * x0, -1, 1)
        x2 = np.clip(x[..., 2] + coeffs[..., 1] * x0 + coeffs[..., 2] * x1, -1, 1)
        np.testing.assert_allclose(result.numpy().transpose(0, 2, 3, 1), np.stack([x0, x1, x2], -1), atol=1e-5)


def test_given_layers_are_used_and_the_rest_follow_the_temperature(images):
    from neurodecode.generate import get_generator

    z = get_space("vdvae-tiny").encode_images(images[:3])
    gen = get_generator("vdvae", weights="tiny")
    cold = [gen.generate({"vae_latents": z}, seeds=s, temperature=0.0, pixels="mode") for s in (0, 1)]
    np.testing.assert_array_equal(cold[0], cold[1])         # nothing random left
    other = gen.generate({"vae_latents": z[::-1].copy()}, seeds=0, temperature=0.0, pixels="mode")[::-1]
    np.testing.assert_array_equal(other, cold[0])
    assert not np.array_equal(gen.generate({"vae_latents": z + 1.0}, temperature=0.0, pixels="mode"), cold[0])
