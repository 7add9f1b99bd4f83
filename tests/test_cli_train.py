"""`neurodecode train`: every recipe end to end on a tiny NSD tree (tiny latent spaces), resume, reset-tuning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neurodecode.cli import app
from neurodecode.io.checkpoints import load_state_dict
from neurodecode.models import load_decoder
from neurodecode.testing import make_nsd_fixture

runner = CliRunner()
PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


@pytest.fixture(scope="module")
def nsd_root(tmp_path_factory):
    return make_nsd_fixture(tmp_path_factory.mktemp("nsd"), subjects=(1, 2), n_sessions=1, seed=3)


def _train(recipe, root, out, *extra):
    res = runner.invoke(app, ["train", str(PIPELINES / recipe), "--data", str(root), "--out", str(out),
                              "--preset", "tiny", "--device", "cpu", "--json", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_mindbridge_tiny_trains_saves_and_resumes_without_redoing_steps(nsd_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("NEURODECODE_CACHE", str(cache))
    out = tmp_path / "run"
    summary = _train("mindbridge_nsd.toml", nsd_root, out, "--max-steps", "3")
    assert summary["steps"] == 3 and summary["resumed_from"] == 0
    assert np.isfinite(summary["metrics"]["loss"])
    # the fixture: 50 shared test images per subject, so chance is 1/50
    assert summary["metrics"]["test/nsd/subj01/chance"] == pytest.approx(0.02)
    for name in ("config.json", "model.safetensors", "recipe.json", "metrics.json", "provenance.json",
                 "metrics.jsonl", "checkpoints/latest"):
        assert (out / name).is_file(), name
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["_source"]["preset"] == "tiny" and recipe["decoder"]["base"] == "tiny"
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["n_train"] == {"nsd/subj01": 600, "nsd/subj02": 600} and prov["targets"]["image_tokens"]["shape"] == [17, 16]

    model = load_decoder(out)
    n_vox = prov["data"]["nsd/subj02"]["n_voxels"]
    assert model.config.subjects == {"nsd/subj01": prov["data"]["nsd/subj01"]["n_voxels"], "nsd/subj02": n_vox}
    pred = model.predict_latents(np.zeros((4, n_vox), np.float32), subject="nsd/subj02")
    # the tiny preset trains text tokens too (captions from the tree), as Versatile Diffusion needs both
    assert pred["clip_image_tokens"].shape == (4, 17, 16) and pred["clip_text_tokens"].shape == (4, 77, 16)

    # targets were computed once into the feature cache; a re-run reuses them and does no new step
    shards = sorted(cache.glob("features/clip-vit-l-14-tokens-tiny/*/shard-*.safetensors"))
    assert len(shards) == 1
    mtime = shards[0].stat().st_mtime_ns
    weights = load_state_dict(out / "model.safetensors")
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3]
    again = _train("mindbridge_nsd.toml", nsd_root, out, "--max-steps", "3", "--resume")
    assert again["resumed_from"] == 3 and again["steps"] == 3 and again["metrics"]["loss"] == summary["metrics"]["loss"]
    assert shards[0].stat().st_mtime_ns == mtime
    assert [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] == log
    for k, v in load_state_dict(out / "model.safetensors").items():
        np.testing.assert_array_equal(v.numpy(), weights[k].numpy(), err_msg=k)

    fresh = _train("mindbridge_nsd.toml", nsd_root, out, "--max-steps", "2", "--no-resume")
    assert fresh["resumed_from"] == 0 and fresh["steps"] == 2


def test_reset_tuning_a_new_subject_changes_only_its_embedder_and_builder(nsd_root, tmp_path):
    pre = tmp_path / "pre"
    _train("mindbridge_nsd.toml", nsd_root, pre, "--max-steps", "2", "--set", 'data.subjects=["nsd/subj02"]')
    before = load_state_dict(pre / "model.safetensors")
    out = tmp_path / "new"
    summary = _train("mindbridge_new_subject.toml", nsd_root, out, "--max-steps", "3",
                     "--set", f"decoder.init_from={json.dumps(str(pre))}")
    assert summary["steps"] == 3 and "test/nsd/subj01/top1" in summary["metrics"]
    after = load_state_dict(out / "model.safetensors")
    new = {k for k in after if "nsd__subj01" in k}
    assert new and set(after) - new == set(before)
    for k in before:
        np.testing.assert_array_equal(after[k].numpy(), before[k].numpy(), err_msg=k)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["fine_tune"]["method"] == "reset_tune" and prov["n_train"]["nsd/subj01"] == 60  # tiny n_train
    assert prov["augment"]["views"] == 4  # the reference adapts with its image augmentation on
    # the pretrained model already knows subj02: reset-tuning it is refused with a fix
    res = runner.invoke(app, ["train", str(PIPELINES / "mindbridge_new_subject.toml"), "--data", str(nsd_root),
                              "--out", str(tmp_path / "bad"), "--preset", "tiny", "--device", "cpu",
                              "--set", f"decoder.init_from={json.dumps(str(pre))}", "--set", 'finetune.subject="nsd/subj02"',
                              "--set", 'finetune.anchor="nsd/subj01"'])
    assert res.exit_code == 1 and "finetune.subject" in res.stderr and "Traceback" not in res.stderr


def test_mindeye2_tiny_pretrain_then_one_session_finetune(nsd_root, tmp_path):
    pre = tmp_path / "me2"
    summary = _train("mindeye2_nsd.toml", nsd_root, pre, "--max-steps", "2", "--set", 'data.subjects=["nsd/subj02"]')
    assert summary["steps"] == 2
    model = load_decoder(pre)
    # the low-level head is on, as in the reference; its shape is read from the tiny SD-VAE space (32 px)
    assert model.config.target_tokens == [16, 48] and list(model.config.lowlevel_shape) == [4, 16, 16]
    out = tmp_path / "one"
    ft = _train("mindeye2_one_session.toml", nsd_root, out, "--max-steps", "2",
                "--set", f"decoder.init_from={json.dumps(str(pre))}")
    assert ft["steps"] == 2 and "test/nsd/subj01/top1" in ft["metrics"]
    assert 0 <= ft["metrics"]["test/nsd/subj01/retrieval_top1"] <= 1  # its contrastive embeddings too
    tuned = load_decoder(out)
    assert sorted(tuned.subjects) == ["nsd/subj01", "nsd/subj02"]
    n_vox = tuned.config.subjects["nsd/subj01"]
    pred = tuned.predict_latents(np.zeros((3, n_vox), np.float32), subject="nsd/subj01")
    assert pred["clip_bigg_tokens"].shape == (3, 16, 48) and pred["vae_latents"].shape == (3, 4, 16, 16)


def test_text_targets_from_coco_captions(nsd_root, tmp_path):
    # COCO-format captions keyed by cocoId (the fixture's nsd_stim_info_merged.csv maps nsdId i -> 100000 + i)
    ann = tmp_path / "captions.json"
    anns = [{"image_id": 100000 + i, "caption": f"picture number {i} {'of a cat' if k else 'on a mat'}", "id": 2 * i + k}
            for i in range(1650) for k in range(2)]
    ann.write_text(json.dumps({"annotations": anns}))
    out = tmp_path / "text"
    summary = _train("mindbridge_nsd.toml", nsd_root, out, "--max-steps", "2",
                     "--set", f"data.captions=[{json.dumps(str(ann))}]",
                     "--set", 'latents.text_tokens.space="clip-vit-l-14-text-tokens-tiny"')
    assert summary["metrics"]["mse_text"] > 0
    model = load_decoder(out)
    assert model.config.text_tokens == [77, 16]


def test_bad_recipe_values_exit_1_with_a_fix(nsd_root, tmp_path):
    base = ["train", str(PIPELINES / "mindbridge_nsd.toml"), "--data", str(nsd_root), "--out", str(tmp_path / "x"),
            "--preset", "tiny", "--device", "cpu"]
    res = runner.invoke(app, [*base, "--set", "train.epoch=3"])
    assert res.exit_code == 1 and "train.epoch" in res.stderr and "'epochs'" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x").exists()  # refused before any work
    res = runner.invoke(app, [*base, "--set", "data.captions=[]"])  # text targets without caption files
    assert res.exit_code == 1 and "data.captions" in res.stderr
    res = runner.invoke(app, [*base[:3], str(tmp_path / "no_nsd"), *base[4:]])
    assert res.exit_code == 1 and "Traceback" not in res.stderr


def test_cross_subject_mindbridge_beats_the_shuffled_control_for_every_subject_on_simulated_nsd(tmp_path,
                                                                                                 monkeypatch):
    """Known-answer NSD (the fMRI simulator): both subjects' held-out shared images are identified."""
    from neurodecode.simulate import simulate_nsd

    monkeypatch.setenv("NEURODECODE_CACHE", str(tmp_path / "cache"))
    sim = simulate_nsd(tmp_path / "sim", subjects=(1, 2), n_sessions=1, n_shared=40, n_voxels=150, seed=0,
                       formats=("nifti",), verbose=False)
    # toy widths a little above the tiny preset's (pooled 16 / width 12 cannot carry 150 voxels)
    summary = _train("mindbridge_nsd.toml", sim.root, tmp_path / "run", "--set", "train.epochs=30",
                     "--set", "decoder.pooled=128", "--set", "decoder.width=64", "--set", "decoder.bottleneck=16",
                     "--set", "train.batch_size=32", "--set", "train.lr=3e-3", "--set", "decoder.mse_weight=1.0",
                     "--set", 'decoder.pool="avg"', "--set", "decoder.embed_dropout=0.1")
    m = summary["metrics"]
    for s in ("nsd/subj01", "nsd/subj02"):
        top1, control, chance = m[f"test/{s}/top1"], m[f"test/{s}/shuffled_top1"], m[f"test/{s}/chance"]
        assert chance == pytest.approx(1 / 40)
        assert control <= 0.1, (s, m)
        assert top1 >= 0.15 and top1 > control + 0.1, (s, m)


def test_brain_diffuser_recipe_fits_scores_resumes_and_feeds_reconstruct(tmp_path, monkeypatch):
    """`neurodecode train pipelines/brain_diffuser_nsd.toml` fits the ridges; `reconstruct` takes its folder."""
    from neurodecode.data import load_nsd
    from neurodecode.simulate import simulate_nsd

    monkeypatch.setenv("NEURODECODE_CACHE", str(tmp_path / "cache"))
    sim = simulate_nsd(tmp_path / "sim", subjects=(1,), n_sessions=1, n_shared=40, n_voxels=150, seed=0,
                       formats=("nifti",), verbose=False)
    n_stim = 1 + int(load_nsd(sim.root, 1, verbose=False).stimulus_ids.max())
    (sim.root / "captions.json").write_text(json.dumps({str(i): [f"picture number {i}", "a small image"]
                                                        for i in range(n_stim)}))
    text = ("--set", 'latents.clip_text_tokens.space="clip-vit-l-14-text-tokens-tiny"',
            "--set", 'data.captions=["captions.json"]')
    out = tmp_path / "run"
    summary = _train("brain_diffuser_nsd.toml", sim.root, out, *text)
    m = summary["metrics"]
    assert summary["steps"] == 0 and m["test/nsd/subj01/chance"] == pytest.approx(1 / 40)
    top1, control = m["test/nsd/subj01/clip_image_tokens/top1"], m["test/nsd/subj01/clip_image_tokens/shuffled_top1"]
    assert top1 >= 0.15 and top1 > control + 0.1, m
    assert "test/nsd/subj01/clip_text_tokens/top1" in m  # the caption targets were fitted too
    model = load_decoder(out / "sub-01")
    assert model.config.subject == "nsd/subj01" and set(model.config.target_shapes) == {
        "clip_image_tokens", "clip_text_tokens", "vae_latents"}
    assert model.config.target_shapes["clip_image_tokens"] == (17, 16)
    assert model.config.target_shapes["vae_latents"] == (1924,)  # the tiny VDVAE's 7 layers (low-level target)
    assert "test/nsd/subj01/vae_latents/top1" in m
    weights = out / "sub-01" / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    again = _train("brain_diffuser_nsd.toml", sim.root, out, *text)  # fitted subjects are kept
    assert weights.stat().st_mtime_ns == mtime and again["metrics"] == m

    res = runner.invoke(app, ["reconstruct", "--pipeline", str(PIPELINES / "brain_diffuser_nsd.toml"), "--preset",
                              "tiny", "--data", str(sim.root), "--subject", "1", "--checkpoint", str(out / "sub-01"),
                              "--out", str(tmp_path / "rec"), "--device", "cpu", "--limit", "3", "--json"])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "rec" / "sub-01" / "recon").glob("*_recon.png"))) == 3
    # stage 1 (VDVAE) wrote its image beside each reconstruction; the provenance names both stages
    assert len(list((tmp_path / "rec" / "sub-01" / "recon").glob("*_blurry.png"))) == 3
    run = json.loads((tmp_path / "rec" / "provenance.json").read_text())["runs"][-1]
    assert run["lowlevel"]["generator"] == "vdvae" and run["generator"]["generator"] == "versatile"

