"""The embedded demo end to end on the shipped miniature models (smaller settings than `make demo`)."""

import json

import numpy as np
import pytest

from neurodecode._core.errors import DataIntegrityError
from neurodecode.demo import DemoSettings, run_demo, summary_lines
from neurodecode.demo._assets import demo_models_dir, load_demo_clip, load_demo_diffusion, verify_demo_models


def test_shipped_models_load_with_their_configs_and_checksums():
    sums = verify_demo_models()
    assert set(sums) >= {"clip/open_clip_model.safetensors", "diffusion/model.safetensors"}
    clip = load_demo_clip()
    assert clip.shape == (17, 64)
    diffusion = load_demo_diffusion()
    assert diffusion.config.cond_tokens == 17 and diffusion.config.cond_dim == 64
    # the shipped files are small (a few MB)
    total = sum(p.stat().st_size for p in demo_models_dir().rglob("*") if p.is_file())
    assert total < 12e6


def test_corrupted_shipped_model_is_detected(tmp_path):
    import shutil

    copy = tmp_path / "models"
    shutil.copytree(demo_models_dir(), copy)
    weights = copy / "diffusion" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(DataIntegrityError, match="checksum mismatch.*diffusion"):
        verify_demo_models(copy)


def test_tiny_clip_is_a_real_classifier():
    """The shipped CLIP was trained: zero-shot class accuracy on shipped (unseen) images is far above 10 %."""
    from neurodecode.demo._run import _class_text_embeddings, _pad32
    from neurodecode.simulate import load_stimuli

    images, labels, names, _ = load_stimuli("fashion-mnist", n=200)
    feats = load_demo_clip(output="image_pooled", normalize="l2").encode_images(_pad32(images))
    acc = float(((feats @ _class_text_embeddings(names).T).argmax(1) == labels).mean())
    assert acc > 0.6


def test_demo_end_to_end_beats_shuffled_control(tmp_path):
    settings = DemoSettings(n_sessions=1, n_test=30, n_voxels=400, epochs=6, steps=10)
    result = run_demo(tmp_path / "demo", settings, verbose=False)
    out = tmp_path / "demo"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == result["metrics"]
    # derivative layout
    pngs = sorted((out / "sub-01" / "recon").glob("sub-01_stim-*_desc-demo_recon.png"))
    assert len(pngs) == 30 and len(list((out / "sub-02" / "recon").glob("*.png"))) == 30
    assert (out / "dataset_description.json").is_file() and (out / "provenance.json").is_file()
    html = (out / "report.html").read_text()
    assert html.count("<img") >= 3 and "class_accuracy" in html
    # evaluate format, with controls
    for name in ("class_accuracy", "clip_two_way", "top1_token_retrieval", "pixcorr", "ssim"):
        entry = metrics[name]
        assert set(entry) >= {"value", "ci", "chance", "shuffled"}
        assert entry["ci"][0] <= entry["value"] <= entry["ci"][1]
    assert metrics["n_items"] == 60
    # brains carry information: decoded reconstructions beat the shuffled-brain control
    assert metrics["class_accuracy"]["value"] > metrics["class_accuracy"]["shuffled"] + 0.15
    assert metrics["class_accuracy"]["value"] > 0.3
    assert metrics["clip_two_way"]["value"] > metrics["clip_two_way"]["shuffled"] + 0.1
    assert np.isfinite(metrics["pixcorr"]["value"])
    lines = summary_lines(result)
    assert any("shuffled-brain control" in line for line in lines)
