"""`neurodecode download`: lists the recipe's weights and licences; offline it fails fast naming what is missing."""

import json
import time

from typer.testing import CliRunner

from neurodecode.cli import app
from neurodecode.generate import recipe_weights

runner = CliRunner()

RECIPE = """
[generate]
generator = "sdxl-turbo"
captioner = "git"

[weights.clip]
id = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
licence = "MIT"

[weights.glim_text]
id = "google/flan-t5-large"
licence = "Apache-2.0"
"""


def test_recipe_weights_merge_generator_tables():
    rec = {"generate": {"generator": "sdxl-turbo", "captioner": "git"},
           "weights": {"clip": {"id": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "licence": "MIT"},
                       "short": "owner/repo"}}
    entries = {e["id"]: e for e in recipe_weights(rec)}
    assert set(entries) == {"laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "owner/repo", "stabilityai/sdxl-turbo",
                            "h94/IP-Adapter", "microsoft/git-large-coco", "sentence-transformers/all-MiniLM-L6-v2"}
    assert entries["stabilityai/sdxl-turbo"]["non_commercial"] is True
    assert entries["h94/IP-Adapter"]["files"] == ["sdxl_models/ip-adapter_sdxl_vit-h.safetensors"]
    assert entries["owner/repo"]["licence"].startswith("unknown")
    # the tiny tier needs no download
    assert recipe_weights({"generate": {"generator": "versatile", "weights": "tiny"}}) == []


def test_download_offline_fails_fast_naming_missing(tmp_path):
    recipe = tmp_path / "atm.toml"
    recipe.write_text(RECIPE)
    t0 = time.perf_counter()
    res = runner.invoke(app, ["download", "--pipeline", str(recipe)])
    assert time.perf_counter() - t0 < 20
    assert res.exit_code == 1
    for hub_id in ("stabilityai/sdxl-turbo", "h94/IP-Adapter", "google/flan-t5-large", "microsoft/git-large-coco"):
        assert hub_id in res.stderr
    assert "offline" in res.stderr and "NON-COMMERCIAL" in res.stderr  # licences printed, non-commercial flagged
    assert "Traceback" not in res.stderr


def test_download_dry_run_lists_licences(tmp_path):
    recipe = tmp_path / "atm.toml"
    recipe.write_text(RECIPE)
    res = runner.invoke(app, ["download", "--pipeline", str(recipe), "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert "stabilityai/sdxl-turbo" in data["non_commercial"]
    assert {w["id"] for w in data["weights"]} >= {"google/flan-t5-large", "h94/IP-Adapter"}


def test_recipe_without_weights(tmp_path):
    recipe = tmp_path / "none.toml"
    recipe.write_text('[generate]\ngenerator = "lowlevel"\nweights = "tiny"\n')
    res = runner.invoke(app, ["download", "--pipeline", str(recipe)])
    assert res.exit_code == 1 and "declares no weights" in res.stderr
