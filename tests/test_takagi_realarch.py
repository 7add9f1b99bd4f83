"""Takagi & Nishimoto and Brain Captioning as whole recipes on real-architecture fixtures (issue 20).

Every space and generator of the two recipes at its published widths (random weights, ``NEURODECODE_REALARCH_DEPTH``
layers per block, default 1), written in the Hugging Face cache layout and read through the recipes' own
``weights = None`` route: simulated NSD -> ridges -> BLIP / GIT captions, DPT depth maps and SD-2-depth /
SD + ControlNet-depth images. Marked ``realarch`` and ``slow`` (``make test-real``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neurodecode.recipes import load_recipe, reconstruct, train_from_recipe
from neurodecode.simulate import simulate_nsd
from neurodecode.testing import realarch_depth, write_hub_fixture

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
DEPTH = realarch_depth()

pytestmark = [pytest.mark.realarch, pytest.mark.slow, pytest.mark.chain]

#: fixtures each recipe reads (component names of neurodecode.testing.HUB_FIXTURES)
COMPONENTS = {"takagi_nsd": ("sd-v1-4", "blip-base", "dpt-large", "sd2-depth"),
              "brain_captioning_nsd": ("git", "dpt-large", "sd-controlnet-depth", "lowlevel", "sd-vae")}


@pytest.mark.timeout(3600)  # 26-36 min each on 2 shared CPU cores (DPT targets are 4 x 577 x 1024 per image)
@pytest.mark.parametrize("recipe", sorted(COMPONENTS))
def test_recipe_runs_at_real_widths(recipe, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("NEURODECODE_CACHE", str(tmp_path / "cache"))
    for component in COMPONENTS[recipe]:
        write_hub_fixture(component, tmp_path / "hub", layout="cache", depth=DEPTH)
    sim = simulate_nsd(tmp_path / "sim", subjects=(1,), n_sessions=1, n_shared=20, n_voxels=120, seed=0,
                       formats=("hdf5",), annotations="image")
    r = load_recipe(PIPELINES / f"{recipe}.toml", overrides=[
        'data.subjects=["nsd/subj01"]', "data.sessions=1", 'decoder.cv="loo"', 'latents.dtype="float16"',
        'train.device="cpu"', "generate.steps=2", "generate.samples=1", "generate.batch_size=1"])
    train_from_recipe(r, sim.root, tmp_path / "run", device="cpu")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    assert metrics and all(np.isfinite(v) for v in metrics.values() if isinstance(v, float))
    summary = reconstruct(r, sim.root, 1, tmp_path / "run", tmp_path / "rec", device="cpu", limit=1)
    assert summary["n_done"] == 1
    caption = next((tmp_path / "rec").rglob("*_caption.txt")).read_text().strip()
    assert isinstance(caption, str)
    depth = np.load(next((tmp_path / "rec").rglob("*_depth.npy")))
    assert depth.shape == (64, 64) and depth.min() >= -1 and depth.max() <= 1
    from PIL import Image

    image = np.asarray(Image.open(next((tmp_path / "rec").rglob("*_recon.png"))))
    assert image.ndim == 3 and image.shape[-1] == 3 and image.shape[0] >= 256  # SD at its own resolution
