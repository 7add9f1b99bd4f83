"""`neurodecode train` on the M/EEG recipes (ATM: THINGS-EEG2, THINGS-MEG; GLIM: ZuCo) at toy size.

The data are written by the simulators in the published layouts (THINGS-EEG2 pickles and their .npz
twins, THINGS-MEG BIDS FIF at 1200 Hz, ZuCo 2.0 MATLAB v7.3); the images the recordings "showed" are
written where the THINGS releases keep them. Every run goes through the CLI; the test metrics are
recomputed here from the saved model and the RAW data of the loaders (the model holds its input
scaling), as a lab would use it, so a wrong window, scaling, target or split in the training path, or
a saved model that needs its inputs prepared, shows up as a mismatch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from neurodecode.cli import app
from neurodecode.io.checkpoints import load_state_dict
from neurodecode.models import load_decoder

runner = CliRunner()
PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
N_TEST_EEG, N_TEST_MEG = 7, 6


def _train(recipe, root, out, *extra, code=0):
    res = runner.invoke(app, ["train", str(PIPELINES / recipe), "--data", str(root), "--out", str(out),
                              "--preset", "tiny", "--device", "cpu", "--json", *extra])
    assert res.exit_code == code, res.output
    return json.loads(res.stdout) if code == 0 else res


@pytest.fixture(scope="module")
def eeg2_root(tmp_path_factory):
    from neurodecode.simulate import simulate_things_eeg2

    out = tmp_path_factory.mktemp("eeg2")
    simulate_things_eeg2(out, subjects=(1, 2), n_train_concepts=6, images_per_concept=2, n_test=N_TEST_EEG,
                         n_test_classes=2, train_repetitions=2, test_repetitions=3, safe_copy=True, image_size=16)
    root = out / "things-eeg2"
    assert len(list((root / "image_set" / "test_images").rglob("*.jpg"))) == N_TEST_EEG  # written by the simulator
    return root


@pytest.fixture(scope="module")
def meg_root(tmp_path_factory):
    from neurodecode.simulate import simulate_things_meg

    out = tmp_path_factory.mktemp("meg")
    simulate_things_meg(out, subjects=(1,), n_sessions=2, n_train_concepts=5, n_test=N_TEST_MEG, n_test_classes=2,
                        image_size=16)
    root = out / "things-meg"
    assert len(list((root / "stimuli" / "images_test_meg").rglob("*.jpg"))) == N_TEST_MEG  # written by the simulator
    return root


@pytest.fixture(scope="module")
def zuco_root(tmp_path_factory):
    from neurodecode.simulate import simulate_zuco

    out = tmp_path_factory.mktemp("zuco")
    simulate_zuco(out, subjects=("YAC", "YAG"), n_sentences=40, space="minilm-l6-tiny")
    return out / "zuco"


def _image_targets(root: Path, folder: str, test_ids):
    """The tiny ViT-H-14 twin's embeddings of the test images, as the feature cache stores them (float16)."""
    from neurodecode.latents import get_space

    files = {p.name: p for p in (root / folder).rglob("*.jpg")} | {p.stem: p for p in (root / folder).rglob("*.jpg")}
    images = [np.asarray(Image.open(files[str(i)]).convert("RGB")) for i in test_ids]
    emb = get_space("clip-vit-h-14-tiny").encode_images(images)
    return np.asarray(emb, np.float32).astype(np.float16).astype(np.float32)


def _check_atm_metrics(metrics, subject, model, X_test, test_ids, labels, targets, n_way):
    from neurodecode.metrics import kway_topk

    key = f"test/{subject}"
    assert metrics[f"{key}/n_way"] == n_way and metrics[f"{key}/chance"] == pytest.approx(1 / n_way)
    ref = kway_topk(model.encode(X_test), targets, ks=(n_way,), topk=(1, 5), labels=labels)
    assert metrics[f"{key}/top1"] == pytest.approx(ref[f"top1@{n_way}"])
    assert metrics[f"{key}/top5"] == pytest.approx(ref[f"top5@{n_way}"])
    assert 0.0 <= metrics[f"{key}/prior_top1"] <= 1.0
    # the shuffled control: each trial against another trial's image (a seeded derangement, rng 0)
    from neurodecode.metrics import derangement

    wrong = labels[derangement(len(labels), np.random.default_rng(0))]
    ctrl = kway_topk(model.encode(X_test), targets, ks=(n_way,), topk=(1,), labels=wrong)
    assert metrics[f"{key}/shuffled_top1"] == pytest.approx(ctrl[f"top1@{n_way}"])


def test_atm_things_eeg2_tiny_per_subject_models_metrics_and_resume(eeg2_root, tmp_path):
    from neurodecode.data import load_things_eeg2
    from neurodecode.models.atm import ATMDiffusionPrior

    out = tmp_path / "atm"
    summary = _train("atm_things_eeg2.toml", eeg2_root, out, "--max-steps", "3")
    # within subject: one ATM and one prior per subject, 3 steps each
    assert summary["steps"] == 12 and summary["resumed_from"] == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["models"] == {k: {"steps": 3, "resumed_from": 0} for k in
                             ("sub-01", "sub-01/prior", "sub-02", "sub-02/prior")}
    for name in ("recipe.json", "provenance.json", "metrics.json", "sub-01/config.json", "sub-01/model.safetensors",
                 "sub-02/checkpoints/latest", "sub-02/prior/model.safetensors"):
        assert (out / name).is_file(), name
    assert not (out / "sub-02" / "input_scaling.json").exists()  # the statistics live in the model
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["n_train"] == {"things-eeg2/sub-01": 24, "things-eeg2/sub-02": 24}  # 12 images x 2 repetitions
    assert prov["n_test"] == {"things-eeg2/sub-01": N_TEST_EEG, "things-eeg2/sub-02": N_TEST_EEG}  # averaged
    assert prov["targets"]["image"]["shape"] == [24] and prov["targets"]["text"]["shape"] == [24]
    assert prov["data"]["things-eeg2/sub-01"]["train"]["files"][0].endswith(".npz")  # the pickle-free twins

    model = load_decoder(out / "sub-02")
    assert (model.config.n_channels, model.config.n_times, model.config.sfreq) == (63, 250, 250.0)
    assert len(model.config.ch_names) == 63 and model.config.subjects == []
    assert model.predict_latents(np.zeros((3, 63, 250), np.float32))["clip_image_embeds"].shape == (3, 24)
    prior = ATMDiffusionPrior.from_pretrained(out / "sub-02" / "prior")
    assert prior.sample(model.encode(np.ones((2, 63, 250), np.float32)), num_inference_steps=2).shape == (2, 24)

    # the model holds the per-channel statistics of its subject's (raw) training trials
    train = load_things_eeg2(eeg2_root, 2, split="train")
    assert model.config.input_scaling and model.input_mean.shape == (1, 63)
    np.testing.assert_allclose(model.input_mean[0].numpy(), train.X.mean((0, 2)), rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(model.input_std[0].numpy(), train.X.std((0, 2)), rtol=1e-4)
    # the reported zero-shot scores are those of the saved model on the RAW averaged test trials
    test = load_things_eeg2(eeg2_root, 2, split="test", average_repeats=True)
    test_ids, labels = np.unique(test.stimulus_ids.astype(str), return_inverse=True)
    targets = _image_targets(eeg2_root, "image_set", test_ids)
    _check_atm_metrics(summary["metrics"], "things-eeg2/sub-02", model, test.X, test_ids, labels, targets, N_TEST_EEG)

    # resume: no step redone, nothing rewritten, same scores; the targets come from the feature cache
    shards = sorted(Path(prov["targets"]["cache_root"]).glob("features/*/*/shard-*.safetensors"))
    assert len(shards) == 2  # image and text targets, once each
    mtimes = [p.stat().st_mtime_ns for p in shards]
    weights = load_state_dict(out / "sub-01" / "model.safetensors")
    log = [json.loads(line) for line in (out / "sub-01" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [3]
    again = _train("atm_things_eeg2.toml", eeg2_root, out, "--max-steps", "3", "--resume")
    assert again["steps"] == 12 and again["resumed_from"] == 12
    assert {k: v for k, v in again["metrics"].items() if k.startswith("test/")} == \
        {k: v for k, v in summary["metrics"].items() if k.startswith("test/")}
    assert [p.stat().st_mtime_ns for p in shards] == mtimes
    assert [json.loads(line) for line in (out / "sub-01" / "metrics.jsonl").read_text().splitlines()] == log
    for k, v in load_state_dict(out / "sub-01" / "model.safetensors").items():
        np.testing.assert_array_equal(v.numpy(), weights[k].numpy(), err_msg=k)


def test_atm_joint_subject_tokens_one_model(eeg2_root, tmp_path):
    out = tmp_path / "joint"
    summary = _train("atm_things_eeg2.toml", eeg2_root, out, "--max-steps", "2",
                     "--set", "decoder.subject_tokens=true", "--set", "decoder.prior={}")
    assert summary["steps"] == 2 and not (out / "prior").exists() and not (out / "sub-01").exists()
    model = load_decoder(out)
    assert model.config.subjects == ["things-eeg2/sub-01", "things-eeg2/sub-02"]
    x = np.random.default_rng(0).standard_normal((2, 63, 250)).astype(np.float32)
    assert not np.allclose(model.encode(x, "things-eeg2/sub-01"), model.encode(x, "things-eeg2/sub-02"))
    # input statistics: pooled (row 0, no or an unknown subject), then one row per subject
    assert model.input_mean.shape == (3, 63) and not np.allclose(model.input_std[1], model.input_std[2])
    assert {"test/things-eeg2/sub-01/top1", "test/things-eeg2/sub-02/top1"} <= set(summary["metrics"])


def test_things_eeg2_pickles_need_explicit_opt_in(eeg2_root, tmp_path):
    root = tmp_path / "pickles"
    shutil.copytree(eeg2_root, root, ignore=shutil.ignore_patterns("*.npz"))  # the published files only
    base = ("atm_things_eeg2.toml", root)
    res = _train(*base, tmp_path / "refused", "--max-steps", "1", code=1)
    assert "data.allow_pickle" in res.stderr and "--set data.allow_pickle=true" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "refused" / "sub-01").exists()
    ok = _train(*base, tmp_path / "trusted", "--max-steps", "1", "--set", "data.allow_pickle=true",
                "--set", 'data.subjects=["sub-01"]', "--set", "decoder.prior={}")
    assert ok["steps"] == 1 and "test/things-eeg2/sub-01/top1" in ok["metrics"]


@pytest.mark.parametrize(("override", "field"), [
    ("decoder.d_modle=32", "d_modle"),                       # misspelt config field
    ("decoder.n_times=200", "decoder.n_times"),              # disagrees with the data window (250 samples)
    ("data.window=[-0.2, 0.8]", "data.window"),              # before onset: the release holds 0..1 s
    ('data.mode="joint"', "data.mode"),
    ("train.epoch=3", "epoch"),
])
def test_bad_recipe_values_exit_1_naming_the_field(eeg2_root, tmp_path, override, field):
    res = _train("atm_things_eeg2.toml", eeg2_root, tmp_path / "bad", "--set", override, code=1)
    assert field in res.stderr and "Traceback" not in res.stderr


def test_atm_things_meg_tiny(meg_root, tmp_path):
    from neurodecode.data import load_things_meg

    out = tmp_path / "meg"
    summary = _train("atm_things_meg.toml", meg_root, out, "--max-steps", "2", "--set", 'data.subjects=["sub-BIGMEG1"]')
    assert summary["steps"] == 4 and summary["resumed_from"] == 0
    model = load_decoder(out / "sub-BIGMEG1")
    assert (model.config.n_channels, model.config.n_times, model.config.sfreq) == (271, 200, 200.0)
    assert not [c for c in model.config.ch_names if c.startswith("MRO11")]  # the known-bad sensor is dropped
    assert model.predict_latents(np.zeros((2, 271, 200), np.float32))["clip_image_embeds"].shape == (2, 24)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["n_train"] == {"things-meg/sub-BIGMEG1": 10} and prov["n_test"] == {"things-meg/sub-BIGMEG1": 6}
    assert 1e-16 < np.median(model.input_std.numpy()) < 1e-10  # the model takes tesla and brings it to unit scale

    test = load_things_meg(meg_root, 1, sfreq=200.0, average_test_repeats=True).test
    assert np.abs(test.X).max() < 1e-9  # raw, in tesla
    test_ids, labels = np.unique(test.stimulus_ids.astype(str), return_inverse=True)
    targets = _image_targets(meg_root, "stimuli", test_ids)
    _check_atm_metrics(summary["metrics"], "things-meg/sub-BIGMEG1", model, test.X, test_ids, labels, targets,
                       N_TEST_MEG)

    again = _train("atm_things_meg.toml", meg_root, out, "--max-steps", "2", "--set", 'data.subjects=["sub-BIGMEG1"]',
                   "--resume")
    assert again["resumed_from"] == again["steps"] == 4


def test_glim_zuco_tiny_retrieval_generation_and_resume(zuco_root, tmp_path):
    from neurodecode.data import load_zuco

    out = tmp_path / "glim"
    summary = _train("glim_zuco.toml", zuco_root, out, "--max-steps", "3")
    assert summary["steps"] == 3 and summary["resumed_from"] == 0
    m = summary["metrics"]
    model = load_decoder(out)
    c = model.config
    assert (c.n_channels, c.max_times, c.sfreq, c.subjects) == (16, 64, 16.0, ["zuco/YAC", "zuco/YAG"])
    lat = model.predict_latents(np.zeros((2, 16, 50), np.float32), lengths=[50, 20], subject="zuco/YAG")
    assert lat["text_embeds"].shape == (2, 32)  # the tiny T5's width (GLIM pools its own T5)
    assert len(model.generate(np.ones((3, 16, 40), np.float32), [40, 33, 9], max_new_tokens=2)) == 3

    # rebuild the test set as a lab would (resample, 16 channels, 0.5-4 s; RAW) and score retrieval
    assert model.config.input_scaling and model.input_mean.shape == (3, 16)  # unknown, YAC, YAG
    assert not (out / "input_scaling.json").exists()
    hits, n_trials, refs = [], 0, []
    per_subject = {}
    for row, code in enumerate(("YAC", "YAG"), start=1):
        tr = load_zuco(zuco_root, code, version=2, task="NR", resample=16.0)
        dur = tr.lengths / 16.0
        fit = tr.subset((tr.split == "train") & (dur >= 0.5) & (dur <= 4.0))  # its statistics: valid samples only
        valid = np.concatenate([x[:16, :n] for x, n in zip(fit.X, fit.lengths)], axis=1)
        np.testing.assert_allclose(model.input_mean[row].numpy(), valid.mean(1), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(model.input_std[row].numpy(), valid.std(1), rtol=1e-4)
        tr = tr.subset((tr.split == "test") & (dur >= 0.5) & (dur <= 4.0))
        X = np.zeros((len(tr), 16, 64), np.float32)
        X[:, :, :tr.X.shape[2]] = tr.X[:, :16, :64]
        per_subject[code] = (X, tr.lengths, tr.texts)
        refs += tr.texts
    sentences = sorted(set(refs))
    assert m["test/n_trials"] == len(refs) == 2 * len(sentences) and m["test/n_sentences"] == len(sentences)
    # GLIM's blocks hold distinct sentences: with fewer than 24, each block is one read of every sentence,
    # so every test sentence is a candidate of every trial
    assert len(sentences) < 24 and m["test/retrieval_block"] == len(sentences)
    assert m["test/retrieval_n_blocks"] == 2
    own_sim, best = [], []
    for code, (X, lengths, texts) in per_subject.items():
        ranks = model.retrieve(X, sentences, lengths, task="NR", dataset="zuco2", subject=f"zuco/{code}")
        sim = model.similarity(X, sentences, lengths, task="NR", dataset="zuco2", subject=f"zuco/{code}")
        hits += [sentences[r[0]] == t for r, t in zip(ranks, texts)]
        best += [sentences[r[0]] for r in ranks]
        own_sim += [sim[i, sentences.index(t)] for i, t in enumerate(texts)]
        n_trials += len(texts)
    assert m["test/retrieval_top1"] == pytest.approx(np.mean(hits))
    assert m["test/retrieval_chance_top1"] == pytest.approx(1 / len(sentences))
    # the shuffled-brain control: each trial's sentence against the EEG of a trial that read another sentence
    from neurodecode.metrics import other_sentence_pairing

    pairing = other_sentence_pairing(refs)
    assert all(refs[j] != refs[i] for i, j in enumerate(pairing))
    assert m["test/retrieval_shuffled_top1"] == pytest.approx(np.mean([best[j] == refs[i] for i, j in enumerate(pairing)]))
    gen = json.loads((out / "generations.json").read_text())
    assert gen["teacher_forcing"] is False and gen["n"] == m["test/n_generated"] == n_trials
    assert [item["reference"] for item in gen["items"]] == refs
    assert all(isinstance(item["generated"], str) for item in gen["items"])
    assert [item["retrieval_top1"] for item in gen["items"]] == hits
    assert len(own_sim) == n_trials
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["n_train_rows"] == prov["n_train"] > 0 and not prov["paraphrases"]

    weights = load_state_dict(out / "model.safetensors")
    again = _train("glim_zuco.toml", zuco_root, out, "--max-steps", "3", "--resume")
    assert again["resumed_from"] == again["steps"] == 3 and again["metrics"]["test/retrieval_top1"] == m[
        "test/retrieval_top1"]
    for k, v in load_state_dict(out / "model.safetensors").items():
        np.testing.assert_array_equal(v.numpy(), weights[k].numpy(), err_msg=k)

    # paraphrases: one more training row per paraphrase of a training sentence (read by both subjects)
    truth = np.load(zuco_root.parent / "truth" / "sentences.npz")
    first_train = str(truth["texts"][list(truth["split"]).index("train")])
    (zuco_root.parent / "para.json").write_text(json.dumps({first_train: ["one way", "another way"]}))
    para = _train("glim_zuco.toml", zuco_root, tmp_path / "para", "--max-steps", "1",
                  "--set", f"data.paraphrases={json.dumps(str(zuco_root.parent / 'para.json'))}")
    p_prov = json.loads((tmp_path / "para" / "provenance.json").read_text())
    assert para["steps"] == 1 and p_prov["paraphrases"] and p_prov["n_train_rows"] == p_prov["n_train"] + 2 * 2
