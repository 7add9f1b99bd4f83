"""`neurodecode download`: one source of truth (spaces and generators declare their files), every recipe lists
its weights offline, non-hub artefacts are listed and never fetched, offline runs name the missing files."""

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurodecode.cli import app
from neurodecode.generate import recipe_weights

runner = CliRunner()
RECIPES = sorted(Path(__file__).resolve().parents[1].joinpath("pipelines").glob("*.toml"))

RECIPE = """
[latents]
image = "clip-vit-h-14"

[generate]
generator = "sdxl-turbo"
captioner = "git"

[weights.glim_text]
id = "google/flan-t5-large"
files = ["config.json", "model.safetensors|pytorch_model.bin"]
licence = "Apache-2.0"

[weights.theirs]
kind = "authors"
note = "the authors' checkpoint, not reused"
licence = "CC BY-NC 4.0"
"""


def test_recipe_weights_come_from_spaces_generators_and_extras():
    rec = {"latents": {"tokens": {"space": "clip-vit-l-14-tokens", "normalize": "vd"}},
           "generate": {"generator": "sdxl-turbo", "captioner": "git", "dtype": "float32"},
           "weights": {"clip": {"id": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "open_clip": "ViT-H-14/laion2b_s32b_b79k",
                                "licence": "MIT"},
                       "mine": {"id": "none (train with this recipe)"}, "tiny": "tiny (random init)"}}
    entries = {e["id"]: e for e in recipe_weights(rec)}
    # the CLIP ViT-L/14 space reads open_clip's copy, not the transformers repo
    assert "openai/clip-vit-large-patch14" not in entries
    assert entries["timm/vit_large_patch14_clip_224.openai"]["files"] == [["open_clip_model.safetensors",
                                                                          "open_clip_pytorch_model.bin"]]
    sdxl = entries["stabilityai/sdxl-turbo"]
    assert sdxl["non_commercial"] is True and sdxl["fetch"] is True
    assert ["unet/config.json"] in sdxl["files"]
    # float32: the full-precision file first, the fp16 variant as fallback
    unet = next(g for g in sdxl["files"] if g[0].startswith("unet/diffusion"))
    assert unet[:2] == ["unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors"]
    assert entries["h94/IP-Adapter"]["files"] == [["sdxl_models/ip-adapter_sdxl_vit-h.safetensors"]]
    assert ["config.json"] in entries["microsoft/git-large-coco"]["files"]
    # pseudo-ids are listed, never fetched
    assert entries["mine"]["kind"] == "run" and entries["mine"]["fetch"] is False
    assert entries["tiny"]["kind"] == "random" and entries["tiny"]["fetch"] is False
    # a reduced dtype prefers the fp16 variant
    half = {e["id"]: e for e in recipe_weights({**rec, "generate": {**rec["generate"], "dtype": "bfloat16"}})}
    unet = next(g for g in half["stabilityai/sdxl-turbo"]["files"] if g[0].startswith("unet/diffusion"))
    assert unet[0] == "unet/diffusion_pytorch_model.fp16.safetensors"
    # the tiny tier reads nothing from the hub
    assert all(not e["fetch"] for e in recipe_weights({"generate": {"generator": "versatile", "weights": "tiny"}}))


def test_extra_without_files_must_be_declared_by_a_component():
    from neurodecode._core.errors import ValidationError

    with pytest.raises(ValidationError, match="files"):
        recipe_weights({"weights": {"x": {"id": "owner/repo", "licence": "MIT"}}})


@pytest.mark.parametrize("preset", [None, "tiny"])
@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_dry_run(recipe, preset):
    args = ["download", "--pipeline", str(recipe), "--dry-run", "--json"] + (["--preset", preset] if preset else [])
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    for e in data["weights"]:
        assert e["licence"] and isinstance(e["non_commercial"], bool)
        if e["fetch"]:
            assert "/" in e["id"] and " " not in e["id"] and e["files"], e
            assert e["cached"] is False and e["missing"]  # nothing is cached on this machine
        else:
            assert e["kind"] in ("run", "authors", "random", "package", "folder", "note")
    ids = {e["id"] for e in data["weights"] if e["fetch"]}
    assert "openai/clip-vit-large-patch14" not in ids
    if preset == "tiny" and recipe.stem != "glim_zuco":
        assert not any(e["fetch"] and e["name"].startswith(("generate.", "latents.")) for e in data["weights"])


def test_download_offline_fails_fast_naming_missing_files(tmp_path):
    recipe = tmp_path / "atm.toml"
    recipe.write_text(RECIPE)
    t0 = time.perf_counter()
    res = runner.invoke(app, ["download", "--pipeline", str(recipe)])
    assert time.perf_counter() - t0 < 20
    assert res.exit_code == 1
    for hub_id in ("stabilityai/sdxl-turbo", "h94/IP-Adapter", "google/flan-t5-large", "microsoft/git-large-coco",
                   "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"):
        assert hub_id in res.stderr
    assert "unet/config.json" in res.stderr and "sdxl_models/ip-adapter_sdxl_vit-h.safetensors" in res.stderr
    assert "offline" in res.stderr and "NON-COMMERCIAL" in res.stderr  # licences printed, non-commercial flagged
    assert "not fetched" in res.stderr and "Traceback" not in res.stderr


def test_download_dry_run_lists_licences(tmp_path):
    recipe = tmp_path / "atm.toml"
    recipe.write_text(RECIPE)
    res = runner.invoke(app, ["download", "--pipeline", str(recipe), "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert set(data["non_commercial"]) == {"stabilityai/sdxl-turbo", "theirs"}
    assert data["not_fetched"] == ["weights.theirs"]
    assert {w["id"] for w in data["weights"]} >= {"google/flan-t5-large", "h94/IP-Adapter"}


def test_recipe_with_nothing_to_fetch(tmp_path):
    recipe = tmp_path / "none.toml"
    recipe.write_text('[generate]\ngenerator = "lowlevel"\nweights = "tiny"\n')
    res = runner.invoke(app, ["download", "--pipeline", str(recipe)])
    assert res.exit_code == 0 and "nothing to fetch" in res.stderr


def test_download_offline_with_a_complete_cache_succeeds(tmp_path, monkeypatch):
    """Everything the recipe reads is cached (fp16-variant files, as `hf download` leaves them): exit 0, paths."""
    from huggingface_hub import constants

    from neurodecode.testing import write_hub_fixture

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snap = write_hub_fixture("sd-vae", tmp_path / "hub", layout="cache", variant="fp16", size="tiny")
    recipe = tmp_path / "vae.toml"
    recipe.write_text('[latents.vae_latents]\nspace = "sd-vae"\n\n[generate]\ngenerator = "lowlevel"\nweights = "tiny"\n')
    res = runner.invoke(app, ["download", "--pipeline", str(recipe), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    (vae,) = [e for e in data["weights"] if e["fetch"]]
    assert vae["id"] == "stabilityai/sd-vae-ft-mse" and vae["cached"] is True and vae["path"] == str(snap)
    (snap / "config.json").unlink()  # a partial cache: the missing file is named
    res = runner.invoke(app, ["download", "--pipeline", str(recipe)])
    assert res.exit_code == 1 and "config.json" in res.stderr
