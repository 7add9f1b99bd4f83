"""WAVE recipe on simulated BOLD5000: simulate -> train -> reconstruct through the CLI; the known answer
(decoding beats its shuffled control; masking the informative network hurts most); recipe problems."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from neurodecode.cli import app
from neurodecode.recipes._wave import label_prompt

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "wave_bold5000.toml"
runner = CliRunner()


def _cli(*args):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout) if "--json" in args else res.output


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    _cli("simulate", "bold5000", out, "--seed", "0")
    return out


def test_simulated_tree_is_a_valid_bold5000_tree(sim):
    report = _cli("check-data", "bold5000", sim, "--json")
    assert set(report["subjects"]) == {"CSI1", "CSI2"}
    assert report["subjects"]["CSI1"]["bold_runs"] == 8 and report["subjects"]["CSI1"]["test_images"] == 12
    model = json.loads((sim / "truth" / "model.json").read_text())
    gains = dict(zip(model["parcel_networks"], np.load(sim / "truth" / "model.npz")["gain"]))
    assert gains["Default"] == 1.0 and gains["Vis"] == 0.1 and gains["Limbic"] == 0.0
    assert json.loads((sim / "ceiling.json").read_text())["top1_retrieval"] > 0.5


def test_train_then_reconstruct_nearest_training_images_in_retrieve_mode(sim, tmp_path):
    run = tmp_path / "run"
    _cli("train", PIPELINE, "--data", sim, "--out", run, "--preset", "tiny", "--device", "cpu", "--max-steps", "3")
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["test/all/chance_top1"] == pytest.approx(1 / 12)
    assert {f"test/ablation/{n}/drop_percentile" for n in ("Vis", "Default", "Limbic")} <= set(metrics)
    ablation = json.loads((run / "ablation.json").read_text())
    assert ablation["n_items"] == 24 and len(ablation["networks"]) == 7
    out = tmp_path / "recons"
    summary = _cli("reconstruct", "--pipeline", PIPELINE, "--preset", "tiny", "--data", sim, "--checkpoint", run,
                   "--out", out, "--device", "cpu", "--limit", "2", "--subject", "1", "--json",
                   "--set", 'generate.mode="retrieve"')
    assert summary["n_done"] == 2
    prov = json.loads((out / "provenance.json").read_text())["runs"][-1]
    assert prov["mode"] == "retrieve"
    chosen = prov["generator"]["chosen"]
    test_images = set(json.loads((sim / "truth" / "model.json").read_text())["test_images"])
    assert chosen and not set(chosen.values()) & test_images  # a training image, never a test image
    from neurodecode.data import load_bold5000_stimuli

    for stim, picked in chosen.items():
        png = next(out.rglob(f"*stim-{Path(stim).stem}_*_recon.png"))
        np.testing.assert_array_equal(np.asarray(Image.open(png).convert("RGB")),
                                      load_bold5000_stimuli(sim / "bold5000", [picked], size=32)[0])

    truth = sim / "bold5000" / "BOLD5000_Stimuli" / "Scene_Stimuli" / "Presented_Stimuli"
    result = _cli("evaluate", "--recons", out, "--truth", truth, "--metrics", "pixcorr", "--weights", "random",
                  "--n-boot", "20", "--ablate", "yeo7", "--checkpoint", run, "--json")
    assert result["n_items"] == 2
    # the same model on the same test data: the drops the training run wrote
    for net, entry in ablation["networks"].items():
        for key in ("top1", "percentile"):
            assert result["ablation"]["networks"][net][key]["drop"] == pytest.approx(entry[key]["drop"], abs=1e-9)
    assert "networks" in json.loads((out / "metrics.json").read_text())["ablation"]


def test_known_answer_decoding_and_default_network_ablation(tmp_path):
    sim = tmp_path / "sim"
    _cli("simulate", "bold5000", sim, "--seed", "1", "--snr", "3")
    run = tmp_path / "run"
    _cli("train", PIPELINE, "--data", sim, "--out", run, "--preset", "tiny", "--device", "cpu", "--max-steps", "300")
    m = json.loads((run / "metrics.json").read_text())["metrics"]
    assert m["test/all/percentile"] > m["test/all/shuffled_percentile"] + 0.1
    assert m["test/all/top1"] > m["test/all/chance_top1"]
    # stage 2 carries the brain signal too: the prior's sampled tokens identify the test images
    assert m["test/all/prior_top1"] >= 2 * m["test/all/chance_top1"]
    assert m["test/all/prior_top1"] > m["test/all/shuffled_prior_top1"] + 0.1
    abl = json.loads((run / "ablation.json").read_text())
    assert abl["ranking"]["percentile"][0] == "Default"
    default = abl["networks"]["Default"]["percentile"]
    assert default["drop_ci"][0] > 0
    others = [abl["networks"][n]["percentile"]["drop"] for n in abl["networks"] if n not in ("Default", "Vis")]
    assert default["drop"] > max(others) + 0.05


def test_label_prompts_from_bold5000_names():
    assert label_prompt("kitchen3.jpg") == "a photo of a kitchen"
    assert label_prompt("n01440764_10110.JPEG") == "a photo of a n01440764"
    assert label_prompt("COCO_train2014_000000000042.jpg") == "a photo of a COCO train2014"


def test_recipe_problems_are_listed(sim, tmp_path):
    res = runner.invoke(app, ["train", str(PIPELINE), "--data", str(sim), "--out", str(tmp_path / "r"), "--preset",
                              "tiny", "--set", 'decoder.prompt="soft"', "--set", 'evaluate.ablate="yeo17"',
                              "--set", 'data.data="roi"'])
    assert res.exit_code != 0
    assert "decoder.prompt" in res.output and "evaluate.ablate" in res.output and "data.data" in res.output
