"""Neuro-Vision to Language as a whole recipe at real widths (issue 24 item 3): random weights, real shapes.

Fixtures in the hub layout, read through the recipe's ``weights`` folder route (``decoder.llm``,
``[latents.*] weights``, ``generate.weights`` = folders): Llama-3-8B at its published widths (hidden 4096, 32 heads,
8 KV heads, FFN 14336, vocabulary 128,256; ``NEURODECODE_REALARCH_DEPTH`` layers, default 1) in bfloat16, CLIP
ViT-L/14 (open_clip), the SD VAE and Stable unCLIP-small (CLIP-L, 768). The ViT3D is the paper's width (768,
12 heads, 14^3 = 2,744 values per patch on the 81 x 104 x 83 grid) at the same reduced depth, with the
concept-map ensemble's patch sizes 14, 12, 10. Simulated NSD (one subject, one session) -> extractors -> LM
stages 1 (frozen) and 2 (LoRA) -> one caption, one answer, one image (unCLIP with the LM's prompt, start
``(1 - 0.93) z_v + 0.93 noise``) and one concept map (GradCAM ensemble). Marked ``realarch`` and ``slow``.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import pytest

from neurodecode.recipes import load_recipe, reconstruct, train_from_recipe, validate_recipe
from neurodecode.simulate import simulate_nsd
from neurodecode.testing import write_hub_fixture

RECIPE = Path(__file__).resolve().parents[1] / "pipelines" / "nvl_nsd.toml"
_DEPTH_ENV = os.environ.get("NEURODECODE_REALARCH_DEPTH", "1")
DEPTH = None if _DEPTH_ENV == "full" else int(_DEPTH_ENV)

pytestmark = [pytest.mark.realarch, pytest.mark.slow, pytest.mark.chain]


@pytest.mark.timeout(3600)  # about 10 min on 2 free cores; far longer on a shared machine
def test_nvl_recipe_runs_at_real_widths(tmp_path, monkeypatch):
    import nibabel as nib
    from PIL import Image
    from safetensors import safe_open

    monkeypatch.setenv("NEURODECODE_CACHE", str(tmp_path / "cache"))  # the feature cache of these random weights
    t0 = time.perf_counter()
    folders = {name: write_hub_fixture(name, tmp_path / "hub" / name, depth=DEPTH)
               for name in ("llama-3-8b", "clip-vit-l-14", "sd-vae", "unclip-small")}
    t_fixtures = time.perf_counter() - t0
    sim = simulate_nsd(tmp_path / "sim", subjects=(1,), n_sessions=1, n_shared=20, n_voxels=120, seed=0,
                       formats=("nifti",))
    depth = 16 if DEPTH is None else DEPTH
    recipe = validate_recipe(load_recipe(RECIPE, overrides=[
        'data.subjects=["nsd/subj01"]', "data.sessions=1",
        f'latents.clip.weights="{folders["clip-vit-l-14"]}"', 'latents.dtype="float32"',
        f'latents.vae_latents.weights="{folders["sd-vae"]}"', "latents.vae_latents.image_size=128",
        f"decoder.depth={depth}", f'decoder.llm="{folders["llama-3-8b"]}"', 'decoder.llm_dtype="bfloat16"',
        "decoder.llm_stage.max_rows=2", "decoder.llm_stage.batch_size=2",
        'decoder.llm_stage.instructions=["brief", "sd_prompt"]',
        "train.batch_size=2", 'train.precision="fp32"',
        f'generate.weights="{folders["unclip-small"]}"', "generate.steps=2", "generate.batch_size=1",
        "generate.max_new_tokens=4", 'generate.answers=["question"]', "generate.concept_maps=true"]))
    assert recipe["generate"]["prompt"] == "lm" and recipe["generate"]["options"]["init_mix"] == 0.93
    t1 = time.perf_counter()
    train_from_recipe(recipe, sim.root, tmp_path / "run", device="cpu", max_steps=1)
    t_train = time.perf_counter() - t1
    run = tmp_path / "run"
    prov = json.loads((run / "provenance.json").read_text())
    assert set(prov["concept_extractors"]) == {"14", "12", "10"}
    assert prov["patches"]["patch_dim"] == 14 ** 3
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert {"stage1/lm", "stage2/lm"} <= set(metrics) and np.isfinite(metrics["stage2/lm"])
    with safe_open(str(run / "llm" / "model.safetensors"), "np") as f:  # the frozen 8B-wide LM is not saved
        keys = list(f.keys())
        assert f.get_slice("projector.2.weight").get_shape() == [4096, 4096]
    assert any("lora_" in k for k in keys) and not any(k.startswith("lm.") and "lora_" not in k for k in keys)

    t2 = time.perf_counter()
    summary = reconstruct(recipe, sim.root, 1, run, tmp_path / "rec", device="cpu", limit=1)
    t_rec = time.perf_counter() - t2
    assert summary["n_done"] == 1
    sub = tmp_path / "rec" / "sub-01"
    caption = next(sub.rglob("*_caption.txt")).read_text()
    answers = json.loads((sub / "answers.json").read_text())
    prompts = json.loads((sub / "sd_prompts.json").read_text())
    assert len(answers["items"]) == 1 and set(next(iter(answers["items"].values()))) == {"question"}
    assert len(prompts["items"]) == 1 and isinstance(caption, str)
    image = np.asarray(Image.open(next(sub.rglob("*_recon.png"))))
    assert image.shape == (128, 128, 3)  # unCLIP from the 4 x 16 x 16 VAE latent
    concepts = json.loads((sub / "concepts" / "concepts.json").read_text())
    assert concepts["ensemble"]["patch_sizes"] == [14, 12, 10] and concepts["method"].startswith("GradCAM")
    item = next(iter(concepts["items"].values()))
    vol = np.asarray(nib.load(sub / "concepts" / item["file"]).dataobj)
    assert vol.shape == (81, 104, 83) and 0 <= vol.min() and vol.max() <= 1 and vol.max() > 0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print(f"\nNVL realarch (depth {depth}): fixtures {t_fixtures:.0f} s, train {t_train:.0f} s, reconstruct "
          f"{t_rec:.0f} s, peak RSS {peak_gb:.1f} GB; caption {caption.strip()!r}, answer "
          f"{next(iter(answers['items'].values()))}, prompt {next(iter(prompts['items'].values()))!r}")
