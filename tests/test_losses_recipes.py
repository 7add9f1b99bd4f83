import math

import pytest
import torch

from neurodecode._core.errors import ValidationError
from neurodecode._core.recipes import apply_overrides, load_recipe
from neurodecode.models.losses import clip_loss, mixco_batch, mixco_loss, soft_clip_loss


def test_clip_loss_hand_checked():
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # cosine sims: identity; logits = s * I; CE = log(1 + e^{-s}) per row
    s = 2.0
    expected = math.log(1 + math.exp(-s))
    assert clip_loss(b, b, logit_scale=s).item() == pytest.approx(expected, rel=1e-6)


def test_soft_clip_orthogonal_targets_equals_hard_clip():
    t = torch.eye(3)
    T = 0.125
    # soft labels of orthogonal targets are nearly one-hot, so SoftCLIP ~ CLIP at scale 1/T
    assert soft_clip_loss(t, t, T).item() == pytest.approx(clip_loss(t, t, 1 / T).item(), abs=1e-2)
    assert soft_clip_loss(t, t[[1, 2, 0]], T) > soft_clip_loss(t, t, T)


def test_mixco_reduces_to_clip_without_mixing():
    torch.manual_seed(0)
    b, t = torch.randn(7, 5), torch.randn(7, 5)
    perm = torch.arange(7)
    betas = torch.ones(7)
    assert mixco_loss(b, t, perm, betas, temperature=0.1).item() == pytest.approx(clip_loss(b, t, 10.0).item(), rel=1e-5)
    x = torch.randn(7, 9)
    mixed, perm, betas, select = mixco_batch(x, generator=torch.Generator().manual_seed(1))
    keep = ~select
    assert torch.allclose(mixed[keep], x[keep])


def test_recipe_preset_and_overrides(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('[train]\nepochs = 600\nlr = 3e-4\n[decoder]\nwidth = 2048\n[presets.tiny.decoder]\nwidth = 16\n')
    r = load_recipe(p, preset="tiny", overrides=["train.epochs=2", "data.subjects=[1, 2]", "generate.name=vd"])
    assert r["decoder"]["width"] == 16 and r["train"]["epochs"] == 2 and r["train"]["lr"] == 3e-4
    assert r["data"]["subjects"] == [1, 2] and r["generate"]["name"] == "vd"
    assert r["_source"]["preset"] == "tiny"
    with pytest.raises(ValidationError, match="preset: expected one of 'tiny', got 'huge'"):
        load_recipe(p, preset="huge")
    with pytest.raises(ValidationError, match="section.key=value"):
        apply_overrides({}, ["novalue"])
