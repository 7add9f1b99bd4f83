"""`neurodecode embed`: fills the cache, reuses it, explains mismatches and bad input with exit code 1."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from neurodecode.cli import app
from neurodecode.latents import FeatureCache, get_space

runner = CliRunner()


def test_embed_text_file_then_hit_then_mismatch(tmp_path):
    txt = tmp_path / "sentences.txt"
    txt.write_text("a cat on a mat\na red bus in the rain\nthree apples\n", encoding="utf-8")
    out = tmp_path / "cache"
    args = ["embed", "--space", "minilm-l6-tiny", "--stimuli", str(txt), "--out", str(out), "--device", "cpu",
            "--batch-size", "2", "--shard-size", "2"]
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["complete"] and summary["n"] == 3 and summary["n_shards"] == 2 and summary["shape"] == [32]
    feats = FeatureCache(out).load()
    ref = get_space("minilm-l6-tiny").encode_texts(["a cat on a mat", "a red bus in the rain", "three apples"])
    np.testing.assert_allclose(feats, ref, atol=2e-3)  # float16 storage
    mtime = (out / "shard-00000-p0.safetensors").stat().st_mtime_ns
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "complete" in res.stdout
    assert (out / "shard-00000-p0.safetensors").stat().st_mtime_ns == mtime  # reused, not rewritten
    res = runner.invoke(app, [*args[:2], "flan-t5-large-encoder-tiny", *args[3:]])
    assert res.exit_code == 1
    assert "error: out_dir" in res.stderr and "--overwrite" in res.stderr and "Traceback" not in res.stderr
    res = runner.invoke(app, [*args[:2], "flan-t5-large-encoder-tiny", *args[3:], "--overwrite", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["space"] == "flan-t5-large-encoder-tiny"


def test_embed_image_folder_with_vd_norm(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (30, 26, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    res = runner.invoke(app, ["embed", "--space", "clip-vit-l-14-tokens-tiny", "--stimuli", str(folder), "--out",
                              str(tmp_path / "c"), "--device", "cpu", "--normalize", "vd", "--json"])
    assert res.exit_code == 0, res.output
    cache = FeatureCache(tmp_path / "c")
    assert cache.shape == (17, 16) and cache.key["normalize"] == "vd"
    np.testing.assert_allclose(np.linalg.norm(cache.load()[:, 0], axis=-1), 1.0, rtol=2e-3)


def test_embed_errors_teach(tmp_path):
    res = runner.invoke(app, ["embed", "--space", "clip-vit-l14", "--stimuli", str(tmp_path), "--out",
                              str(tmp_path / "c"), "--device", "cpu"])
    assert res.exit_code == 1 and "registered latent space" in res.stderr
    res = runner.invoke(app, ["embed", "--space", "clip-vit-l-14-tiny", "--stimuli", str(tmp_path / "nope.hdf5"),
                              "--out", str(tmp_path / "c"), "--device", "cpu"])
    assert res.exit_code == 1 and "nope.hdf5" in res.stderr
    res = runner.invoke(app, ["embed", "--space", "clip-vit-l-14", "--stimuli", str(tmp_path), "--out",
                              str(tmp_path / "c"), "--device", "cpu"])
    assert res.exit_code == 1 and "offline" in res.stderr and "ViT-L-14" in res.stderr
