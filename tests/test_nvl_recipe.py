"""The NVL recipe at tiny size: patched volumes -> extractor -> LLM stages -> captions, answers, images, maps."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from neurodecode.data import nsd_patch_grid
from neurodecode.models.nvl import INSTRUCTIONS, NVLBrainLLM
from neurodecode.recipes import load_recipe, reconstruct, train_from_recipe, validate_recipe
from neurodecode.recipes._nvl import load_volumes_for_recipe
from neurodecode.simulate import simulate_nsd

RECIPE = Path(__file__).resolve().parents[1] / "pipelines" / "nvl_nsd.toml"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nvl")
    sim = simulate_nsd(tmp / "sim", subjects=(1, 2), n_sessions=1, n_shared=40, n_voxels=150, seed=0,
                       formats=("nifti",))
    recipe = validate_recipe(load_recipe(RECIPE, preset="tiny"))
    train_from_recipe(recipe, sim.root, tmp / "run", device="cpu", max_steps=2)
    return recipe, sim.root, tmp / "run", tmp


def test_training_writes_both_stages_and_test_identification(run):
    recipe, root, out, _ = run
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    for s in ("nsd/subj01", "nsd/subj02"):
        assert metrics[f"test/{s}/chance"] == pytest.approx(1 / 40)
        assert 0 <= metrics[f"test/{s}/top1"] <= 1 and 0 <= metrics[f"test/{s}/shuffled_top1"] <= 1
    assert {"stage1/lm", "stage2/lm"} <= set(metrics)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["language_stage"]["stage2"] == "lora" and prov["language_stage"]["n_rows"] == 64
    model = NVLBrainLLM.from_pretrained(out / "llm")
    assert any("lora_" in k for k in model.state_dict())  # the stage-2 adapters were saved with it


def test_reconstruct_writes_captions_answers_images_and_concept_maps(run):
    recipe, root, out, tmp = run
    rec = tmp / "rec"
    summary = reconstruct(recipe, root, 1, out, rec, device="cpu", limit=2)
    assert summary["n_done"] == 2
    test = load_volumes_for_recipe(root, recipe["data"], 1).test.average_repeats()
    X = test.X[:2]
    model = NVLBrainLLM.from_pretrained(out / "llm")
    expected = model.answer(X, INSTRUCTIONS["brief"], max_new_tokens=recipe["generate"]["max_new_tokens"])
    caps = [(rec / "sub-01" / "recon" / f"sub-01_stim-{int(i):05d}_desc-nvlnsd_caption.txt").read_text().strip()
            for i in test.stimulus_ids[:2]]
    assert caps == [e.strip() for e in expected]
    assert len(list((rec / "sub-01" / "recon").glob("*_recon.png"))) == 2
    answers = json.loads((rec / "sub-01" / "answers.json").read_text())
    assert set(answers["instructions"]) == set(recipe["generate"]["answers"])
    assert all(set(a) == set(recipe["generate"]["answers"]) for a in answers["items"].values())
    concepts = json.loads((rec / "sub-01" / "concepts" / "concepts.json").read_text())
    grid = nsd_patch_grid(root, [1, 2], **recipe["data"]["volumes"])
    for item in concepts["items"].values():
        vol = np.asarray(nib.load(rec / "sub-01" / "concepts" / item["file"]).dataobj)
        assert vol.shape == tuple(grid.target_shape) and (vol >= 0).all()
        assert (rec / "sub-01" / "concepts" / item["file"].replace(".nii.gz", ".png")).is_file()


def test_recipe_refuses_unknown_instruction_kinds():
    recipe = load_recipe(RECIPE, preset="tiny", overrides=['generate.answers=["brief", "poem"]'])
    with pytest.raises(Exception, match="poem"):
        validate_recipe(recipe)
