"""STTM's recipes through the command line on simulated NSD: train -> reconstruct -> evaluate, and the new-subject
transfer from a run pretrained without the subject (tiny presets, offline)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neurodecode.cli import app

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
runner = CliRunner()


def _cli(*args: object) -> dict:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, f"neurodecode {' '.join(map(str, args))}\n{res.output}"
    return json.loads(res.stdout) if "--json" in args else {}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim-nsd")
    _cli("simulate", "nsd", out, "--seed", "0")
    return out


def _train(recipe, sim, out, *sets):
    _cli("train", PIPELINES / f"{recipe}.toml", "--data", sim, "--out", out, "--preset", "tiny", "--device", "cpu",
         "--max-steps", "3", *[a for s in sets for a in ("--set", s)])
    return json.loads((out / "metrics.json").read_text())["metrics"], json.loads((out / "provenance.json").read_text())


def _reconstruct(recipe, sim, run, out, subject, *sets):
    summary = _cli("reconstruct", "--pipeline", PIPELINES / f"{recipe}.toml", "--preset", "tiny", "--data", sim,
                   "--checkpoint", run, "--out", out, "--device", "cpu", "--limit", "2", "--subject", subject, "--json",
                   *[a for s in sets for a in ("--set", s)])
    assert summary["n_done"] == 2 and summary["n_skipped"] == 0
    return summary


def test_sttm_nsd_trains_reconstructs_and_evaluates(sim, tmp_path):
    metrics, prov = _train("sttm_nsd", sim, tmp_path / "run")
    assert prov["subjects"] == ["nsd/subj01", "nsd/subj02"]
    for key in ("loss", "clip", "global_image", "global_text", "prior", "lowlevel"):
        assert np.isfinite(metrics[key]) and metrics[key] > 0, key  # every term of the objective is on
    assert metrics["test/nsd/subj01/chance"] == pytest.approx(1 / prov["n_test"]["nsd/subj01"])
    from neurodecode.models import load_decoder

    model = load_decoder(tmp_path / "run")
    assert model.config.target_tokens == [17, 16] and model.config.lowlevel_shape == [4, 16, 16]
    assert model.config.text_shape == [16]
    scaling = model.input_scaling["nsd/subj01"]
    assert float(scaling.std.min()) > 0 and not np.allclose(scaling.std.numpy(), 1.0)  # train statistics stored

    out = tmp_path / "recons"
    _reconstruct("sttm_nsd", sim, tmp_path / "run", out, 1)
    run = json.loads((out / "provenance.json").read_text())["runs"][-1]
    assert run["generator"]["generator"] == "versatile-image" and run["finished"] is not None
    assert run["recipe"]["generate"]["options"]["strength"] == 0.85  # img2img from the pixel branch's latent
    assert {p.name.split("_desc-")[1] for p in (out / "latents").glob("*.safetensors")} >= {
        "clipimagetokens_latents.safetensors", "vaelatents_latents.safetensors"}
    images = sorted(out.rglob("*_recon.png"))
    assert len(images) == 2
    truth = Path(sim) / "nsd" / "nsddata_stimuli" / "stimuli" / "nsd" / "nsd_stimuli.hdf5"
    result = _cli("evaluate", "--recons", out, "--truth", truth, "--metrics", "pixcorr,ssim", "--weights", "random",
                  "--n-boot", "20", "--out", tmp_path / "ev", "--json")
    assert result["n_items"] == 2 and -1.0 <= result["pixcorr"]["value"] <= 1.0


@pytest.mark.slow  # the fast check of the transfer is tests/test_sttm_transfer.py::test_transfer_trains_only_the_new_adapters
def test_sttm_new_subject_transfers_from_a_run_without_it(sim, tmp_path):
    _train("sttm_nsd", sim, tmp_path / "pre", 'data.subjects=["nsd/subj02"]')
    metrics, prov = _train("sttm_new_subject", sim, tmp_path / "new", f'decoder.init_from="{tmp_path / "pre"}"')
    assert prov["subjects"] == ["nsd/subj01"] and prov["fine_tune"]["method"] == "adapter"
    full = len(__import__("neurodecode.data", fromlist=["load_nsd"]).load_nsd(
        Path(sim) / "nsd", 1, sessions=1, zscore=None, average_train_repeats=True).train)
    assert prov["n_train"]["nsd/subj01"] == round(0.25 * full)  # [presets.tiny.finetune] fraction = 0.25
    assert np.isfinite(metrics["loss"]) and "test/nsd/subj01/top1" in metrics
    from safetensors.numpy import load_file

    pre, new = load_file(tmp_path / "pre" / "model.safetensors"), load_file(tmp_path / "new" / "model.safetensors")
    assert all(np.array_equal(v, new[k]) for k, v in pre.items())  # the pretrained model is untouched
    assert any(k.startswith("adapters.adapters.nsd__subj01.") for k in new)
    _reconstruct("sttm_new_subject", sim, tmp_path / "new", tmp_path / "recons", 1,
                 f'decoder.init_from="{tmp_path / "pre"}"')
    # a subject the pretrained model knows is refused
    res = runner.invoke(app, ["train", str(PIPELINES / "sttm_new_subject.toml"), "--data", str(sim), "--out",
                              str(tmp_path / "again"), "--preset", "tiny", "--device", "cpu", "--max-steps", "1",
                              "--set", f'decoder.init_from="{tmp_path / "pre"}"', "--set", 'finetune.subject="nsd/subj02"',
                              "--set", 'data.subjects=["nsd/subj02"]'])
    assert res.exit_code != 0 and "has not seen" in res.output


def test_recipes_are_checked_whole_with_teaching_errors():
    from neurodecode._core.errors import ValidationError
    from neurodecode.recipes import load_recipe, validate_recipe

    ok = validate_recipe(load_recipe(PIPELINES / "sttm_new_subject.toml", preset="tiny"))
    assert ok["finetune"] == {"method": "adapter", "subject": "nsd/subj01", "n_train": None, "fraction": 0.25}
    real = validate_recipe(load_recipe(PIPELINES / "sttm_nsd.toml"))
    assert real["decoder"]["name"] == "sttm" and set(real["latents"]) >= {"image_tokens", "text_embeds", "vae_latents"}
    bad = load_recipe(PIPELINES / "sttm_new_subject.toml", overrides=[
        'finetune.method="reset_tune"', "finetune.fraction=1.5", "decoder.prior_heds=3", "latents.tokens.space='x'"])
    with pytest.raises(ValidationError) as info:
        validate_recipe(bad)
    text = str(info.value)
    for where in ("finetune.method", "finetune.fraction", "prior_heads", "latents.tokens"):
        assert where in text, where  # every problem at once, with close matches
