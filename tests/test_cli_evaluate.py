"""`neurodecode evaluate`: NSD HDF5 / image-folder truth, reconstruct derivatives, JSON, report files."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from neurodecode.cli import app

runner = CliRunner()


def _images(rng, n, size=16):
    yy, xx = np.mgrid[0:size, 0:size] / size
    f = rng.uniform(1, 3, size=(n, 3, 1, 1))
    out = 0.5 + 0.4 * np.sin(2 * np.pi * f * (xx + yy * rng.uniform(0.2, 1, size=(n, 1, 1, 1))))
    return (np.moveaxis(out, 1, -1) * 255).astype(np.uint8)


def _nsd_like(tmp_path, rng):
    import h5py

    bricks = _images(rng, 12)
    path = tmp_path / "nsd_stimuli.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("imgBrick", data=bricks)
    deriv = tmp_path / "out"
    stim_ids = [3, 0, 7, 11, 5, 9, 2]
    for sid in stim_ids:
        noisy = np.clip(bricks[sid] + rng.normal(0, 20, bricks[sid].shape), 0, 255).astype(np.uint8)
        d = deriv / "sub-01" / "recon"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy).save(d / f"sub-01_stim-{sid}_desc-tiny_recon.png")
    (deriv / "provenance.json").write_text(json.dumps({"recipe": "tiny"}))
    return path, deriv, bricks, stim_ids


def test_evaluate_derivative_against_nsd_hdf5_json(tmp_path, rng):
    h5, deriv, bricks, stim_ids = _nsd_like(tmp_path, rng)
    res = runner.invoke(app, ["evaluate", "--recons", str(deriv), "--truth", str(h5), "--json", "--weights", "random",
                              "--metrics", "pixcorr,ssim", "--n-boot", "100"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert set(data) == {"pixcorr", "ssim", "n_items", "weights", "metrics_version"}
    assert data["n_items"] == 7
    for m in ("pixcorr", "ssim"):
        assert set(data[m]) == {"value", "ci", "chance", "shuffled"}
        assert data[m]["ci"][0] <= data[m]["value"] <= data[m]["ci"][1]
        assert data[m]["value"] > data[m]["shuffled"]
    # pairing by stim id really used the right bricks: scoring again by hand gives the same number
    from neurodecode.metrics import pixcorr

    files = sorted((deriv / "sub-01" / "recon").glob("*.png"))
    ids = [int(p.name.split("_stim-")[1].split("_")[0]) for p in files]
    recons = np.stack([np.asarray(Image.open(p)) for p in files])
    assert data["pixcorr"]["value"] == pytest_approx(float(np.mean(pixcorr(recons, bricks[ids]))))
    # files written beside the recons by default
    saved = json.loads((deriv / "metrics.json").read_text())
    assert saved["provenance"]["reconstruct"] == {"recipe": "tiny"}
    assert len(saved["pixcorr"]["per_item"]) == 7 and saved["item_ids"][0].startswith("sub-01/stim-")
    html = (deriv / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "<table>" in html


def pytest_approx(x):
    import pytest

    return pytest.approx(x, rel=1e-6)


def test_evaluate_image_folders_by_stem_and_alexnet(tmp_path, rng):
    truth = _images(rng, 7)
    (tmp_path / "t").mkdir()
    (tmp_path / "r").mkdir()
    for i, im in enumerate(truth):
        Image.fromarray(im).save(tmp_path / "t" / f"img_{i:02d}.png")
        Image.fromarray(im).save(tmp_path / "r" / f"img_{i:02d}.png")
    out = tmp_path / "report"
    res = runner.invoke(app, ["evaluate", "--recons", str(tmp_path / "r"), "--truth", str(tmp_path / "t"),
                              "--metrics", "alex2", "--weights", "random", "--n-boot", "50", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "alex2" in res.stdout and "random weights" in res.stdout
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["alex2"]["value"] == 1.0 and saved["weights"]["alex2"]["tier"] == "random"
    assert (out / "report.html").is_file()


def test_evaluate_errors(tmp_path, rng):
    h5, deriv, _, _ = _nsd_like(tmp_path, rng)
    bad = runner.invoke(app, ["evaluate", "--recons", str(deriv), "--truth", str(h5), "--metrics", "alex9"])
    assert bad.exit_code == 2 and "alex9" in bad.output
    (tmp_path / "empty").mkdir()
    miss = runner.invoke(app, ["evaluate", "--recons", str(deriv), "--truth", str(tmp_path / "empty"),
                               "--metrics", "pixcorr"])
    assert miss.exit_code == 1 and "truth" in miss.output and "Traceback" not in miss.output
    offline = runner.invoke(app, ["evaluate", "--recons", str(deriv), "--truth", str(h5), "--metrics", "alex2"])
    assert offline.exit_code == 1 and "alexnet-owt" in offline.output and "weights='random'" in offline.output


def test_evaluate_blurry_blend_and_retrieval_from_saved_latents(tmp_path, rng):
    import pytest

    from neurodecode.metrics import evaluate_reconstructions, retrieval_top1, save_predicted_latents

    h5, deriv, bricks, stim_ids = _nsd_like(tmp_path, rng)
    blurry_dir = tmp_path / "blurry"
    blurry_dir.mkdir()
    ramp = np.broadcast_to(np.linspace(0, 255, 16)[None, :, None], (16, 16, 3)).astype(np.uint8)
    for sid in stim_ids:  # stands in for MindEye2's low-level output (not an affine copy of the recon)
        Image.fromarray(ramp).save(blurry_dir / f"sub-01_stim-{sid}_desc-tiny_blurry.png")
    files = sorted((deriv / "sub-01" / "recon").glob("*.png"))
    order = [int(p.name.split("_stim-")[1].split("_")[0]) for p in files]
    latents = rng.normal(size=(12, 5, 4))
    pred = latents[order] + rng.normal(size=(7, 5, 4)) * 0.8
    save_predicted_latents(deriv, "01", order, pred, latents[order], space="clip")
    res = runner.invoke(app, ["evaluate", "--recons", str(deriv), "--truth", str(h5), "--blurry", str(blurry_dir),
                              "--json", "--metrics", "pixcorr,ssim", "--n-boot", "50", "--weights", "random"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    recons = np.stack([np.asarray(Image.open(p)) for p in files])
    blurry = np.stack([ramp] * 7)
    want = evaluate_reconstructions(recons, bricks[order], metrics="pixcorr,ssim", weights="random", n_boot=50,
                                    blurry=blurry)
    for m in ("pixcorr", "ssim"):  # both numbers: plain and 0.75 / 0.25 blended
        assert data[m]["value"] == pytest.approx(want[m]["value"])
        assert data["blended"][m]["value"] == pytest.approx(want["blended"][m]["value"])
    assert data["blended"]["pixcorr"]["value"] != pytest.approx(data["pixcorr"]["value"])
    ret = retrieval_top1(pred, latents[order], n_way=300, n_repeats=30, random_state=0)
    assert data["retrieval"]["image_retrieval"]["value"] == pytest.approx(ret["image_retrieval"])
    assert data["retrieval"]["brain_retrieval"]["value"] == pytest.approx(ret["brain_retrieval"])
    assert data["retrieval"]["n_way"] == 7
    html = (deriv / "report.html").read_text()
    assert "Image retrieval (MindEye2 FwdRetrieval)" in html and "Blended with the low-level output" in html
    (tmp_path / "other").mkdir()
    Image.fromarray(ramp).save(tmp_path / "other" / "sub-01_stim-999_desc-tiny_blurry.png")
    missing = runner.invoke(app, ["evaluate", "--recons", str(deriv), "--truth", str(h5), "--blurry",
                                  str(tmp_path / "other"), "--metrics", "pixcorr"])
    assert missing.exit_code == 1 and "blurry" in missing.output and "sub-01/stim-" in missing.output
