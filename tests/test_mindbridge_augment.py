"""Augmented training targets (MindBridge's img_augment, MindEye2's blur_augs): the transforms against independent
formulas and the reference's probabilities, seeded views embedded once, and one view drawn per sample and step."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import pytest
import torch

from neurodecode.latents import get_space
from neurodecode.latents._augment import AugmentedStimuli, augment_image, hsv_to_rgb, rgb_to_hsv, view_seed

RNG = np.random.default_rng(0)
PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


def test_hsv_matches_colorsys():
    x = torch.rand(3, 5, 7, dtype=torch.float64)
    hsv = rgb_to_hsv(x)
    for i, j in [(0, 0), (2, 3), (4, 6)]:
        want = colorsys.rgb_to_hsv(*x[:, i, j].tolist())
        np.testing.assert_allclose(hsv[:, i, j].numpy(), want, atol=1e-6)
    torch.testing.assert_close(hsv_to_rgb(hsv), x)


def test_sharpness_is_pils():
    from PIL import Image, ImageEnhance

    from neurodecode.latents._augment import _sharpness

    img = (RNG.random((9, 11, 3)) * 255).astype(np.uint8)
    ours = _sharpness(torch.from_numpy(img).permute(2, 0, 1).double() / 255.0, 1.15)
    pil = np.asarray(ImageEnhance.Sharpness(Image.fromarray(img)).enhance(1.15)).astype(np.float64) / 255.0
    np.testing.assert_allclose(ours.permute(1, 2, 0).numpy(), pil, atol=2.5 / 255)  # PIL rounds to uint8 twice


def _fractions(name: str, n: int = 700) -> tuple[float, float]:
    img = (RNG.random((16, 16, 3)) * 255).astype(np.uint8)
    same = gray = 0
    for s in range(n):
        v = augment_image(img, name, view_seed(7, 1, s), size=16)
        same += bool(np.array_equal(v, img))
        gray += bool((v[..., 0] == v[..., 1]).all() and (v[..., 1] == v[..., 2]).all())
    return same / n, gray / n


def test_mindbridge_probabilities_are_the_references():
    same, gray = _fractions("mindbridge")
    # src/data.py: crop p 0.3, six photometric transforms at p 0.2 each, grayscale p 0.2; an image of the view
    # size is unchanged only when none fires
    assert same == pytest.approx(0.7 * 0.8 ** 7, abs=0.04)
    assert gray == pytest.approx(0.2, abs=0.045)


def test_mindeye2_blur_augs_probabilities_are_the_references():
    same, gray = _fractions("mindeye2")
    assert same == 0.0  # the 90% random crop always happens (p 1)
    assert gray == pytest.approx(0.1, abs=0.035)  # RandomGrayscale(p=0.1); the jitter's saturation stays >= 0.8


def test_views_are_seeded_batch_independent_and_differ():
    imgs = (RNG.random((3, 40, 50, 3)) * 255).astype(np.uint8)
    a = AugmentedStimuli(imgs, 4, "mindbridge", seed=5, size=32)
    assert len(a) == 12 and list(a.ids[:5]) == ["0:0", "0:1", "0:2", "0:3", "1:0"]
    full = a.read(0, 12)
    np.testing.assert_array_equal(a.read(3, 7), full[3:7])  # a view does not depend on its batch
    np.testing.assert_array_equal(AugmentedStimuli(imgs, 4, "mindbridge", seed=5, size=32).read(0, 12), full)
    other = AugmentedStimuli(imgs, 4, "mindbridge", seed=6, size=32).read(0, 12)
    assert not np.array_equal(other, full)
    assert len({v.tobytes() for v in full}) >= 10  # views of one image differ from each other
    assert a.fingerprint() != AugmentedStimuli(imgs, 4, "mindbridge", seed=6, size=32).fingerprint()


def test_embedded_views_differ_from_the_clean_embedding(tmp_path):
    from neurodecode.latents import embed_to_cache

    imgs = (RNG.random((3, 48, 48, 3)) * 255).astype(np.uint8)
    space = get_space("clip-vit-l-14-tokens-tiny")
    clean = space.encode_images(imgs)
    stim = AugmentedStimuli(imgs, 3, "mindbridge", seed=0)
    views = embed_to_cache(space, stim, tmp_path, dtype="float32").load(stim.ids).reshape(3, 3, *space.shape)
    for i in range(3):
        for k in range(3):
            assert np.abs(views[i, k] - clean[i]).max() > 1e-3
    np.testing.assert_allclose(views.reshape(9, *space.shape), space.encode_images(stim.read(0, 9)), rtol=1e-3,
                               atol=1e-4)


def test_training_draws_different_views_across_epochs():
    from neurodecode.recipes._fmri import _view_choice
    from neurodecode.train import MultiSubjectBatches

    views, ids = 4, np.array([3, 8, 11, 20, 31])
    table = np.arange(len(ids) * views, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)  # row number
    trials = np.repeat(ids, 2)  # every image seen twice
    data = {"s": {"x": np.arange(len(trials), dtype=np.float32)[:, None],
                  "image_tokens": _view_choice((ids, table), trials, views)}}
    source = MultiSubjectBatches(data, 5, subjects_per_step=1)
    chosen: dict[int, list[int]] = {}
    for epoch in range(6):
        for batch in source.epoch(epoch, seed=1):
            for x, row in zip(batch["x"][:, 0].tolist(), batch["image_tokens"][:, 0].tolist()):
                trial = int(x)
                block = int(np.searchsorted(ids, trials[trial])) * views
                assert block <= row < block + views  # a view of the trial's own image
                chosen.setdefault(trial, []).append(int(row))
    assert all(len(set(rows)) > 1 for rows in chosen.values())  # a sample sees several views over the epochs
    again = [b["image_tokens"] for b in source.epoch(2, seed=1)]  # a resumed run draws the same views
    redo = [b["image_tokens"] for b in source.epoch(2, seed=1)]
    assert all(torch.equal(a, b) for a, b in zip(again, redo))


@pytest.mark.slow
def test_mindbridge_recipe_trains_on_cached_views(tmp_path, monkeypatch):
    """`[latents] augment_views`: every training batch's image target is one of the cached views of its image."""
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    from neurodecode.cli import app
    from neurodecode.latents import FeatureCache
    from neurodecode.models.mindbridge import MindBridge
    from neurodecode.testing import make_nsd_fixture

    root = make_nsd_fixture(tmp_path / "nsd", subjects=(1, 2), n_sessions=1, seed=3)
    monkeypatch.setenv("NEURODECODE_CACHE", str(tmp_path / "cache"))
    seen: list = []
    step = MindBridge.training_step

    def spy(self, batch, i):
        seen.extend(p["image_tokens"] for p in (batch["parts"] if "parts" in batch else [batch]))
        return step(self, batch, i)

    monkeypatch.setattr(MindBridge, "training_step", spy)
    import neurodecode.recipes._fmri as fmri

    asked: dict = {}
    compute = fmri.compute_targets

    def record(root, tables, ids, **kw):
        for key in tables:
            asked.setdefault(key, set()).update(np.asarray(ids).tolist())
        return compute(root, tables, ids, **kw)

    monkeypatch.setattr(fmri, "compute_targets", record)
    recipe = Path(__file__).resolve().parents[1] / "pipelines" / "mindbridge_nsd.toml"
    res = CliRunner().invoke(app, ["train", str(recipe), "--data", str(root), "--out", str(tmp_path / "run"),
                                   "--preset", "tiny", "--device", "cpu", "--json", "--max-steps", "3",
                                   "--set", "latents.augment_views=2"])
    assert res.exit_code == 0, res.output
    feats = tmp_path / "cache" / "features"
    views = [FeatureCache(p.parent) for p in feats.glob("clip-vit-l-14-tokens-tiny@mindbridge-views/*/manifest.json")]
    clean = [FeatureCache(p.parent) for p in feats.glob("clip-vit-l-14-tokens-tiny/*/manifest.json")]
    assert len(views) == 1 and len(clean) == 1
    assert all(i.endswith((":0", ":1")) for i in views[0].ids.tolist())
    table = views[0].load(dtype="float32").reshape(len(views[0]), -1)
    clean_table = clean[0].load(dtype="float32").reshape(len(clean[0]), -1)
    for tokens in seen:
        rows = tokens.flatten(1).numpy()
        assert (np.abs(rows[:, None] - table[None]).max(-1).min(-1) < 1e-6).all()
        assert (np.abs(rows[:, None] - clean_table[None]).max(-1).min(-1) > 1e-4).all()
    # the clean image tokens are read for the test images only (training draws views): no training image's
    from neurodecode.data import load_nsd

    test_ids = set()
    for subject in (1, 2):
        t = load_nsd(root, subject, sessions=[1])
        test_ids |= set(t.stimulus_ids[t.split == "test"].tolist())
    assert asked["image_tokens"] == test_ids and asked["text_tokens"] > test_ids
    prov = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert prov["augment"] == {"views": 2, "seed": 0,
                               "targets": {"image_tokens": {"of": "image_tokens", "transform": "mindbridge"}}}


def test_recipe_check_rejects_a_negative_view_count():
    from neurodecode._core.errors import ValidationError
    from neurodecode._core.recipes import load_recipe
    from neurodecode.recipes import validate_recipe

    recipe = load_recipe(PIPELINES / "mindbridge_nsd.toml", overrides=["latents.augment_views=-1"])
    with pytest.raises(ValidationError, match="latents.augment_views"):
        validate_recipe(recipe)
    assert validate_recipe(load_recipe(PIPELINES / "mindbridge_nsd.toml"))["latents"]["augment_views"] == 4
