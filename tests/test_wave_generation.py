"""WAVE stage 2: the diffusion prior (the sampler's known answer, per-item seeding, the null condition, learning a
known mapping), and train -> reconstruct (images from the tiny Versatile Diffusion, best of two candidates by CLIP
cosine) -> evaluate through the CLI; a run without a prior refuses to generate; recipe problems are listed."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from neurodecode.cli import app
from neurodecode.models.wave import WAVEPrior, WAVEPriorConfig

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "wave_bold5000.toml"
runner = CliRunner()


def _cli(*args):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout) if "--json" in args else res.output


# ---------------------------------------------------------------------------------------- the prior
def test_cosine_schedule_and_oracle_sampling_end_on_the_clean_prediction():
    torch.manual_seed(0)
    prior = WAVEPrior(WAVEPriorConfig.tiny(timesteps=7, embed_scale=3.0)).eval()
    # the schedule, recomputed: alpha_bar_t = prod(1 - beta), beta = min(1 - f(t+1)/f(t), 0.999), f the squared
    # cosine of Nichol & Dhariwal
    t = np.arange(8) / 7
    f = np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2
    betas = np.minimum(1 - f[1:] / f[:-1], 0.999)
    assert betas[-1] == 0.999
    np.testing.assert_allclose(prior.alphas_cumprod.numpy(), np.cumprod(1 - betas), rtol=1e-5)
    # a network that always predicts the (scaled) target: the ancestral sampler's last mean is that target,
    # whatever the noise, divided back by the scale
    target = np.random.default_rng(0).standard_normal((3, 17, 16)).astype(np.float32)
    prior.forward = lambda noisy, t, brain, keep=None: torch.as_tensor(target[: len(noisy)] * 3.0)
    out = prior.sample(np.zeros((3, 24), np.float32), seeds=[4, 9, 1])
    np.testing.assert_allclose(out, target, rtol=1e-5, atol=1e-5)


def test_sampling_is_seeded_per_item_and_the_null_condition_ignores_the_brain():
    torch.manual_seed(0)
    prior = WAVEPrior(WAVEPriorConfig.tiny()).eval()
    cond = np.random.default_rng(1).standard_normal((3, 24)).astype(np.float32)
    a = prior.sample(cond, seeds=[5, 6, 7])
    # batch-free up to float32 rounding (20 ancestral steps amplify it to ~1e-4; other seeds differ by ~0.1)
    np.testing.assert_allclose(prior.sample(cond[1:2], seeds=[6])[0], a[1], rtol=1e-3, atol=1e-3)
    assert not np.allclose(prior.sample(cond[1:2], seeds=[8])[0], a[1])
    noisy = torch.randn(3, 17, 16)
    steps = torch.tensor([3, 3, 3])
    brain = prior.brain_tokens(torch.as_tensor(cond))
    dropped = prior(noisy[:1].expand(3, -1, -1), steps, brain, torch.zeros(3, dtype=torch.bool))
    torch.testing.assert_close(dropped[0], dropped[2])  # the learned null replaces every condition
    kept = prior(noisy[:1].expand(3, -1, -1), steps, brain, torch.ones(3, dtype=torch.bool))
    assert not torch.allclose(kept[0], kept[2])


def test_prior_learns_a_known_condition_to_tokens_mapping():
    rng = np.random.default_rng(0)
    n = 6
    cond = torch.tensor(rng.standard_normal((n, 24)), dtype=torch.float32)
    tokens = rng.standard_normal((n, 17, 16)).astype(np.float32)
    tokens /= np.linalg.norm(tokens[:, :1], axis=2, keepdims=True)  # VD-normalised: token 0 has norm 1
    torch.manual_seed(0)
    prior = WAVEPrior(WAVEPriorConfig.tiny(cond_drop=0.0))
    opt = torch.optim.Adam(prior.parameters(), lr=5e-3)
    first = None
    for step in range(600):
        loss = prior.training_step({"cond": cond, "tokens": torch.as_tensor(tokens)}, step)
        first = first if first is not None else float(loss["mse"])
        opt.zero_grad()
        loss["loss"].backward()
        opt.step()
    assert float(loss["loss"].detach()) == pytest.approx(30.0 * float(loss["mse"]), rel=1e-5)  # the reference's prior_mult
    assert float(loss["mse"]) < 0.8 * first
    prior.eval()
    out = prior.sample(cond.numpy(), seeds=list(range(n))).reshape(n, -1)
    ref = tokens.reshape(n, -1)
    sim = (out / np.linalg.norm(out, axis=1, keepdims=True)) @ (ref / np.linalg.norm(ref, axis=1, keepdims=True)).T
    assert (sim.argmax(1) == np.arange(n)).all()  # each sample identifies its own target
    assert np.diag(sim).mean() > sim[~np.eye(n, dtype=bool)].mean() + 0.2


# ---------------------------------------------------------------------------------------- the recipe
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("wave-gen")
    _cli("simulate", "bold5000", root / "sim", "--seed", "0")
    _cli("train", PIPELINE, "--data", root / "sim", "--out", root / "run", "--preset", "tiny", "--device", "cpu",
         "--max-steps", "3")
    return root / "sim", root / "run"


def _reconstruct(sim, run, out, *extra):
    return _cli("reconstruct", "--pipeline", PIPELINE, "--preset", "tiny", "--data", sim, "--checkpoint", run,
                "--out", out, "--device", "cpu", "--limit", "2", "--subject", "1", "--json", *extra)


def test_train_writes_the_prior_and_its_test_identification(trained):
    _, run = trained
    cfg = json.loads((run / "prior" / "config.json").read_text())
    assert cfg["model_class"] == "WAVEPrior"
    assert (cfg["config"]["cond_dim"], cfg["config"]["n_tokens"], cfg["config"]["token_dim"]) == (24, 17, 16)
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert 0.0 <= metrics["test/all/prior_top1"] <= 1.0
    assert metrics["test/bold5000/CSI1/chance_prior_top1"] == pytest.approx(1 / 12)
    assert "joint/prior/mse" in metrics
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["prior"]["latents"] == "clip-vit-l-14-tokens-tiny" and prov["prior"]["train_config"]["max_steps"] == 3


def test_reconstruct_generates_with_the_prior_and_versatile_diffusion_then_evaluates(trained, tmp_path):
    from neurodecode.data import load_bold5000_stimuli
    from neurodecode.latents import get_space
    from neurodecode.models.wave import WAVE
    from neurodecode.recipes._wave import _load

    sim, run = trained
    out = tmp_path / "recons"
    summary = _reconstruct(sim, run, out)
    assert summary["n_done"] == 2
    prov = json.loads((out / "provenance.json").read_text())["runs"][-1]
    assert prov["mode"] == "generate"
    gen = prov["generator"]
    assert (gen["generator"], gen["weights"], gen["samples"]) == ("versatile-image", "tiny", 2)
    assert gen["options"]["renorm"] == "token0"
    pngs = sorted(out.rglob("*_recon.png"))
    assert len(pngs) == 2
    # generated, not retrieved: no BOLD5000 stimulus is written back
    model_json = json.loads((sim / "truth" / "model.json").read_text())
    recipe = json.loads((run / "recipe.json").read_text())
    t = _load(sim / "bold5000", recipe["data"], 1)
    every = sorted({str(i) for i in t.stimulus_ids})
    stimuli = load_bold5000_stimuli(sim / "bold5000", every, size=32)
    wave = WAVE.from_pretrained(run).eval()
    space = get_space("clip-vit-l-14-tiny")
    test = np.flatnonzero(t.split == "test")
    pred = wave.encode(t.X[test], t.lengths[test])
    for key, item in prov["best_pick"]["items"].items():
        png = next(p for p in pngs if p.stem == key.split("/")[-1])
        img = np.asarray(Image.open(png).convert("RGB"))
        assert img.shape == (32, 32, 3)
        assert not any(np.array_equal(img, s) for s in stimuli)
        assert item["picked"] == int(np.argmax(item["cosine"]))  # the best of the two candidates
        row = [str(i) for i in t.stimulus_ids[test]].index(item["stimulus_id"])
        assert item["seeds"] == [2 * row, 2 * row + 1]  # seed + samples * position + j
        emb = np.asarray(space.encode_images(img[None]), np.float64)[0]
        p = pred[row].astype(np.float64)
        cos = emb @ p / (np.linalg.norm(emb) * np.linalg.norm(p))
        assert cos == pytest.approx(item["cosine"][item["picked"]], abs=1e-4)  # the written one is the pick
    assert set(model_json["test_images"]) >= {i["stimulus_id"] for i in prov["best_pick"]["items"].values()}

    again = tmp_path / "again"
    _reconstruct(sim, run, again)
    for png in pngs:  # seeded per item: the same images
        twin = again / png.relative_to(out)
        np.testing.assert_array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(twin)))

    truth = sim / "bold5000" / "BOLD5000_Stimuli" / "Scene_Stimuli" / "Presented_Stimuli"
    result = _cli("evaluate", "--recons", out, "--truth", truth, "--metrics", "pixcorr,ssim", "--weights", "random",
                  "--n-boot", "20", "--json")
    assert result["n_items"] == 2 and result["ssim"]["value"] is not None


def test_generate_mode_needs_the_prior(trained, tmp_path):
    sim, run = trained
    bare = tmp_path / "bare"
    shutil.copytree(run, bare, ignore=shutil.ignore_patterns("prior", "checkpoints"))
    res = runner.invoke(app, ["reconstruct", "--pipeline", str(PIPELINE), "--preset", "tiny", "--data", str(sim),
                              "--checkpoint", str(bare), "--out", str(tmp_path / "o"), "--device", "cpu",
                              "--limit", "1", "--subject", "1"])
    assert res.exit_code != 0
    assert "generate.mode" in res.output and "retrieve" in res.output


def test_generation_recipe_problems_are_listed(trained, tmp_path):
    sim, _ = trained
    res = runner.invoke(app, ["train", str(PIPELINE), "--data", str(sim), "--out", str(tmp_path / "r"), "--preset",
                              "tiny", "--set", 'generate.mode="sample"', "--set", "generate.samples=0",
                              "--set", 'latents.image_tokens=""'])
    assert res.exit_code != 0
    for key in ("generate.mode", "generate.samples", "latents.image_tokens"):
        assert key in res.output
