"""`reconstruct --limit N` predicts the whole test set at once, then writes the first N items.

Brain-Diffuser (and Brain Captioning) re-standardise each prediction batch to the training latents'
statistics ("batch"): predicting only the first N items would change every latent with N, and N = 1 is
refused outright. Found by the real-architecture chain test of brain_captioning_nsd (limit=1).
"""

from pathlib import Path

import numpy as np
import pytest

from neurodecode.data import Trials
from neurodecode.recipes import load_recipe
from neurodecode.recipes._nsd_images import reconstruct_nsd

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


class _Seen(Exception):
    pass


class _SpyDecoder:
    """Records what predict_latents receives, then stops the run."""

    config = {"subject": "nsd/subj01"}

    def __init__(self):
        self.X = None

    def predict_latents(self, X, subject=None):
        self.X = np.asarray(X)
        raise _Seen


@pytest.mark.parametrize("limit", [1, 3])
def test_limit_predicts_every_test_item_then_keeps_the_first(tmp_path, limit):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((7, 9)).astype(np.float32)
    trials = Trials(X=X, stimulus_ids=np.arange(101, 108), subject="nsd/subj01", split=np.array(["test"] * 7))
    recipe = load_recipe(PIPELINES / "brain_diffuser_nsd.toml", preset="tiny")
    spy = _SpyDecoder()
    with pytest.raises(_Seen):
        reconstruct_nsd(recipe, tmp_path / "sim", 1, tmp_path / "run", tmp_path / "rec", trials=trials, decoder=spy,
                        limit=limit)
    np.testing.assert_array_equal(spy.X, X)  # all 7 items, not the first `limit`
