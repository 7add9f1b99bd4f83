"""The VICRegL ConvNeXt-XL space (MindEye2's low-level teacher): real-size counts against the published and an
independent implementation (timm), the forward against timm's ConvNeXt and the projector's formula, weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neurodecode._core.errors import MetadataMismatchError, UnsafeCheckpointError, ValidationError
from neurodecode.latents import get_space
from neurodecode.latents.convnext import (
    CONVNEXT_XL,
    MEAN,
    SAFETENSORS_FILE,
    STD,
    TINY,
    WEIGHTS_FILE,
    build_convnext,
    convert_convnext_checkpoint,
)


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_real_size_counts_equal_the_published_convnext_xl_and_timm():
    import timm

    net = build_convnext(CONVNEXT_XL, device="meta")
    backbone = _count(net.backbone)
    # ConvNeXt-XL as published (Liu et al. 2022; timm convnext_xlarge): 350.2 M parameters with one layer-scale
    # gain per channel of each of its 36 blocks and the 1000-class head; VICRegL trains without layer scale or head
    layer_scale = sum(d * n for d, n in zip((256, 512, 1024, 2048), (3, 3, 27, 3)))
    head = 2048 * 1000 + 1000
    assert round((backbone + layer_scale + head) / 1e5) == 3502
    with torch.device("meta"):
        independent = timm.create_model("convnext_xlarge", pretrained=False)
    assert backbone + layer_scale + head == _count(independent)
    # VICRegL's maps projector "2048-512-512-512" (Linear, LayerNorm, ReLU, Linear, LayerNorm, ReLU, Linear no bias)
    assert _count(net.maps_projector) == (2048 * 512 + 512) + 2 * 512 + (512 * 512 + 512) + 2 * 512 + 512 * 512
    space = get_space("vicregl-convnext-xl", weights="random", device="meta")
    assert space.shape == (49, 512)  # MindEye2's 49 x 512 tokens at 224 px


def _to_timm(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        k = k.removeprefix("backbone.")
        if k.startswith("downsample_layers.0."):
            k = "stem." + k.removeprefix("downsample_layers.0.")
        elif k.startswith("downsample_layers."):
            i, rest = k.removeprefix("downsample_layers.").split(".", 1)
            k = f"stages.{i}.downsample.{rest}"
        elif k.startswith("stages."):
            i, j, rest = k.removeprefix("stages.").split(".", 2)
            rest = rest.replace("dwconv", "conv_dw").replace("pwconv1", "mlp.fc1").replace("pwconv2", "mlp.fc2")
            k = f"stages.{i}.blocks.{j}.{rest}"
        elif k.startswith("norm."):
            k = "head." + k
        else:
            continue
        out[k] = v
    return out


def test_forward_equals_timm_convnext_and_the_projector_formula():
    from timm.models.convnext import ConvNeXt

    net = build_convnext(TINY, seed=1).eval()
    ref = ConvNeXt(depths=TINY.depths, dims=TINY.dims, num_classes=0, ls_init_value=1.0).eval()  # gains 1: no scale
    missing, unexpected = ref.load_state_dict(_to_timm(net.state_dict()), strict=False)
    assert not unexpected and all(k.endswith("gamma") for k in missing)
    x = torch.randn(3, 3, 128, 96)  # non-square: a transposed axis would show
    with torch.no_grad():
        feats, maps = net(x)
        fmap = ref.head.norm(ref.forward_features(x))  # (n, C, h, w), LayerNorm over channels
    assert feats.shape == (3, 4 * 3, 22)
    torch.testing.assert_close(feats, fmap.flatten(2).transpose(1, 2), rtol=1e-4, atol=1e-5)
    p = net.maps_projector
    h = F.relu(F.layer_norm(F.linear(feats, p[0].weight, p[0].bias), (6,), p[1].weight, p[1].bias, 1e-5))
    h = F.relu(F.layer_norm(F.linear(h, p[3].weight, p[3].bias), (6,), p[4].weight, p[4].bias, 1e-5))
    torch.testing.assert_close(maps, F.linear(h, p[6].weight), rtol=1e-5, atol=1e-6)


def test_pixels_use_the_reference_normalisation():
    space = get_space("vicregl-convnext-xl-tiny")
    img = (np.random.default_rng(0).random((2, 128, 128, 3)) * 255).astype(np.uint8)
    want = (img.transpose(0, 3, 1, 2) / 255.0 - np.reshape(MEAN, (1, 3, 1, 1))) / np.reshape(STD, (1, 3, 1, 1))
    np.testing.assert_allclose(space.pixels(img).numpy(), want, rtol=1e-5, atol=1e-5)
    assert STD[0] == 0.228  # Train.ipynb's value, kept


def _released(tmp_path, state, backbone_only=False):
    if backbone_only:
        model = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        path = tmp_path / "convnext_xlarge_alpha0.75.pth"
        torch.save(model, path)
        return path
    model = {"module." + k: v for k, v in state.items()}
    model["module.projector.0.weight"] = torch.randn(8, 22)  # the expander and classifier are not read
    model["module.classifier.weight"] = torch.randn(5, 22)
    opt = {"state": {}, "param_groups": [{"lr": 0.1, "weight_decay": 1e-6, "params": [0, 1]}]}
    path = tmp_path / WEIGHTS_FILE
    torch.save({"epoch": 300, "model": model, "optimizer": opt}, path)
    return path


def test_released_checkpoint_needs_allow_pickle_and_converts_once(tmp_path):
    net = build_convnext(TINY, seed=2).eval()
    path = _released(tmp_path, net.state_dict())
    img = (np.random.default_rng(1).random((3, 150, 130, 3)) * 255).astype(np.uint8)
    with pytest.raises(UnsafeCheckpointError, match="allow_pickle"):
        get_space("vicregl-convnext-xl-tiny", weights=path)
    space = get_space("vicregl-convnext-xl-tiny", weights=path, allow_pickle=True)
    with torch.no_grad():
        want = net(space.pixels(img))[1].numpy()
    np.testing.assert_allclose(space.encode_images(img), want, rtol=1e-5, atol=1e-6)
    out = convert_convnext_checkpoint(path, allow_pickle=True, config=TINY)
    assert out.name == SAFETENSORS_FILE and out.parent == tmp_path
    again = get_space("vicregl-convnext-xl-tiny", weights=tmp_path)  # the folder: safetensors first, no pickle
    assert again._weights_file == out
    np.testing.assert_allclose(again.encode_images(img), want, rtol=1e-5, atol=1e-6)


def test_backbone_only_release_gives_backbone_features_and_missing_keys_are_named(tmp_path):
    net = build_convnext(TINY, seed=3).eval()
    path = _released(tmp_path, net.state_dict(), backbone_only=True)
    with pytest.raises(ValidationError, match="fullckpt"):
        get_space("vicregl-convnext-xl-tiny", weights=path, allow_pickle=True)
    space = get_space("vicregl-convnext-xl-tiny", weights=path, allow_pickle=True, output="backbone")
    img = (np.random.default_rng(2).random((2, 128, 128, 3)) * 255).astype(np.uint8)
    assert space.shape == (16, 22)
    with torch.no_grad():
        np.testing.assert_allclose(space.encode_images(img), net(space.pixels(img))[0].numpy(), rtol=1e-5, atol=1e-6)
    state = net.state_dict()
    state.pop("backbone.stages.2.1.pwconv1.weight")
    broken = _released(tmp_path / "b" if (tmp_path / "b").mkdir() is None else tmp_path, state)
    with pytest.raises(MetadataMismatchError, match="stages.2.1.pwconv1.weight"):
        get_space("vicregl-convnext-xl-tiny", weights=broken, allow_pickle=True)
