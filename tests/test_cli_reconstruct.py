"""`neurodecode reconstruct` end to end on an NSD fixture with a tiny ridge decoder and tiny generators."""

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from neurodecode.cli import app
from neurodecode.data import load_nsd
from neurodecode.models.brain_diffuser import BrainDiffuser, BrainDiffuserConfig
from neurodecode.testing import make_nsd_fixture

runner = CliRunner()

RECIPE = """
[data]
dataset = "nsd"
sessions = 1

[decoder]
name = "brain_diffuser"

[generate]
generator = "versatile"
weights = "tiny"
steps = 2
guidance = 2.0
batch_size = 2
seed = 3
captioner = "git"
captioner_weights = "tiny"
config = {{ width = 8, text_tokens = 3, image_size = 4 }}
captioner_config = {{ width = 8, image_size = 4 }}
captioner_options = {{ max_length = 6 }}

[generate.options]
text_weight = 0.4

[weights.vd]
id = "shi-labs/versatile-diffusion"
licence = "MIT"
{extra}
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = make_nsd_fixture(tmp_path_factory.mktemp("nsd"), subjects=(1,), n_sessions=1, formats=("hdf5",))
    trials = load_nsd(root, 1, sessions=1)
    train = trials.train
    rng = np.random.default_rng(0)
    shapes = {"clip_image_tokens": (2, 8), "clip_text_tokens": (3, 8), "vae_latents": (4, 4, 4)}
    cfg = BrainDiffuserConfig.tiny(n_voxels=train.X.shape[1], target_shapes=shapes, subject="nsd/subj01")
    dec = BrainDiffuser(cfg).fit(train.X, {k: rng.standard_normal((len(train), *s)) for k, s in shapes.items()})
    ckpt = tmp_path_factory.mktemp("ckpt") / "bd"
    dec.save_pretrained(ckpt)
    other = tmp_path_factory.mktemp("ckpt2") / "bd2"
    BrainDiffuser(BrainDiffuserConfig.tiny(n_voxels=train.X.shape[1], target_shapes=shapes, subject="nsd/subj02")).fit(
        train.X, {k: rng.standard_normal((len(train), *s)) for k, s in shapes.items()}).save_pretrained(other)
    recipe = tmp_path_factory.mktemp("recipes") / "bdtiny.toml"
    recipe.write_text(RECIPE.format(extra=""))
    n_test = len(np.unique(trials.test.stimulus_ids))
    return {"root": root, "ckpt": ckpt, "other": other, "recipe": recipe, "n_test": n_test}


def _level_diff(a: bytes, b: bytes) -> int:
    """Largest difference in 8-bit levels between two PNG files' pixels."""
    import io

    from PIL import Image

    x, y = (np.asarray(Image.open(io.BytesIO(v))).astype(int) for v in (a, b))
    assert x.shape == y.shape
    return int(np.abs(x - y).max())


def _args(s, out, *extra):
    return ["reconstruct", "--pipeline", str(s["recipe"]), "--data", str(s["root"]), "--subject", "1",
            "--checkpoint", str(s["ckpt"]), "--out", str(out), "--device", "cpu", "--limit", "3", *extra]


def test_reconstruct_writes_derivative_and_resumes(setup, tmp_path):
    out = tmp_path / "derivative"
    res = runner.invoke(app, [*_args(setup, out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["n_done"] == 3 and summary["n_skipped"] == 0 and summary["n_items"] == 3
    pngs = sorted((out / "sub-01" / "recon").glob("sub-01_stim-*_desc-bdtiny_recon.png"))
    txts = sorted((out / "sub-01" / "recon").glob("sub-01_stim-*_desc-bdtiny_caption.txt"))
    assert len(pngs) == 3 and len(txts) == 3
    from PIL import Image

    img = np.asarray(Image.open(pngs[0]))
    assert img.shape == (8, 8, 3) and img.dtype == np.uint8  # img2img from the predicted 4x4 VAE latent
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["BIDSVersion"]
    prov = json.loads((out / "provenance.json").read_text())
    run = prov["runs"][0]
    assert run["generator"]["weights"] == "tiny" and run["decoder"]["sha256"]
    assert run["seeds"]["base"] == 3 and sorted(run["written"].values()) == [3, 4, 5]
    assert run["finished"] is not None and run["n_done"] == 3
    assert run["versions"]["torch"] and run["summary"]["timings"]["generate_s"] > 0
    assert run["recipe"]["generate"]["generator"] == "versatile"
    assert not list(out.rglob(".*.tmp")) and not list(out.rglob(".*.png"))  # no temporary files left

    # resume: delete one output -> only that item is redone, and identically (seed = base + position)
    before = {p.name: p.read_bytes() for p in pngs}
    mtimes = {p.name: p.stat().st_mtime_ns for p in pngs}
    pngs[1].unlink()
    res = runner.invoke(app, [*_args(setup, out), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["n_done"] == 1 and summary["n_skipped"] == 2
    # redone alone, not in a batch of 2: equal up to one 8-bit level (docs/troubleshooting.md)
    assert _level_diff(pngs[1].read_bytes(), before[pngs[1].name]) <= 1
    assert pngs[0].stat().st_mtime_ns == mtimes[pngs[0].name]
    assert len(json.loads((out / "provenance.json").read_text())["runs"]) == 2

    # a second process of a 2-process launch takes the other items (stride by rank), none twice
    out2 = tmp_path / "ranked"
    for rank in (0, 1):
        os.environ.update(RANK=str(rank), WORLD_SIZE="2")
        try:
            res = runner.invoke(app, [*_args(setup, out2), "--json"])
        finally:
            os.environ.pop("RANK"), os.environ.pop("WORLD_SIZE")
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["n_done"] == (2 if rank == 0 else 1)
    assert sorted(p.name for p in (out2 / "sub-01" / "recon").glob("*.png")) == sorted(before)
    assert all(_level_diff((out2 / "sub-01" / "recon" / n).read_bytes(), b) <= 1 for n, b in before.items())


def test_checkpoint_of_another_subject(setup, tmp_path):
    args = _args(setup, tmp_path / "o")
    args[args.index("--checkpoint") + 1] = str(setup["other"])
    res = runner.invoke(app, args)
    assert res.exit_code == 1
    assert "nsd/subj02" in res.stderr and "nsd/subj01" in res.stderr and "Traceback" not in res.stderr


def test_output_folder_not_writable(setup, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # running as root: permissions do not apply; use a file as parent
            target = tmp_path / "afile"
            target.write_text("x")
            out = target / "sub"
        else:
            out = locked / "out"
        res = runner.invoke(app, _args(setup, out))
    finally:
        locked.chmod(0o700)
    assert res.exit_code == 1
    assert "out: expected a folder this process can write to" in res.stderr


def test_wrong_space_for_generator(setup, tmp_path):
    recipe = tmp_path / "wrong.toml"
    text = RECIPE.format(extra="").replace('generator = "versatile"', 'generator = "unclip"')
    recipe.write_text(text.replace("config = { width = 8, text_tokens = 3, image_size = 4 }\n", ""))
    args = _args(setup, tmp_path / "o")
    args[args.index("--pipeline") + 1] = str(recipe)
    res = runner.invoke(app, args)
    assert res.exit_code == 1
    assert "clip_image_embeds" in res.stderr and "unclip" in res.stderr


def test_missing_weights_offline(setup, tmp_path):
    res = runner.invoke(app, [*_args(setup, tmp_path / "o"), "--generator-weights", "shi-labs/versatile-diffusion"])
    assert res.exit_code == 1
    assert "shi-labs/versatile-diffusion" in res.stderr and "offline" in res.stderr


def test_nan_latents(setup, tmp_path, monkeypatch):
    def nan_predict(self, X, subject=None, **kw):
        out = orig(self, X, subject=subject, **kw)
        out["clip_text_tokens"][0] = np.nan
        return out

    orig = BrainDiffuser.predict_latents
    monkeypatch.setattr(BrainDiffuser, "predict_latents", nan_predict)
    res = runner.invoke(app, _args(setup, tmp_path / "o"))
    assert res.exit_code == 1
    assert "clip_text_tokens" in res.stderr and "NaN" in res.stderr
    assert not list((tmp_path / "o").rglob("*.png"))


def test_partial_data_arguments_are_bad_usage(setup, tmp_path):
    res = runner.invoke(app, ["reconstruct", "--data", str(setup["root"]), "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "--pipeline" in res.stderr and "--checkpoint" in res.stderr


def test_no_arguments_runs_demo_or_says_it_is_missing(monkeypatch, tmp_path):
    import importlib
    import sys
    import types

    calls = {}

    def run_demo(out_dir=None, **kw):
        calls["out_dir"] = out_dir
        return str(out_dir)

    fake = types.ModuleType("neurodecode.demo")
    fake.run_demo = run_demo
    monkeypatch.setitem(sys.modules, "neurodecode.demo", fake)
    res = runner.invoke(app, ["reconstruct", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert calls["out_dir"] == tmp_path

    real_import = importlib.import_module

    def no_demo(name, *a, **k):
        if name == "neurodecode.demo":
            raise ModuleNotFoundError("No module named 'neurodecode.demo'", name="neurodecode.demo")
        return real_import(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", no_demo)
    res = runner.invoke(app, ["reconstruct"])
    assert res.exit_code == 1 and "demo is not available" in res.stderr


def test_loading_options_reach_the_generator_constructor(setup, tmp_path):
    # `uncond` decides what Versatile Diffusion loads (its CLIP encoders for "encoded"): it must reach the
    # constructor, and the provenance records it
    out = tmp_path / "enc"
    res = runner.invoke(app, [*_args(setup, out), "--set", 'generate.options.uncond="encoded"', "--json"])
    assert res.exit_code == 0, res.output
    run = json.loads((out / "provenance.json").read_text())["runs"][-1]
    assert run["generator"]["uncond"] == "encoded"
