"""The takagi_nsd and brain_captioning_nsd recipes (recipes/_multi_input.py): validation, ROI groups, outputs.

Outside truth: the voxel count of each ROI group is counted here from the simulated ``streams`` atlas with nibabel
(Takagi's ROIs: ``early`` for the init latent, ``ventral`` for the text condition, six streams for BLIP and DPT);
the captions and depth maps written by ``reconstruct`` equal the captioner / depth decoder run here on the ridges'
predictions; depth maps lie in [-1, 1] at 64 x 64 (Takagi's c_concat).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from neurodecode._core.errors import ValidationError
from neurodecode.recipes import load_recipe, validate_recipe

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
STREAMS6 = ["early", "ventral", "midventral", "midlateral", "lateral", "parietal"]


def _recipe(name="takagi_nsd", overrides=()):
    return load_recipe(PIPELINES / f"{name}.toml", preset="tiny", overrides=list(overrides))


# ------------------------------------------------------------------------------------------ fast
def test_takagi_recipe_values_follow_the_reference():
    rec = validate_recipe(load_recipe(PIPELINES / "takagi_nsd.toml"))
    dec, gen, data = rec["decoder"], rec["generate"], rec["data"]
    assert dec["rois"] == {"vae_latents": ["early"], "clip_text_tokens": ["ventral"],
                           "blip_image_tokens": STREAMS6, "dpt_hidden_states": STREAMS6}
    assert dec["alphas"]["vae_latents"] == [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]  # ridge.py, CVPR targets
    assert dec["alphas"]["blip_image_tokens"] == [1e4, 2e4, 4e4]
    assert data["rois"] == STREAMS6 and data["average_train_repeats"] is False
    assert (gen["samples"], gen["steps"], gen["guidance"], gen["seed"]) == (5, 50, 5.0, 42)
    assert gen["options"]["strength"] == 0.8
    spaces = {k: v["space"] for k, v in rec["latents"].items() if isinstance(v, dict)}
    assert spaces == {"vae_latents": "sd14-vae-320", "clip_text_tokens": "sd14-text-cond",
                      "blip_image_tokens": "blip-base-capfilt-tokens", "dpt_hidden_states": "dpt-large-hidden"}


def test_groups_share_one_decomposition_per_roi_set():
    from neurodecode.recipes._multi_input import _groups

    groups = _groups(["vae_latents", "clip_text_tokens", "blip_image_tokens", "dpt_hidden_states"],
                     {"vae_latents": ["early"], "clip_text_tokens": ["ventral"],
                      "blip_image_tokens": STREAMS6, "dpt_hidden_states": STREAMS6})
    assert groups == {"vae_latents": (["vae_latents"], ("early",)),
                      "clip_text_tokens": (["clip_text_tokens"], ("ventral",)),
                      "blip_image_tokens+dpt_hidden_states": (["blip_image_tokens", "dpt_hidden_states"],
                                                              tuple(STREAMS6))}
    # no [decoder.rois]: every target in one group (Brain Captioning: one decomposition for all)
    assert list(_groups(["git_image_tokens", "vae_latents"], {})) == ["git_image_tokens+vae_latents"]


@pytest.mark.parametrize(("overrides", "match"), [
    (['generate.captioner=""'], "generate.text"),
    (['decoder.rois.vae_latents=[]'], "decoder.rois.vae_latents"),
    (['generate.depth="midas"'], "generate.depth"),
    (['generate.captioner="llava"'], "generate.captioner"),
])
def test_recipe_problems_are_named(overrides, match):
    with pytest.raises(ValidationError, match=match):
        validate_recipe(_recipe(overrides=overrides))


def test_missing_alpha_is_named():
    rec = _recipe()
    del rec["decoder"]["alphas"]["dpt_hidden_states"]
    with pytest.raises(ValidationError, match="dpt_hidden_states"):
        validate_recipe(rec)


def test_generator_inputs_caption_or_decoded_text():
    from neurodecode.recipes._multi_input import _generator_inputs

    class Gen:
        expects = {"vae_latents": (None,), "depth_maps": (None,)}

    lat = {"vae_latents": np.zeros((2, 4, 5, 5)), "clip_text_tokens": np.ones((2, 77, 8))}
    depth = np.zeros((2, 64, 64))
    got = _generator_inputs(Gen(), lat, ["a", "b"], depth, "caption")
    assert sorted(got) == ["captions", "depth_maps", "vae_latents"] and got["captions"] == ["a", "b"]
    got = _generator_inputs(Gen(), lat, None, None, "decoded")
    assert sorted(got) == ["clip_text_tokens", "vae_latents"]


# ------------------------------------------------------------------------------------------ end to end (slow)
def _cli(*args):
    from typer.testing import CliRunner

    from neurodecode.cli import app

    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout) if "--json" in args else {}


@pytest.fixture(scope="module")
def takagi_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("takagi")
    _cli("simulate", "nsd", base / "sim", "--seed", "0")
    _cli("train", PIPELINES / "takagi_nsd.toml", "--data", base / "sim", "--out", base / "run", "--preset", "tiny",
         "--device", "cpu")
    summary = _cli("reconstruct", "--pipeline", PIPELINES / "takagi_nsd.toml", "--preset", "tiny", "--data",
                   base / "sim", "--checkpoint", base / "run", "--out", base / "recons", "--device", "cpu",
                   "--limit", "3", "--subject", 1, "--json")
    return base, summary


@pytest.mark.slow
def test_roi_groups_read_exactly_the_atlas_voxels(takagi_run):
    import nibabel as nib

    from neurodecode.cli._common import resolve_data_root

    base, _ = takagi_run
    root = resolve_data_root(base / "sim", "nsd")
    img: Any = nib.load(root / "nsddata/ppdata/subj01/func1pt8mm/roi/streams.nii.gz")
    atlas = np.asarray(img.dataobj)
    table = {line.split()[1]: int(line.split()[0]) for line in
             (root / "nsddata/freesurfer/subj01/label/streams.mgz.ctab").read_text().splitlines() if line.strip()}

    def count(names):
        return int(np.isin(atlas, [table[n] for n in names]).sum())

    models = json.loads((base / "run" / "provenance.json").read_text())["models"]["nsd/subj01"]
    assert models["vae_latents"]["n_voxels"] == count(["early"])
    assert models["clip_text_tokens"]["n_voxels"] == count(["ventral"])
    assert models["blip_image_tokens+dpt_hidden_states"]["n_voxels"] == count(STREAMS6)
    cfg = json.loads((base / "run" / "sub-01" / "vae_latents" / "config.json").read_text())
    assert cfg["config"]["n_voxels"] == cfg["metadata"]["n_voxels"] == count(["early"])
    assert cfg["config"]["zscore_ddof"] == 0  # sklearn StandardScaler, as ridge.py


@pytest.mark.slow
def test_reconstruct_writes_captions_depth_and_samples_from_the_ridges(takagi_run):
    from PIL import Image

    from neurodecode.generate import get_generator
    from neurodecode.recipes._multi_input import _predict

    base, summary = takagi_run
    assert summary["n_done"] == 3 and summary["outputs"] == ["caption", "depth_npy", "image"]
    folder = base / "recons" / "sub-01" / "recon"
    recons = sorted(folder.glob("*_recon.png"))
    assert len(recons) == 3
    rec = validate_recipe(_recipe())
    from neurodecode.cli._common import resolve_data_root
    from neurodecode.recipes._data import load_nsd_for_recipe

    root = resolve_data_root(base / "sim", "nsd")
    test = load_nsd_for_recipe(root, rec["data"], 1).test.average_repeats()
    test = test.subset(np.arange(3))
    pred = _predict(rec, root, test, base / "run" / "sub-01")
    assert pred["blip_image_tokens"].shape == (3, 26, 44) and pred["dpt_hidden_states"].shape == (3, 4, 17, 52)
    caps = get_generator("blip", weights="tiny").generate(pred)
    maps = get_generator("dpt-depth", weights="tiny").generate(pred)
    for i, stim in enumerate(test.stimulus_ids):
        stem = f"sub-01_stim-{int(stim):05d}_desc-takaginsd"
        assert (folder / f"{stem}_caption.txt").read_text() == caps[i] + "\n"
        depth = np.load(folder / f"{stem}_depth.npy")
        assert depth.shape == (64, 64) and depth.min() >= -1.0 and depth.max() <= 1.0
        np.testing.assert_allclose(depth, maps[i], atol=1e-5)
        samples = sorted((folder / "samples").glob(f"{stem}_sample-*.png"))
        assert len(samples) == 2  # the tiny preset's samples
        assert np.array_equal(np.asarray(Image.open(samples[0])), np.asarray(Image.open(folder / f"{stem}_recon.png")))
    prov = json.loads((base / "recons" / "provenance.json").read_text())["runs"][-1]
    assert prov["vae_latents_scaled"] is True and prov["samples"] == 2 and prov["text"] == "caption"


def test_trial_rows_fit_equals_the_gathered_targets():
    """Single-trial targets read through the per-stimulus view fit the same ridge as the materialised copy."""
    from neurodecode.models.brain_diffuser import BrainDiffuser, BrainDiffuserConfig
    from neurodecode.recipes._multi_input import trial_targets

    rng = np.random.default_rng(0)
    ids = np.array([3, 5, 8, 11, 13])
    feats = rng.standard_normal((5, 4, 7, 9)).astype(np.float32)
    stim = np.array([3, 5, 5, 8, 11, 13, 13, 3, 8, 11, 5])
    X = rng.standard_normal((11, 6)).astype(np.float32)
    view = trial_targets({"dpt_hidden_states": (ids, feats)}, stim, ["dpt_hidden_states"])["dpt_hidden_states"]
    gathered = feats[np.searchsorted(ids, stim)]
    assert view.shape == gathered.shape
    np.testing.assert_array_equal(view[:, 1:3], gathered[:, 1:3])
    cfg = BrainDiffuserConfig(n_voxels=6, subject="s", target_shapes={"dpt_hidden_states": (4, 7, 9)},
                              alphas={"dpt_hidden_states": (0.5, 5.0)}, cv=3, alpha_per_target=True,
                              restandardize="none", target_batch=50)
    a = BrainDiffuser(cfg).fit(X, {"dpt_hidden_states": view}).predict_latents(X, "s")["dpt_hidden_states"]
    b = BrainDiffuser(cfg).fit(X, {"dpt_hidden_states": gathered}).predict_latents(X, "s")["dpt_hidden_states"]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
