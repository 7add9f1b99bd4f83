"""The MEG real-time recipe (Benchetrit et al. 2024) end to end on simulated THINGS-MEG: train -> reconstruct,
lambda on validation, ridge baseline, time-resolved decoding, and the run as a live decoder (load_run).

The scores in metrics.json are recomputed here from the saved model and the RAW data of the loader,
with the ranking and the ridge written independently (sklearn's RidgeCV), so a wrong window, split,
target, candidate set or baseline in the runner shows up as a mismatch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from neurodecode.cli import app

runner = CliRunner()
PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
RECIPE = "meg_realtime_things.toml"
N_TEST = 6
SUBJECTS = ["things-meg/sub-BIGMEG1", "things-meg/sub-BIGMEG2"]


def _cli(*args, code=0):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == code, res.output
    return res


def _train(root, out, *extra, code=0):
    res = _cli("train", PIPELINES / RECIPE, "--data", root, "--out", out, "--preset", "tiny", "--device", "cpu",
               "--json", *extra, code=code)
    return json.loads(res.stdout) if code == 0 else res


@pytest.fixture(scope="module")
def meg_root(tmp_path_factory):
    from neurodecode.simulate import simulate_things_meg

    out = tmp_path_factory.mktemp("meg")
    simulate_things_meg(out, subjects=(1, 2), n_sessions=2, n_train_concepts=5, n_test=N_TEST, n_test_classes=2,
                        image_size=16)
    return out / "things-meg"


@pytest.fixture(scope="module")
def run(meg_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    summary = _train(meg_root, out, "--max-steps", "2")
    return out, summary


def _embeds(root: Path, ids) -> np.ndarray:
    """The tiny ViT-H-14 twin's embeddings of images by id, as the feature cache stores them (float16)."""
    from neurodecode.latents import get_space

    files = {p.stem: p for p in (root / "stimuli").rglob("*.jpg")}
    images = [np.asarray(Image.open(files[str(i)]).convert("RGB")) for i in ids]
    return np.asarray(get_space("clip-vit-h-14-tiny").encode_images(images), np.float32).astype(np.float16).astype(
        np.float32)


def _topk(emb, cand, labels, k):
    """Hit if the own candidate's cosine is strictly above all but fewer than k others (ties are misses)."""
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    c = cand / np.linalg.norm(cand, axis=1, keepdims=True)
    sim = e @ c.T
    own = sim[np.arange(len(sim)), labels]
    return float(np.mean((sim >= own[:, None]).sum(1) - 1 < k))


def test_tiny_train_writes_one_cross_subject_model_and_scores_it(meg_root, run):
    from neurodecode.data import load_things_meg
    from neurodecode.models import load_decoder

    out, summary = run
    for name in ("config.json", "model.safetensors", "candidates.npz", "metrics.json", "provenance.json",
                 "selection/lambda-0.5/model.safetensors", "selection/lambda-1/model.safetensors",
                 "time_resolved.json", "time_resolved.png"):
        assert (out / name).is_file(), name
    model = load_decoder(out)
    c = model.config
    assert type(model).__name__ == "MEGBrainModule" and c.subjects == SUBJECTS
    assert (c.n_channels, c.n_times, c.sfreq, c.tmin, c.baseline_samples) == (271, 60, 40.0, -0.5, 20)
    assert c.input_scaling and model.input_mean.shape == (3, 271)
    m = summary["metrics"]
    # lambda chosen on the validation concepts: the best validation top-5, ties to the larger lambda
    val = {lam: m[f"selection/lambda-{lam:g}/val_top5"] for lam in (0.5, 1.0)}
    assert m["selection/lambda"] == max(val, key=lambda v: (val[v], v)) == c.clip_weight
    prov = json.loads((out / "provenance.json").read_text())
    assert "never the test set" in prov["selection"]["on"] and len(prov["selection"]["val_concepts"]) == 2
    test_concepts = set(load_things_meg(meg_root, 1, sfreq=40.0).test.metadata["concept"].astype(str))
    assert not set(prov["selection"]["val_concepts"]) & test_concepts

    # recompute the averaged and single-trial test scores from the saved model and the raw data
    data = load_things_meg(meg_root, 2, tmin=-0.5, tmax=1.0 - 1 / 40, sfreq=40.0, average_test_repeats=False)
    test = data.test
    ids = np.unique(test.stimulus_ids.astype(str))
    assert len(ids) == N_TEST
    cand = _embeds(meg_root, ids)
    key = "test/things-meg/sub-BIGMEG2"
    for kind, tt in (("single", test), ("averaged", test.average_repeats())):
        labels = np.searchsorted(ids, tt.stimulus_ids.astype(str))
        emb = model.encode(tt.X, SUBJECTS[1])
        for k in (1, 5):
            assert m[f"{key}/{kind}/top{k}"] == pytest.approx(_topk(emb, cand, labels, k)), (kind, k)
        assert m[f"{key}/{kind}/n_way"] == N_TEST
    assert m[f"{key}/single/n_way"] == N_TEST and len(test) == 2 * N_TEST  # two sessions = two repetitions
    # the larger set: the test images plus every training image as distractors
    train_ids = np.unique(data.train.stimulus_ids.astype(str))
    big = np.concatenate([cand, _embeds(meg_root, train_ids)])
    avg = test.average_repeats()
    labels = np.searchsorted(ids, avg.stimulus_ids.astype(str))
    assert m[f"{key}/averaged/large/n_way"] == N_TEST + len(train_ids) == N_TEST + 10
    assert m[f"{key}/averaged/large/top5"] == pytest.approx(_topk(model.encode(avg.X, SUBJECTS[1]), big, labels, 5))


def test_ridge_baseline_matches_sklearn_on_the_same_windows(meg_root, run):
    import torch
    from sklearn.linear_model import RidgeCV

    from neurodecode.data import load_things_meg
    from neurodecode.models import load_decoder

    out, summary = run
    model = load_decoder(out)

    def prepared(X, subject):  # the model's own input preparation, then 2-sample averages (decimate = 2)
        idx = torch.from_numpy(model.subject_index(subject, len(X)))
        x = model.prepare(torch.from_numpy(np.asarray(X, np.float32)), idx).numpy().astype(np.float64)
        return x.reshape(*x.shape[:2], -1, 2).mean(-1).reshape(len(x), -1)

    Xs, ids_all, tests = [], [], {}
    for s, subj in zip((1, 2), SUBJECTS):
        d = load_things_meg(meg_root, s, tmin=-0.5, tmax=1.0 - 1 / 40, sfreq=40.0, average_test_repeats=True)
        Xs.append(prepared(d.train.X, subj))
        ids_all.append(d.train.stimulus_ids.astype(str))
        tests[subj] = d.test
    ids = np.concatenate(ids_all)
    Y = _embeds(meg_root, ids).astype(np.float64)
    ridge = RidgeCV(alphas=[1.0, 100.0], alpha_per_target=False).fit(np.concatenate(Xs), Y)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["ridge"]["best_alphas"] == [ridge.alpha_]
    te = tests[SUBJECTS[0]]
    test_ids = np.unique(te.stimulus_ids.astype(str))
    labels = np.searchsorted(test_ids, te.stimulus_ids.astype(str))
    pred = ridge.predict(prepared(te.X, SUBJECTS[0]))
    m = summary["metrics"]
    key = "test/things-meg/sub-BIGMEG1/averaged"
    cand = _embeds(meg_root, test_ids)
    assert m[f"{key}/ridge/top5"] == pytest.approx(_topk(pred, cand, labels, 5))
    assert m[f"{key}/ridge/top1"] == pytest.approx(_topk(pred, cand, labels, 1))
    if m[f"{key}/ridge/top5"] > 0:
        assert m[f"{key}/gain_top5"] == pytest.approx(m[f"{key}/top5"] / m[f"{key}/ridge/top5"])


def test_time_resolved_per_window_models_and_curve(run):
    out, summary = run
    record = json.loads((out / "time_resolved.json").read_text())
    # 0.25 s windows (10 samples at 40 Hz) every 0.5 s over -0.5..1.0 s: starts -0.5, 0, 0.5
    starts = [round(e["start_s"], 3) for e in record["curve"]]
    assert starts == [-0.5, 0.0, 0.5] and record["mode"] == "per-window"
    for s in ("-500ms", "+0ms", "+500ms"):
        assert (out / "time" / s / "model.safetensors").is_file()
        assert summary["metrics"][f"time/per-window/{s}/top1"] == pytest.approx(
            record["curve"][starts.index(int(s[:-2]) / 1000)]["top1"])
    from neurodecode.models import load_decoder

    w = load_decoder(out / "time" / "+500ms")
    assert (w.config.n_times, w.config.baseline_samples) == (10, 0)
    png = Image.open(out / "time_resolved.png")
    assert png.size[0] > 100 and png.size[1] > 100


def test_shifting_windows_dinov2_targets_and_a_generation_model(meg_root, tmp_path):
    from neurodecode.models import load_decoder

    out = tmp_path / "shift"
    summary = _train(meg_root, out, "--max-steps", "1", "--set", 'decoder.time.mode="shifting"',
                     "--set", "decoder.selection.clip_weights=[0.75]", "--set", "decoder.ridge.enabled=false",
                     "--set", "decoder.retrieval.large_set=false", "--set", 'latents.image="dinov2-giant-tiny"',
                     "--set", 'latents.generation="clip-vit-h-14-tiny"')
    model = load_decoder(out)
    # retrieval on DINOv2-giant CLS (tiny twin, 36 wide); a second model regresses unCLIP's space (24)
    assert (model.config.latent_dim, model.config.clip_weight, model.config.latent_key) == (36, 0.75, "image_embeds")
    gen = load_decoder(out / "generation")
    assert (gen.config.latent_dim, gen.config.latent_key) == (24, "clip_image_embeds")
    assert load_decoder(out / "time" / "shifting").config.n_times == 10
    recon = _cli("reconstruct", "--pipeline", PIPELINES / RECIPE, "--preset", "tiny", "--data", meg_root,
                 "--checkpoint", out, "--out", tmp_path / "recon", "--device", "cpu", "--limit", "1", "--json",
                 "--subject", "sub-BIGMEG1")
    assert json.loads(recon.stdout)["n_done"] == 1
    prov = json.loads(next((tmp_path / "recon").rglob("provenance*.json")).read_text())
    assert str(out / "generation") in json.dumps(prov)
    assert sorted(p.name for p in (out / "time").iterdir()) == ["shifting"]
    keys = [k for k in summary["metrics"] if k.startswith("time/shifting/")]
    assert all("/top" in k for k in keys)
    assert len(keys) == 6  # 3 window starts x top1 / top5
    assert not (out / "selection").exists() and "selection/lambda" not in summary["metrics"]
    assert not any("/ridge/" in k or "/large/" in k for k in summary["metrics"])


def test_large_set_of_the_test_concepts_images(meg_root, tmp_path):
    """The paper's large set: the other images of the test concepts (images_meg/<test concept>/) join the candidates."""
    import shutil

    from neurodecode.data import load_things_meg
    from neurodecode.models import load_decoder

    root = tmp_path / "things-meg"
    shutil.copytree(meg_root, root)
    test = load_things_meg(root, 1, tmin=-0.5, tmax=1.0 - 1 / 40, sfreq=40.0, average_test_repeats=True).test
    concept = str(test.metadata["concept"][0])
    folder = root / "stimuli" / "images_meg" / concept
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{concept}_extra{k}.jpg")
    out = tmp_path / "run"
    summary = _train(root, out, "--max-steps", "1", "--set", "decoder.selection.clip_weights=[1.0]",
                     "--set", "decoder.ridge.enabled=false", "--set", "decoder.time.enabled=false",
                     "--set", 'decoder.retrieval.large_set_images="test-concepts"')
    m = summary["metrics"]
    key = "test/things-meg/sub-BIGMEG1/averaged/large"
    assert m[f"{key}/n_way"] == N_TEST + 3
    ids = np.unique(test.stimulus_ids.astype(str))
    extra = [f"{concept}_extra{k}" for k in range(3)]
    cand = np.concatenate([_embeds(root, ids), _embeds(root, extra)])
    labels = np.searchsorted(ids, test.stimulus_ids.astype(str))
    emb = load_decoder(out).encode(test.X, SUBJECTS[0])
    assert m[f"{key}/top5"] == pytest.approx(_topk(emb, cand, labels, 5))
    with np.load(out / "candidates.npz") as z:
        assert sorted(z["extra_ids"].tolist()) == extra
    bad = _train(meg_root, tmp_path / "none", "--max-steps", "1", "--set", "decoder.selection.clip_weights=[1.0]",
                 "--set", 'decoder.retrieval.large_set_images="test-concepts"', code=1)
    assert "large_set_images" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "none" / "model.safetensors").exists()  # refused before any training


def test_load_run_decodes_like_the_model_and_retrieves_test_images(meg_root, run):
    from neurodecode.data import load_things_meg
    from neurodecode.recipes._meg_realtime import load_run

    out, summary = run
    live = load_run(out)
    assert live.subjects == SUBJECTS and live.window == {"tmin": -0.5, "n_times": 60, "sfreq": 40.0}
    test = load_things_meg(meg_root, 1, tmin=-0.5, tmax=1.0 - 1 / 40, sfreq=40.0, average_test_repeats=True).test
    emb = live.decode(test.X, SUBJECTS[0])
    np.testing.assert_allclose(emb, live.model.encode(test.X, SUBJECTS[0]), rtol=1e-6)
    assert emb.shape == (N_TEST, 24) and live.n_test == N_TEST and len(live.candidate_ids) == N_TEST + 10
    top_ids, scores = live.retrieve(test.X, SUBJECTS[0], k=3)
    assert top_ids.shape == (N_TEST, 3) and np.all(np.diff(scores, axis=1) <= 0)
    assert set(top_ids.ravel()) <= set(live.candidate_ids[:N_TEST])
    hit1 = np.mean(top_ids[:, 0] == test.stimulus_ids.astype(str))
    assert hit1 == pytest.approx(summary["metrics"]["test/things-meg/sub-BIGMEG1/averaged/top1"])
    assert live.decode(test.X, None).shape == (N_TEST, 24)  # an unknown subject: the mean subject layer


def test_reconstruct_writes_images_from_the_regressed_embedding(meg_root, run, tmp_path):
    out, _ = run
    res = _cli("reconstruct", "--pipeline", PIPELINES / RECIPE, "--preset", "tiny", "--data", meg_root,
               "--checkpoint", out, "--out", tmp_path / "recon", "--device", "cpu", "--limit", "2", "--json")
    summary = json.loads(res.stdout)
    assert summary["n_done"] == 4 and set(summary["subjects"]) == set(SUBJECTS)
    pngs = sorted((tmp_path / "recon").rglob("*_recon.png"))
    assert len(pngs) == 4 and all(np.asarray(Image.open(p)).ndim == 3 for p in pngs)
    prov = json.loads(next((tmp_path / "recon").rglob("provenance*.json")).read_text())
    assert "MEGBrainModule" in json.dumps(prov)
    # the run's decoding-over-time figure travels with the outputs and into the evaluation report
    fig = tmp_path / "recon" / "figures" / "time_resolved.png"
    assert fig.read_bytes() == (out / "time_resolved.png").read_bytes()
    _cli("evaluate", "--recons", tmp_path / "recon", "--truth", meg_root / "stimuli" / "images_test_meg",
         "--metrics", "pixcorr", "--weights", "random", "--n-boot", "10", "--out", tmp_path / "ev")
    import base64

    report = (tmp_path / "ev" / "report.html").read_text()
    assert "Time resolved" in report and base64.b64encode(fig.read_bytes()).decode("ascii") in report


@pytest.mark.parametrize(("override", "field"), [
    ("decoder.baseline_samples=3", "decoder.baseline_samples"),   # the window has 20 pre-onset samples
    ('data.mode="loso"', "data.mode"),
    ("decoder.selection.metric=\"top3\"", "metric"),
    ("decoder.latent_dim=7", "decoder.latent_dim"),             # the image space is 24 wide
])
def test_bad_values_exit_1_naming_the_field(meg_root, tmp_path, override, field):
    res = _train(meg_root, tmp_path / "bad", "--max-steps", "1", "--set", override, code=1)
    assert field in res.stderr and "Traceback" not in res.stderr
