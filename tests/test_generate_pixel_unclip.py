import numpy as np
import pytest
import torch

from neurodecode._core.errors import ShapeMismatchError, ValidationError
from neurodecode.generate._pixel_unclip import PixelUnCLIP, PixelUnCLIPConfig


def _tiny():
    torch.manual_seed(0)
    cfg = PixelUnCLIPConfig(image_size=16, cond_tokens=3, cond_dim=8, block_out_channels=(8, 16),
                            attention_head_dim=4, norm_num_groups=4)
    return PixelUnCLIP(cfg).eval()


def test_shapes_determinism_and_batch_equals_single():
    model = _tiny()
    tokens = np.random.default_rng(0).normal(size=(3, 3, 8)).astype(np.float32)
    a = model.generate({"clip_image_tokens": tokens}, seeds=[5, 6, 7], steps=3, batch_size=3)
    b = model.generate({"clip_image_tokens": tokens}, seeds=[5, 6, 7], steps=3, batch_size=1)
    assert a.shape == (3, 16, 16, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    c = model.generate({"clip_image_tokens": tokens}, seeds=[5, 6, 99], steps=3)
    assert np.array_equal(a[:2], c[:2]) and not np.array_equal(a[2], c[2])


def test_conditioning_changes_the_image():
    model = _tiny()
    with torch.no_grad():
        for p in model.parameters():  # make the condition matter at random init
            p.add_(0.05 * torch.randn_like(p))
    rng = np.random.default_rng(1)
    t1 = rng.normal(size=(1, 3, 8)).astype(np.float32)
    t2 = rng.normal(size=(1, 3, 8)).astype(np.float32)
    a = model.generate({"clip_image_tokens": t1}, seeds=0, steps=3)
    b = model.generate({"clip_image_tokens": t2}, seeds=0, steps=3)
    assert not np.array_equal(a, b)


def test_training_loss_decreases_on_one_batch():
    model = _tiny().train()
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    tok = torch.randn(4, 3, 8)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    gen = torch.Generator().manual_seed(0)
    first = model.training_loss(x, tok, generator=gen).item()
    for _ in range(30):
        loss = model.training_loss(x, tok, generator=torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_bad_latents_teach():
    model = _tiny()
    with pytest.raises(ShapeMismatchError, match=r"shape \(n, 3, 8\)"):
        model.generate({"clip_image_tokens": np.zeros((2, 4, 8), np.float32)})
    with pytest.raises(ShapeMismatchError, match="clip_image_tokens"):
        model.generate({"clip_image_embeds": np.zeros((2, 8), np.float32)})
    bad = np.zeros((1, 3, 8), np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValidationError, match="NaN"):
        model.generate({"clip_image_tokens": bad})
    with pytest.raises(ShapeMismatchError, match="seeds"):
        model.generate({"clip_image_tokens": np.zeros((2, 3, 8), np.float32)}, seeds=[1])


def test_save_load_round_trip_half_storage(tmp_path):
    model = _tiny()
    model.half().save_pretrained(tmp_path / "m")
    back = PixelUnCLIP.from_pretrained(tmp_path / "m")
    assert next(back.parameters()).dtype == torch.float32
    for (k, v), (k2, v2) in zip(model.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(v.float(), v2)
