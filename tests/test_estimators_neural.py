"""NeuralDecoder: sklearn etiquette, cross-subject fit/predict on a known-answer problem, teaching errors."""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode._core.errors import NotFittedError, ShapeMismatchError, ValidationError
from neurodecode.estimators._neural import NeuralDecoder
from neurodecode.metrics import identification_top1


def _simulate(n=120, d=5, sizes=(9, 11), seed=0):
    """Shared latent z; image tokens (n, 3, 8) and each subject's voxels are linear maps of z plus noise."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d))
    tokens = (z @ rng.standard_normal((d, 24)) / np.sqrt(d)).reshape(n, 3, 8).astype(np.float32)
    xs = {f"nsd/subj0{i + 1}": (z @ rng.standard_normal((d, p)) + 0.2 * rng.standard_normal((n, p))).astype(np.float32)
          for i, p in enumerate(sizes)}
    return xs, tokens


def test_init_only_stores_and_get_params_round_trips():
    est = NeuralDecoder("mindeye2", config="tiny", epochs=3, lr=1e-3)
    assert est.get_params()["decoder"] == "mindeye2" and est.get_params()["epochs"] == 3
    assert not hasattr(est, "model_")
    with pytest.raises(NotFittedError, match="fit"):
        est.predict(np.zeros((2, 9), np.float32), subject="nsd/subj01")


def test_mindbridge_cross_subject_fit_identifies_held_out_items():
    xs, tokens = _simulate()
    tr, te = slice(0, 90), slice(90, 120)
    est = NeuralDecoder("mindbridge", config={"base": "tiny", "width": 32, "embed_dropout": 0.0, "block_dropout": 0.0,
                                              "pool": "avg"}, epochs=25, batch_size=15, lr=3e-3)
    out = est.fit({s: x[tr] for s, x in xs.items()}, {s: {"clip_image_tokens": tokens[tr]} for s in xs})
    assert out is est and est.subjects_ == ["nsd/subj01", "nsd/subj02"] and est.n_voxels_ == {"nsd/subj01": 9,
                                                                                              "nsd/subj02": 11}
    assert est.target_names_ == ["clip_image_tokens"] and est.history_
    control = np.random.default_rng(1).permutation(30)
    for s, x in xs.items():
        pred = est.predict(x[te], subject=s)["clip_image_tokens"]
        assert pred.shape == (30, 3, 8) and pred.dtype == np.float32
        acc, chance = identification_top1(pred, tokens[te]), identification_top1(pred, tokens[te][control])
        assert acc >= 0.4 and acc > chance + 0.25, (s, acc, chance)
    with pytest.raises(ShapeMismatchError, match="nsd/subj02"):
        est.predict(xs["nsd/subj01"][te], subject="nsd/subj02")
    with pytest.raises(ValidationError, match="subject"):
        est.predict(xs["nsd/subj01"][te])


def test_mindeye2_single_subject_array_input_names_its_target():
    xs, tokens = _simulate(n=40)
    est = NeuralDecoder("mindeye2", config="tiny", epochs=2, batch_size=8).fit(
        xs["nsd/subj01"], {"clip_vit_l_tokens": tokens}, subject="nsd/subj01")
    pred = est.predict(xs["nsd/subj01"][:5])
    assert pred["clip_vit_l_tokens"].shape == (5, 3, 8) and est.model_.config.target_tokens == [3, 8]


def test_fit_refuses_inconsistent_inputs():
    xs, tokens = _simulate(n=20)
    est = NeuralDecoder("mindbridge", config="tiny", epochs=1)
    with pytest.raises(ValidationError, match="subject"):
        est.fit(xs["nsd/subj01"], {"clip_image_tokens": tokens})
    with pytest.raises(ShapeMismatchError, match="one target per trial"):
        est.fit(xs["nsd/subj01"], {"clip_image_tokens": tokens[:7]}, subject="nsd/subj01")
    with pytest.raises(ValidationError, match="clip_image_tokens"):
        est.fit(xs["nsd/subj01"], {"image": tokens}, subject="nsd/subj01")
    with pytest.raises(ValidationError, match="per subject"):
        est.fit(xs, {"clip_image_tokens": tokens})
