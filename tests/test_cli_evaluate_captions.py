"""`neurodecode evaluate --protocol coco-captions`: decoded captions and depth maps of an NSD derivative."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neurodecode.cli import app
from neurodecode.metrics import evaluate_captions, evaluate_depth
from neurodecode.recipes._targets import read_nsd_captions
from neurodecode.simulate import load_simulated_depth

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
runner = CliRunner()


def _cli(*args: object) -> dict:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout) if "--json" in args else {}


@pytest.fixture(scope="module")
def derivative(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("caps")
    _cli("simulate", "nsd", tmp / "sim", "--seed", "0", "--annotations", "image")
    root = tmp / "sim" / "nsd" if (tmp / "sim" / "nsd").is_dir() else tmp / "sim"
    _cli("train", PIPELINES / "takagi_nsd.toml", "--data", tmp / "sim", "--out", tmp / "run", "--preset", "tiny",
         "--device", "cpu")
    _cli("reconstruct", "--pipeline", PIPELINES / "takagi_nsd.toml", "--data", tmp / "sim", "--checkpoint",
         tmp / "run", "--out", tmp / "rec", "--subject", "1", "--device", "cpu", "--limit", "4", "--preset", "tiny")
    return tmp / "rec", root


def test_captions_and_depth_are_scored_against_their_own_stimuli(derivative, tmp_path):
    rec, root = derivative
    out = _cli("evaluate", "--recons", rec, "--protocol", "coco-captions", "--truth", root, "--depth-truth", root,
               "--metrics", "bleu1,bleu4,rougeL,cider", "--weights", "random", "--n-boot", "20", "--out",
               tmp_path / "ev", "--json")
    files = sorted(rec.glob("sub-*/recon/*_caption.txt"))
    assert out["n_items"] == len(files) == 4
    # the same pairs built independently: each file's stimulus id -> its COCO captions
    stims = [int(f.name.split("stim-")[1].split("_")[0]) for f in files]
    caps = read_nsd_captions(root, ["nsddata_stimuli/stimuli/nsd/annotations/captions_train2017.json",
                                    "nsddata_stimuli/stimuli/nsd/annotations/captions_val2017.json"])
    ref = evaluate_captions([f.read_text().strip() for f in files], [caps[s] for s in stims],
                            metrics=["bleu1", "bleu4", "rougeL", "cider"], weights="random", n_boot=20)
    for m in ("bleu1", "bleu4", "rougeL", "cider"):
        assert out[m]["value"] == pytest.approx(ref[m]["value"])
    depth_files = sorted(rec.glob("sub-*/recon/*_depth.npy"))
    pred = np.stack([np.load(f) for f in depth_files])
    true = load_simulated_depth(root, [int(f.name.split("stim-")[1].split("_")[0]) for f in depth_files])
    import torch

    true = torch.nn.functional.interpolate(torch.from_numpy(true.astype(np.float32))[:, None], size=pred.shape[1:],
                                           mode="bilinear", align_corners=False)[:, 0].numpy()
    want = evaluate_depth(pred, true, n_boot=20)
    assert out["depth"]["si_log"]["value"] == pytest.approx(want["si_log"]["value"])
    assert (tmp_path / "ev" / "report.html").is_file()


def test_missing_truth_is_explained(derivative):
    rec, _ = derivative
    res = runner.invoke(app, ["evaluate", "--recons", str(rec), "--protocol", "coco-captions"])
    assert res.exit_code == 2 and "--truth" in res.output
