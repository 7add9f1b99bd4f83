"""The NVL recipe at tiny size: patched volumes -> extractor -> LLM stages -> captions, answers, images, maps."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from neurodecode.data import nsd_patch_grid
from neurodecode.generate import get_generator
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
    assert set(prov["concept_extractors"]) == {"4", "5", "6"}  # the concept-map ensemble, one extractor per size
    from neurodecode.models.nvl import NVL

    for size in (5, 6):
        ext = NVL.from_pretrained(out / f"extractor_p{size}")
        assert ext.config.patch_dim == size ** 3 and ext.config.width == 24
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
    # the image is unCLIP with the LM's Stable Diffusion prompt, started from (1 - 0.93) z_v + 0.93 noise
    prompts = json.loads((rec / "sub-01" / "sd_prompts.json").read_text())["items"]
    said = model.answer(X, INSTRUCTIONS["sd_prompt"], max_new_tokens=recipe["generate"]["max_new_tokens"])
    assert list(prompts.values()) == said
    gen = get_generator("unclip", weights="tiny", config={"embed_dim": 16})
    images = gen.generate(model.predict_latents(X), prompts=said, seeds=[0, 1], steps=2, init_mix=0.93)
    for image, sid in zip(images, test.stimulus_ids[:2]):
        png = np.asarray(Image.open(rec / "sub-01" / "recon" / f"sub-01_stim-{int(sid):05d}_desc-nvlnsd_recon.png"))
        assert np.abs(png.astype(int) - image).max() <= 1
    concepts = json.loads((rec / "sub-01" / "concepts" / "concepts.json").read_text())
    assert concepts["ensemble"]["patch_sizes"] == [4, 5, 6] and concepts["method"].startswith("GradCAM")
    grid = nsd_patch_grid(root, [1, 2], **recipe["data"]["volumes"])
    for item in concepts["items"].values():
        vol = np.asarray(nib.load(rec / "sub-01" / "concepts" / item["file"]).dataobj)
        assert vol.shape == tuple(grid.target_shape) and (vol >= 0).all() and vol.max() <= 1
        assert (rec / "sub-01" / "concepts" / item["file"].replace(".nii.gz", ".png")).is_file()


def test_empty_prompt_option_gives_the_prompt_free_image(run):
    recipe, root, out, tmp = run
    empty = validate_recipe(load_recipe(RECIPE, preset="tiny", overrides=['generate.prompt="empty"',
                                                                           "generate.concept_maps=false"]))
    rec = tmp / "rec_empty"
    reconstruct(empty, root, 1, out, rec, device="cpu", limit=1)
    assert not (rec / "sub-01" / "sd_prompts.json").exists()
    test = load_volumes_for_recipe(root, recipe["data"], 1).test.average_repeats()
    model = NVLBrainLLM.from_pretrained(out / "llm")
    gen = get_generator("unclip", weights="tiny", config={"embed_dim": 16})
    image = gen.generate(model.predict_latents(test.X[:1]), seeds=[0], steps=2, init_mix=0.93)[0]
    png = np.asarray(Image.open(next((rec / "sub-01" / "recon").glob("*_recon.png"))))
    assert np.abs(png.astype(int) - image).max() <= 1


@pytest.mark.parametrize("override, word", [('generate.answers=["brief", "poem"]', "poem"),
                                            ('generate.prompt="caption"', "generate.prompt"),
                                            ('generate.generator="versatile"', "generate.prompt"),
                                            ('generate.concept_method="saliency"', "concept_method"),
                                            ("decoder.patch_sizes=[5, 6]", "patch_sizes"),
                                            ("decoder.patch_sizes=[4, 4]", "patch_sizes")])
def test_recipe_refuses_bad_options(override, word):
    recipe = load_recipe(RECIPE, preset="tiny", overrides=[override])
    with pytest.raises(Exception, match=word):
        validate_recipe(recipe)
