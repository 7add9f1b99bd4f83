"""`neurodecode simulate nsd --encoder RUN OUT`: the written tree loads through load_nsd, its clean responses are the
encoder's predictions (standardised, scaled), and a ridge decoder fitted on it identifies test images above chance
and above its shuffled control."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from neurodecode.cli import app


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory):
    """A run folder in the layout the brain-encoder recipe writes: sub-01/encoder (+ space.json), sub-01/ridge."""
    import torch

    from neurodecode._core.files import write_json
    from neurodecode.models.brain_encoder import (
        RidgeBrainEncoder,
        RidgeEncoderConfig,
        TransformerBrainEncoder,
        roi_groups,
    )

    run = tmp_path_factory.mktemp("enc-run")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 50)
    mem, names = roi_groups(labels)
    torch.manual_seed(0)
    enc = TransformerBrainEncoder.tiny(membership=mem, roi_names=names)
    with torch.no_grad():
        enc.query_embed.weight.normal_()
        enc.fitted.fill_(True)
    enc.save_pretrained(run / "sub-01" / "encoder")
    write_json(run / "sub-01" / "encoder" / "space.json", {"space": "dinov2-base-q-tokens-tiny", "weights": None})
    ridge = RidgeBrainEncoder(RidgeEncoderConfig(n_voxels=50, feature_shape=(9, 28), space="dinov2-base-q-tokens-tiny"))
    with torch.no_grad():
        ridge.coef.copy_(torch.as_tensor(rng.standard_normal((252, 50)), dtype=torch.float32))
        ridge.fitted.fill_(True)
    ridge.save_pretrained(run / "sub-01" / "ridge")
    write_json(run / "sub-01" / "ridge" / "space.json", {"space": "dinov2-base-q-tokens-tiny", "weights": None})
    return run


@pytest.fixture(scope="module")
def simulated(tmp_path_factory, encoder_run):
    out = tmp_path_factory.mktemp("sim-from-enc")
    res = CliRunner().invoke(app, ["simulate", "nsd", str(out), "--encoder", str(encoder_run), "--subjects", "1",
                                   "--seed", "3", "--json"])
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout)


def test_tree_loads_and_holds_the_encoders_responses(simulated, encoder_run):
    from neurodecode.data import load_nsd, load_nsd_stimuli
    from neurodecode.latents import get_space
    from neurodecode.models.brain_encoder import TransformerBrainEncoder
    from neurodecode.simulate import load_truth

    out, summary = simulated
    root = out / "nsd"
    trials = load_nsd(root, 1, zscore=None, average_test_repeats=True)
    assert trials.n_features == 50  # the encoder's voxels, in an nsdgeneral-style mask
    model = json.loads((out / "truth" / "model.json").read_text())
    assert model["simulator"] == "encoder" and model["space"] == "dinov2-base-q-tokens-tiny"
    truth = load_truth(out, "subj01")
    # clean responses = the encoder's predictions for the stimuli, standardised per voxel then scaled
    enc = TransformerBrainEncoder.from_pretrained(encoder_run / "sub-01" / "encoder")
    ids = np.arange(len(truth["clean"]))[:40]
    pred = enc.predict(get_space("dinov2-base-q-tokens-tiny").encode_images(load_nsd_stimuli(root, ids)))
    r = [np.corrcoef(pred[:, v], truth["clean"][ids, v])[0, 1] for v in range(50)]
    assert min(r) > 0.999
    assert summary["ceiling"]["top1_retrieval"] > summary["ceiling"]["chance"]["top1_retrieval"]


def test_a_ridge_decoder_fitted_on_the_written_tree_beats_chance(simulated):
    from neurodecode.data import load_nsd, load_nsd_stimuli
    from neurodecode.latents import get_space
    from neurodecode.metrics import identification_with_control
    from neurodecode.models.ridge import ridge_fit, ridge_predict

    out, _ = simulated
    root = out / "nsd"
    trials = load_nsd(root, 1, average_test_repeats=True)  # per-session z-score, as the recipes read it
    space = get_space("dinov2-base-tiny")
    tr, te = trials.train, trials.test
    target_tr = space.encode_images(load_nsd_stimuli(root, tr.stimulus_ids))
    target_te = space.encode_images(load_nsd_stimuli(root, te.stimulus_ids))
    sol = ridge_fit(tr.X, target_tr, [1.0, 10.0, 100.0, 1000.0], cv="loo")
    pred = ridge_predict(te.X, sol).numpy()
    top1, control = identification_with_control(pred, target_te)
    chance = 1.0 / len(te)
    assert top1 > 3 * chance and top1 > control + chance


def test_encoder_option_is_for_nsd_and_the_ridge_baseline_works_too(tmp_path, encoder_run):
    runner = CliRunner()
    res = runner.invoke(app, ["simulate", "things-eeg2", str(tmp_path / "x"), "--encoder", str(encoder_run)])
    assert res.exit_code == 2 and "nsd only" in res.output
    from neurodecode.simulate._from_encoder import simulate_nsd_from_encoder

    result = simulate_nsd_from_encoder(tmp_path / "ridge", encoder_run, model="ridge", n_sessions=1, n_shared=20,
                                       formats=("hdf5",))
    assert result.data[1]["betas"].shape == (750, 50)
