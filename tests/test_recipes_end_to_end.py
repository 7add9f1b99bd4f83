"""What a lab tries first: every shipped recipe runs simulate -> train --preset tiny -> reconstruct -> evaluate.

One parametrised test over ``pipelines/*.toml`` (a new recipe is picked up without editing this file),
entirely through the command line and offline. Each dataset is simulated once per session of the
suite; the two fine-tuning recipes start from the run of their pretraining recipe, as a lab would
(``--set decoder.init_from=RUN``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tomllib
from typer.testing import CliRunner

from neurodecode.cli import app

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
RECIPES = sorted(p.stem for p in PIPELINES.glob("*.toml"))
#: fine-tuning recipe -> the recipe whose run it starts from, pretrained without the new subject (as the
#: recipes' headers tell a lab to)
PRETRAIN = {"mindbridge_new_subject": ("mindbridge_nsd", ('data.subjects=["nsd/subj02"]',)),
            "mindeye2_one_session": ("mindeye2_nsd", ('data.subjects=["nsd/subj02"]',)),
            "sttm_new_subject": ("sttm_nsd", ('data.subjects=["nsd/subj02"]',))}

runner = CliRunner()


def _cli(*args: object) -> dict:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, f"neurodecode {' '.join(map(str, args))}\n{res.output}"
    return json.loads(res.stdout) if "--json" in args else {}


def _dataset(recipe: str) -> str:
    return tomllib.loads((PIPELINES / f"{recipe}.toml").read_text())["data"]["dataset"]


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    """Dataset name -> the folder `neurodecode simulate` wrote (with its defaults); `--data` takes it as is."""
    cache: dict[str, Path] = {}

    def get(dataset: str) -> Path:
        if dataset not in cache:
            out = tmp_path_factory.mktemp(f"sim-{dataset}")
            _cli("simulate", dataset, out, "--seed", "0")
            cache[dataset] = out
        return cache[dataset]

    return get


@pytest.fixture(scope="module")
def runs(tmp_path_factory, sims):
    """(recipe, overrides) -> its tiny run folder (trained once per session of the suite)."""
    cache: dict[tuple[str, tuple[str, ...]], Path] = {}

    def get(recipe: str, overrides: tuple[str, ...] = ()) -> Path:
        key = (recipe, overrides)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"run-{recipe}")
            sets = list(overrides)
            if recipe in PRETRAIN:
                sets.append(f'decoder.init_from="{get(*PRETRAIN[recipe])}"')
            _cli("train", PIPELINES / f"{recipe}.toml", "--data", sims(_dataset(recipe)), "--out", out,
                 "--preset", "tiny", "--device", "cpu", "--max-steps", "4", *[a for s in sets for a in ("--set", s)])
            cache[key] = out
        return cache[key]

    return get


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_runs_end_to_end_at_tiny_size(recipe, sims, runs, tmp_path):
    from neurodecode.cli._common import resolve_data_root

    dataset = _dataset(recipe)
    sim = sims(dataset)
    root = resolve_data_root(sim, dataset)
    run = runs(recipe)
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics and all(np.isfinite(v) for v in metrics.values() if isinstance(v, float))
    assert (run / "recipe.json").is_file() and (run / "provenance.json").is_file()
    if dataset in ("meg-masc", "broderick2019", "mous", "brennan2019"):  # speech: segment identification scored by train, nothing to reconstruct
        assert 0.0 <= metrics["test/all/top1"] <= 1.0 and (run / "segments.json").is_file()
        return

    out = tmp_path / "recons"
    args: list[object] = ["reconstruct", "--pipeline", PIPELINES / f"{recipe}.toml", "--preset", "tiny",
                          "--data", sim, "--checkpoint", run, "--out", out, "--device", "cpu", "--limit", "2",
                          "--json"]
    if dataset == "nsd":
        finetuned = tomllib.loads((PIPELINES / f"{recipe}.toml").read_text()).get("finetune", {}).get("subject")
        args += ["--subject", finetuned or 1]
    if recipe in PRETRAIN:
        args += ["--set", f'decoder.init_from="{runs(*PRETRAIN[recipe])}"']
    summary = _cli(*args)
    assert summary["n_done"] >= 2 and summary["n_skipped"] == 0
    prov = json.loads((out / "provenance.json").read_text())["runs"][-1]
    assert prov["finished"] is not None
    assert len(prov["written"]) == summary["n_done"]  # recorded batch by batch, as the items were written

    if dataset == "zuco":
        texts = sorted(out.rglob("*_recon.txt"))
        # one line per sentence (an untrained tiny T5 may well decode an empty one)
        assert len(texts) == summary["n_done"] and all(t.read_text().count("\n") == 1 for t in texts)
        result = _cli("evaluate", "--recons", out, "--n-boot", "20", "--json")
        assert "bleu1" in result and 0.0 <= result["bleu1"]["value"] <= 1.0
    else:
        images = sorted(out.rglob("*_recon.png"))
        assert len(images) == summary["n_done"]
        truth = {"nsd": root / "nsddata_stimuli" / "stimuli" / "nsd" / "nsd_stimuli.hdf5",
                 "things-eeg2": root / "image_set" / "test_images",
                 "things-meg": root / "stimuli" / "images_test_meg",
                 "bold5000": root / "BOLD5000_Stimuli" / "Scene_Stimuli" / "Presented_Stimuli"}[dataset]
        if prov["generator"]["generator"] == "nearest-training-image":  # MindEye2's retrieval fallback
            from PIL import Image

            from neurodecode.data import load_nsd, load_nsd_stimuli

            subj = load_nsd(root, args[args.index("--subject") + 1], sessions=1)
            chosen = prov["generator"]["chosen_nsd_ids"]
            assert len(chosen) == len(images) and set(chosen) <= set(subj.train.stimulus_ids.tolist())
            assert not set(chosen) & set(subj.test.stimulus_ids.tolist())  # never a test image
            shown = load_nsd_stimuli(root, chosen)
            written = prov["written"]  # item label -> seed = base + position: generation order, as chosen
            order = sorted(written, key=written.get)
            files = {lab: next(p for p in images if f"_stim-{lab}_" in p.name) for lab in order}
            assert all(np.array_equal(np.asarray(Image.open(files[lab])), img) for lab, img in zip(order, shown))
        result = _cli("evaluate", "--recons", out, "--truth", truth, "--metrics", "pixcorr,ssim", "--weights",
                      "random", "--n-boot", "20", "--out", tmp_path / "ev", "--json")
        assert result["n_items"] == len(images) and -1.0 <= result["pixcorr"]["value"] <= 1.0
        assert (tmp_path / "ev" / "metrics.json").is_file()


#: one recipe per decoder family (the fine-tuning recipes reuse their family's code)
FAMILIES = ["mindbridge_nsd", "mindeye2_nsd", "brain_diffuser_nsd", "atm_things_eeg2", "glim_zuco", "sttm_nsd", "nvl_nsd",
            "meg_realtime_things"]


@pytest.mark.parametrize("recipe", FAMILIES)
def test_training_is_reproducible_bit_for_bit_on_cpu(recipe, sims, runs, tmp_path):
    """Same seed, same batch size and threads: the same weights, byte for byte (model init, data order, dropout)."""
    from safetensors.numpy import load_file

    first = runs(recipe)
    again = tmp_path / "again"
    _cli("train", PIPELINES / f"{recipe}.toml", "--data", sims(_dataset(recipe)), "--out", again, "--preset", "tiny",
         "--device", "cpu", "--max-steps", "4")
    files = sorted(p.relative_to(first) for p in first.rglob("model.safetensors") if "checkpoints" not in p.parts)
    assert files and files == sorted(p.relative_to(again) for p in again.rglob("model.safetensors")
                                     if "checkpoints" not in p.parts)
    for rel in files:
        a, b = load_file(first / rel), load_file(again / rel)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{rel}:{k}")
    if recipe == "brain_diffuser_nsd":
        return  # closed-form ridge: no random state enters the fit
    # and another seed gives other weights (the seed is what fixes them)
    other = tmp_path / "seed1"
    _cli("train", PIPELINES / f"{recipe}.toml", "--data", sims(_dataset(recipe)), "--out", other, "--preset", "tiny",
         "--device", "cpu", "--max-steps", "4", "--set", "train.seed=1")
    a, b = load_file(first / files[0]), load_file(other / files[0])
    assert any(not np.array_equal(a[k], b[k]) for k in a if a[k].dtype.kind == "f")
