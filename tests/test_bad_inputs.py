"""The bad-input catalogue of issue #19: one parametrised row per case.

Each row builds a small bad input, runs the library function or CLI verb a user would run,
and asserts either a teaching error (the file or parameter, what was expected, what came,
how to fix it; exit 1 and no traceback for the CLI) or a correct result, with nothing
half-written under a final name.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib
from typer.testing import CliRunner

from neurodecode._core.errors import DataIntegrityError, MissingFileError, UnsafeCheckpointError, ValidationError
from neurodecode.cli import app
from neurodecode.testing import (
    make_nsd_fixture,
    make_things_eeg2_fixture,
    make_things_meg_fixture,
    make_zuco_fixture,
    nsd_path,
    write_nsd_tree,
    write_zuco_subject,
)

REPO = Path(__file__).resolve().parents[1]
B3 = "betas_fithrf_GLMdenoise_RR"
TPS = 750


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_teaching_exit(res, *needles):
    """Exit 1, no traceback, every needle on stderr."""
    assert res.exit_code == 1, (res.exit_code, res.output)
    assert "Traceback" not in res.output and "Traceback" not in res.stderr
    for needle in needles:
        assert needle in res.stderr, (needle, res.stderr)


def float_nsd_tree(root, *, nan_at=None, sessions=1, seed=0):
    """A one-subject NSD tree with float32 betas (NaN survive), NaN at (trial, voxel) positions."""
    rng = np.random.default_rng(seed)
    mask = np.full((7, 8, 9), -1, dtype=np.int16)
    mask[1:6, 1:7, 1:8] = (rng.random((5, 6, 7)) < 0.4).astype(np.int16)
    n_vox = int((mask == 1).sum())
    n_img = sessions * TPS // 3
    stimuli = rng.integers(0, 256, (n_img + 8, 8, 8, 3), dtype=np.uint8)
    shared = np.arange(1, 11)
    subjectim = np.tile(np.arange(1, n_img + 1), (8, 1))
    mo = rng.permutation(np.repeat(np.arange(1, n_img + 1), 3))
    betas = rng.normal(size=(sessions * TPS, n_vox))
    for t, v in nan_at or []:
        betas[t, v] = np.nan
    return write_nsd_tree(root, stimuli=stimuli, subjectim=subjectim, masterordering=mo, sharedix=shared,
                          betas={1: betas}, masks={1: mask}, beta_dtype="float32", responses=False,
                          formats=("nifti",))


# ------------------------------------------------------------------------------------ silent wrong results
def row_cache_same_ids_other_images(tmp_path):
    import h5py

    from neurodecode.latents import embed_to_cache, get_space

    space = get_space("clip-vit-l-14-tokens-tiny", batch_size=4)
    imgs = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    paths = []
    for name, arr in (("a", imgs), ("b", np.concatenate([imgs[:2], 255 - imgs[2:3], imgs[3:]]))):
        (tmp_path / name).mkdir()
        with h5py.File(tmp_path / name / "nsd_stimuli.hdf5", "w") as f:
            f.create_dataset("imgBrick", data=arr)
        paths.append(tmp_path / name / "nsd_stimuli.hdf5")
    cache = embed_to_cache(space, paths[0], tmp_path / "cache", ids=[1, 2, 3])
    assert cache.matches_stimuli(paths[0], [1, 2, 3])
    assert not cache.matches_stimuli(paths[1], [1, 2, 3])  # same ids, one other image: never a hit


def row_zuco_nan_recorded_or_refused(tmp_path):
    from neurodecode.data import load_zuco

    rng = np.random.default_rng(0)
    eeg = [rng.normal(size=(5, 30)) for _ in range(4)]
    eeg[2][3, 7:10] = np.nan  # three NaN samples on channel E4 of sentence 2
    path = write_zuco_subject(tmp_path, "YAC", task="NR", sentences=[f"sentence {i}." for i in range(4)], eeg=eeg,
                              ch_names=[f"E{i + 1}" for i in range(5)])
    t = load_zuco(tmp_path, "YAC", version=2, task="NR")
    p = t.provenance
    assert p["nan_policy"] == "zero" and p["n_nonfinite_set_to_zero"] == 3
    assert p["n_sentences_with_nonfinite"] == 1 and p["nonfinite_per_channel"] == {"E4": 3}
    assert np.isfinite(t.X).all() and (t.X[2, 3, 7:10] == 0).all()
    with pytest.raises(ValidationError) as info:
        load_zuco(tmp_path, "YAC", version=2, task="NR", nan_policy="raise")
    msg = str(info.value)
    assert str(path) in msg and "sentence 2" in msg and "E4" in msg and "zuco/YAC" in msg and "nan_policy" in msg


def _eeg2_npy(root, subject=1):
    return Path(root) / "Preprocessed_data_250Hz" / f"sub-{subject:02d}" / "preprocessed_eeg_test.npy"


def row_eeg2_corrupted_bytes_refused(tmp_path):
    from neurodecode.data import load_things_eeg2

    make_things_eeg2_fixture(tmp_path, n_train_concepts=1, n_test=3, n_times=250)
    npy = _eeg2_npy(tmp_path)
    raw = bytearray(npy.read_bytes())
    start = len(raw) // 2
    raw[start:start + 512] = np.random.default_rng(1).integers(0, 256, 512, dtype=np.uint8).tobytes()
    npy.write_bytes(bytes(raw))
    with pytest.raises(DataIntegrityError) as info:
        load_things_eeg2(tmp_path, 1, split="test", allow_pickle=True)
    msg = str(info.value)
    assert str(npy) in msg and "things-eeg2/sub-01" in msg and "channel" in msg and "download it again" in msg


def row_eeg2_truncated_pickle_refused(tmp_path):
    from neurodecode.data import load_things_eeg2

    make_things_eeg2_fixture(tmp_path, n_train_concepts=1, n_test=3, n_times=250)
    npy = _eeg2_npy(tmp_path)
    npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 3])
    with pytest.raises(DataIntegrityError, match="truncated or corrupted") as info:
        load_things_eeg2(tmp_path, 1, split="test", allow_pickle=True)
    assert str(npy) in str(info.value)
    res = cli("check-data", "things-eeg2", tmp_path, "--allow-pickle")
    assert_teaching_exit(res, "sub-01 test", "truncated or corrupted")


# ------------------------------------------------------------------------------------------ check-data
def row_check_nsd_missing_session(tmp_path):
    from neurodecode.data import load_nsd

    root = make_nsd_fixture(tmp_path / "nsd", subjects=(1,), n_sessions=3, formats=("nifti",))
    nsd_path(root, "betas_nifti", subject=1, session=2, beta_dir=B3).unlink()
    res = cli("check-data", "nsd", root)
    assert_teaching_exit(res, "subj01: missing session(s) 02", "betas_session02.nii.gz")
    with pytest.raises(MissingFileError, match="sessions 02 missing.*sessions=1"):
        load_nsd(root, 1)


def row_check_nsd_missing_last_session(tmp_path):
    root = make_nsd_fixture(tmp_path / "nsd", subjects=(1,), n_sessions=3, formats=("nifti",))
    nsd_path(root, "betas_nifti", subject=1, session=3, beta_dir=B3).unlink()
    res = cli("check-data", "nsd", root)
    assert_teaching_exit(res, "2 session(s) on disk, the design describes 3")


def row_check_nsd_nan_voxels_per_file(tmp_path):
    root = float_nsd_tree(tmp_path / "nsd", nan_at=[(3, 2), (9, 2), (10, 5)])
    res = cli("check-data", "nsd", root, "--json")
    assert res.exit_code == 1 and "Traceback" not in res.output
    report = json.loads(res.stdout)
    assert report["subjects"]["1"]["nonfinite_per_session"] == {"01": 3}
    assert any("3 NaN/inf value(s) in 2 voxel(s)" in p and "betas_session01.nii.gz" in p for p in report["problems"])


def row_check_nsd_other_subjects_mask(tmp_path):
    root = make_nsd_fixture(tmp_path / "nsd", subjects=(1, 2), n_sessions=1, formats=("nifti",))
    other = nsd_path(root, "nsdgeneral", subject=2)
    nsd_path(root, "nsdgeneral", subject=1).write_bytes(other.read_bytes())
    res = cli("check-data", "nsd", root, "--subjects", "1")
    assert_teaching_exit(res, "subj01:", "constant betas", "may belong to another subject")


def row_check_things_meg_missing_session(tmp_path):
    import shutil

    make_things_meg_fixture(tmp_path, subjects=(1,), n_sessions=3, n_train_concepts=2, n_test_images=1,
                            n_channels=4, sfreq=200.0)
    shutil.rmtree(tmp_path / "sub-BIGMEG1" / "ses-02")
    res = cli("check-data", "things-meg", tmp_path)
    assert_teaching_exit(res, "sub-BIGMEG1: missing session(s) ses-02")


def row_check_zuco_missing_subject_task(tmp_path):
    make_zuco_fixture(tmp_path, subjects=("YAC", "YAG"), task="NR", n_sentences=4)
    make_zuco_fixture(tmp_path, subjects=("YAC",), task="TSR", n_sentences=4)
    res = cli("check-data", "zuco", tmp_path)
    assert_teaching_exit(res, "zuco/YAG: missing resultsYAG_TSR.mat")
    res = cli("check-data", "zuco", tmp_path, "--subjects", "YAC", "YDG")
    assert_teaching_exit(res, "zuco/YDG: no resultsYDG_<TASK>.mat", "subjects found: YAC, YAG")


def row_check_zuco_unknown_subject_code(tmp_path):
    make_zuco_fixture(tmp_path, subjects=("YAC",), n_sentences=4)
    res = cli("check-data", "zuco", tmp_path, "--subject", "XYZ")
    assert_teaching_exit(res, "--subjects: expected ZuCo subject codes", "XYZ")


def row_check_eeg2_pickled_every_subject(tmp_path):
    make_things_eeg2_fixture(tmp_path, subjects=(1, 2), n_train_concepts=1, n_test=2, n_times=250)
    res = cli("check-data", "things-eeg2", tmp_path)
    assert_teaching_exit(res, "sub-01 train", "sub-02 test", "--allow-pickle")
    res = cli("check-data", "things-eeg2", tmp_path, "--allow-pickle", "--json")
    assert res.exit_code == 0, res.output
    subjects = json.loads(res.stdout)["subjects"]
    assert sorted(subjects) == ["1", "2"] and subjects["2"]["test"]["n_trials"] == 2 * 8


def row_check_unknown_numbered_subject(tmp_path):
    root = make_nsd_fixture(tmp_path / "nsd", subjects=(1,), n_sessions=1, formats=("nifti",))
    res = cli("check-data", "nsd", root, "--subjects", "3")
    assert_teaching_exit(res, "subj03: not in this tree (subjects found: 1)")
    res = cli("check-data", "nsd", root, "--subjects", "9")
    assert_teaching_exit(res, "--subjects", "between 1 and 8")


def row_prepare_refuses_nan_unless_policy(tmp_path):
    root = float_nsd_tree(tmp_path / "nsd", nan_at=[(4, 1)])
    out = tmp_path / "cache"
    res = cli("prepare", "nsd", root, "--subject", "1", "--out", out)
    assert_teaching_exit(res, "1 NaN/inf value(s)", "subj01 session 01", "betas_session01.nii.gz", "--nan-policy zero")
    folder = out / "subj01" / B3
    assert not (folder / "betas.npy").exists() and not (folder / "provenance.json").exists()
    res = cli("prepare", "nsd", root, "--subjects", "1", "--out", out, "--nan-policy", "zero")
    assert res.exit_code == 0, res.output
    prov = json.loads((folder / "provenance.json").read_text())
    assert prov["nan_policy"] == "zero" and prov["n_nonfinite_set_to_zero"] == {"01": 1}
    betas = np.load(folder / "betas.npy")
    assert np.isfinite(betas).all() and betas[4, 1] == 0


# ------------------------------------------------------------------------------- write errors (OSError)
def _inject_write_error(monkeypatch, code, after=0):
    """Every temporary file after the first ``after`` fails with ``code`` (as a full or read-only disk would)."""
    import tempfile

    real = tempfile.mkstemp
    count = [0]

    def failing(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        count[0] += 1
        if count[0] <= after:
            return fd, name
        os.close(fd)
        os.unlink(name)
        raise OSError(code, os.strerror(code), name)

    monkeypatch.setattr(tempfile, "mkstemp", failing)


def _leftovers(folder):
    return [p for p in Path(folder).rglob("*") if ".ndtmp-" in p.name or p.name.endswith(".tmp")]


def row_write_errors_are_reported_once(tmp_path):
    root = make_nsd_fixture(tmp_path / "nsd", subjects=(1,), n_sessions=1, formats=("nifti",))
    for code, fix in ((errno.EACCES, "not writable"), (errno.EROFS, "read-only"), (errno.ENOSPC, "disk is full")):
        work = tmp_path / errno.errorcode[code]
        work.mkdir()
        with pytest.MonkeyPatch.context() as mp:
            _inject_write_error(mp, code)
            verbs = [("prepare", "nsd", root, "--subject", "1", "--out", work / "cache"),
                     ("embed", "--space", "minilm-l6-tiny", "--stimuli", _sentences(tmp_path), "--out", work / "emb")]
            if code == errno.ENOSPC:
                verbs.append(("simulate", "things-eeg2", work / "sim", "--subjects", "1"))
            for args in verbs:
                res = cli(*args)
                assert_teaching_exit(res, "file system:", os.strerror(code), errno.errorcode[code], fix)
                assert str(work) in res.stderr  # the path is named
        assert not _leftovers(work)
        assert not (work / "cache" / "subj01" / B3 / "betas.npy").exists()
        assert not (work / "emb" / "manifest.json").exists()
    # the disk fills up in the middle of a conversion: nothing final is written, and a re-run finishes it
    with pytest.MonkeyPatch.context() as mp:
        _inject_write_error(mp, errno.ENOSPC, after=2)  # the write check and the first session pass
        res = cli("prepare", "nsd", root, "--subject", "1", "--out", tmp_path / "mid")
    assert_teaching_exit(res, "disk is full", "re-running the same command resumes")
    folder = tmp_path / "mid" / "subj01" / B3
    assert (folder / "parts" / "session01.npy").is_file() and not (folder / "betas.npy").exists()
    assert not _leftovers(tmp_path / "mid")
    assert cli("prepare", "nsd", root, "--subject", "1", "--out", tmp_path / "mid").exit_code == 0
    assert (folder / "provenance.json").is_file()


def row_writer_library_disk_errors(tmp_path):
    """safetensors reports a full disk as its own error type: it reaches the user as the same teaching line."""
    import safetensors
    import safetensors.numpy

    def full_disk(*args, **kwargs):
        raise safetensors.SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                          'message: "No space left on device" })')

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(safetensors.numpy, "save_file", full_disk)
        res = cli("embed", "--space", "minilm-l6-tiny", "--stimuli", _sentences(tmp_path), "--out", tmp_path / "e")
    assert_teaching_exit(res, "No space left on device (ENOSPC)", str(tmp_path / "e" / "shard-00000-p0"),
                         "disk is full")
    assert not _leftovers(tmp_path / "e") and not list((tmp_path / "e").glob("shard-*.safetensors"))
    res = cli("embed", "--space", "minilm-l6-tiny", "--stimuli", _sentences(tmp_path), "--out", tmp_path / "e")
    assert res.exit_code == 0, res.output  # space freed: the same command finishes the cache


def _sentences(tmp_path):
    p = tmp_path / "sentences.txt"
    p.write_text("a cat\na dog\n", encoding="utf-8")
    return p


def _tiny_nsd(tmp_path):
    return make_nsd_fixture(tmp_path / "nsd", subjects=(1,), n_sessions=1, formats=("nifti",))


def row_output_path_through_a_file(tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    res = cli("prepare", "nsd", _tiny_nsd(tmp_path), "--subject", "1", "--out", tmp_path / "taken" / "cache")
    assert_teaching_exit(res, "file system:", "taken", "A file stands where a folder is expected")


def row_neurodecode_home_not_writable(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    real_mkdir = os.mkdir

    def refuse(path, *args, **kwargs):
        if str(path).startswith(str(home)):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_mkdir(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:  # a read-only NEURODECODE_HOME (chmod does not bind root)
        mp.setenv("NEURODECODE_HOME", str(home))
        mp.delenv("NEURODECODE_CACHE")
        mp.setattr(os, "mkdir", refuse)
        from neurodecode._core.config import cache_dir

        res = cli("embed", "--space", "minilm-l6-tiny", "--stimuli", _sentences(tmp_path), "--out",
                  cache_dir() / "features")
    assert_teaching_exit(res, "file system:", str(home / "cache"), "NEURODECODE_HOME")


# ------------------------------------------------------------------------------------------- unclear
def row_data_points_at_a_simulate_folder(tmp_path):
    from neurodecode.cli._common import resolve_data_root

    root = make_nsd_fixture(tmp_path / "SIM" / "nsd", subjects=(1,), n_sessions=1, formats=("nifti",))
    (tmp_path / "SIM" / "truth").mkdir()
    assert resolve_data_root(tmp_path / "SIM", "nsd") == root
    assert resolve_data_root(root, "nsd") == root
    res = cli("check-data", "nsd", tmp_path / "SIM", "--json")
    assert res.exit_code == 0, res.output
    with pytest.raises(MissingFileError) as info:
        resolve_data_root(tmp_path / "SIM", "zuco")
    msg = str(info.value)
    assert "--data" in msg and f"{root} (nsd)" in msg and "neurodecode simulate zuco" in msg
    make_nsd_fixture(tmp_path / "SIM" / "nsd_copy", subjects=(1,), n_sessions=1, formats=("nifti",))
    with pytest.raises(ValidationError, match="2 under .*Pass one of them"):
        resolve_data_root(tmp_path / "SIM", "nsd")


def row_nan_errors_name_file_subject_position(tmp_path):
    from neurodecode.data import load_nsd

    root = float_nsd_tree(tmp_path / "nsd", nan_at=[(6, 3)])
    with pytest.raises(ValidationError) as info:
        load_nsd(root, 1)
    msg = str(info.value)
    assert "subj01 session 01" in msg and "betas_session01.nii.gz" in msg and "(trial 6, voxel 3)" in msg
    assert "nan_policy='zero'" in msg


def row_meg_nan_names_file_subject_channel(tmp_path):
    from neurodecode.data import load_things_meg
    from neurodecode.testing import ctf_channel_names, write_things_meg_subject

    names = ctf_channel_names(5)
    sf = 200.0
    data = np.random.default_rng(0).normal(0, 1e-13, (len(names), 2000))
    data[2, 460:470] = np.nan  # 2.3 s: inside the epoch of the image shown at 2.2 s
    write_things_meg_subject(tmp_path, 1, data=data, sfreq=sf, ch_names=names, onsets=[1.0, 2.2, 3.4],
                             image_ids=["aardvark_01b", "abacus_01b", "catch_01"],
                             is_test=np.array([False, False, False]), is_catch=np.array([False, False, True]),
                             session=1, run=1, bads=[n for n in names if n.startswith("MRO11")])
    with pytest.raises(ValidationError) as info:
        load_things_meg(tmp_path, 1, raw_sfreq=sf)
    msg = str(info.value)
    assert "things-meg/sub-BIGMEG1" in msg and f"channel {names[2]}" in msg and "_meg.fif" in msg


def row_npz_object_arrays_wording(tmp_path):
    from neurodecode.io.npy import load_npz

    path = tmp_path / "meta.npz"
    np.savez(path, names=np.array([{"a": 1}, "b"], dtype=object))
    with pytest.raises(UnsafeCheckpointError) as info:
        load_npz(path)
    assert "allow_pickle: expected True" in str(info.value) and "got False" in str(info.value)
    assert load_npz(path, allow_pickle=True)["names"][1] == "b"  # true was given: it is read


def row_npz_with_objects_reads_when_allowed(tmp_path):
    from neurodecode.data import load_things_eeg2

    make_things_eeg2_fixture(tmp_path, n_train_concepts=1, n_test=2, n_times=250)
    npy = _eeg2_npy(tmp_path)
    obj = np.load(npy, allow_pickle=True).item()
    np.savez(npy.with_suffix(".npz"), preprocessed_eeg_data=obj["preprocessed_eeg_data"],
             ch_names=np.array(list(obj["ch_names"]), dtype=object), times=obj["times"])
    with pytest.raises(UnsafeCheckpointError, match="got False"):
        load_things_eeg2(tmp_path, 1, split="test")
    t = load_things_eeg2(tmp_path, 1, split="test", allow_pickle=True)
    assert len(t) == 2 * 8 and t.ch_names == list(obj["ch_names"])


def row_shared_cli_options_for_the_lead(tmp_path):
    """`--nan-policy` and `--allow-pickle` exist as shared options a verb can declare."""
    import typer

    from neurodecode.cli._common import NeurodecodeTyper, allow_pickle_option, nan_policy_option

    demo = NeurodecodeTyper()
    seen = {}

    @demo.command()
    def run(nan_policy: str = nan_policy_option(), allow_pickle: bool = allow_pickle_option()) -> None:
        seen.update(nan_policy=nan_policy, allow_pickle=allow_pickle)

    @demo.command()
    def other() -> None:  # two commands, so `run` is a sub-command
        pass

    res = CliRunner().invoke(demo, ["run", "--nan-policy", "zero", "--allow-pickle"])
    assert res.exit_code == 0, res.output
    assert seen == {"nan_policy": "zero", "allow_pickle": True}
    assert isinstance(demo, typer.Typer)


# ------------------------------------------------------------------------------------------- leftovers
def row_orphaned_temporaries_cleaned(tmp_path):
    out = tmp_path / "out"
    code = ("import os, sys\nfrom neurodecode._core.files import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n    tmp.write_bytes(b'half')\n    os.kill(os.getpid(), 9)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(out / "a.json")], capture_output=True, timeout=120)
    assert proc.returncode == -9
    orphans = [p for p in out.iterdir() if ".ndtmp-" in p.name]
    assert len(orphans) == 1 and not (out / "a.json").exists()
    from neurodecode._core.files import atomic_path, write_json

    with atomic_path(out / "live.bin") as live:  # this process is alive: its temporary is kept
        live.write_bytes(b"x")
        write_json(out / "b.json", {"ok": 1})  # the next write into the folder cleans the orphan
        assert not orphans[0].exists() and live.exists()
    assert sorted(p.name for p in out.iterdir()) == ["b.json", "live.bin"]


def row_trainer_state_bounded(tmp_path):
    import torch

    from neurodecode.train import ArrayBatches, TrainConfig, Trainer

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 2)

        def training_step(self, batch, step):
            return {"loss": torch.nn.functional.mse_loss(self.lin(batch["x"]), batch["y"])}

    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(14, 3)).astype(np.float32), "y": rng.normal(size=(14, 2)).astype(np.float32)}
    sizes = []
    for steps in (4, 40):
        out = tmp_path / f"run{steps}"
        cfg = TrainConfig(epochs=1, max_steps=steps, lr=1e-2, log_every=1, checkpoint_every=2, device="cpu",
                          scheduler="constant", keep_checkpoints=1)
        res = Trainer(Tiny(), cfg, out_dir=out).fit(ArrayBatches(data, batch_size=7))
        state = json.loads((res.checkpoint / "trainer_state.json").read_text())
        lines = (out / "metrics.jsonl").read_text().splitlines()
        assert "history" not in state and state["metrics_lines"] == len(lines) == steps
        sizes.append((res.checkpoint / "trainer_state.json").stat().st_size)
    assert abs(sizes[1] - sizes[0]) < 64  # ten times the steps, the same size (only counters grow)


# -------------------------------------------------------------------------------------------- CLI forms
def row_subjects_forms(tmp_path):
    from neurodecode.cli import _simulate

    calls = []

    def record(dataset, out, **kw):
        calls.append(kw["subjects"])
        raise ValidationError("stop here")

    mp = pytest.MonkeyPatch()
    mp.setattr(_simulate, "run_simulation", record)
    for form in (["--subjects", "1", "2"], ["--subjects", "1,2"], ["-s", "1", "-s", "2"], ["--subject", "1", "2"],
                 ["--subjects", "subj01", "2"]):
        res = cli("simulate", "nsd", tmp_path / "o", *form)
        assert res.exit_code == 1 and "Got unexpected extra" not in res.output
    assert calls == [[1, 2]] * 5
    res = cli("simulate", "--subjects", "1", "2", "nsd", tmp_path / "o")  # the list ends at the dataset name
    assert calls[-1] == [1, 2] and res.exit_code == 1
    res = cli("simulate", "zuco", tmp_path / "o", "--subjects", "YAC", "YAG")
    assert calls[-1] == ["YAC", "YAG"]
    mp.undo()
    root = make_nsd_fixture(tmp_path / "nsd", subjects=(1, 2), n_sessions=1, formats=("nifti",))
    res = cli("check-data", "nsd", root, "--subjects", "1", "2", "--json")
    assert res.exit_code == 0 and sorted(json.loads(res.stdout)["subjects"]) == ["1", "2"]
    res = cli("check-data", "nsd", root, "--subject", "2", "--json")  # the old singular spelling still works
    assert res.exit_code == 0 and sorted(json.loads(res.stdout)["subjects"]) == ["2"]


def row_flags_shown_as_flags(tmp_path):
    import typer

    command = typer.main.get_command(app)
    for name in command.list_commands(None):
        res = CliRunner().invoke(app, [name, "--help"], terminal_width=200)
        assert res.exit_code == 0, (name, res.output)
        assert "<bool>" not in res.output, name
    res = CliRunner().invoke(app, ["--help"], terminal_width=200)
    assert "<bool>" not in res.output and "--json" not in res.output
    assert "--json" in CliRunner().invoke(app, ["info", "--help"], terminal_width=200).output


def row_simulate_defaults_cover_the_tiny_presets(tmp_path):
    from neurodecode import simulate
    from neurodecode.cli._simulate import run_simulation

    seen = {}
    with pytest.MonkeyPatch.context() as mp:  # record what the CLI would simulate, without simulating
        for fn in ("simulate_nsd", "simulate_things_eeg2", "simulate_things_meg", "simulate_zuco"):
            mp.setattr(simulate, fn, lambda out, fn=fn, **kw: seen.setdefault(fn, kw["subjects"]))
        for dataset in ("nsd", "things-eeg2", "things-meg", "zuco"):
            run_simulation(dataset, tmp_path)

    def tiny_subjects(recipe):
        doc = tomllib.loads((REPO / "pipelines" / recipe).read_text())
        return doc["presets"]["tiny"]["data"]["subjects"]

    meg = [int(s.removeprefix("sub-BIGMEG")) for s in tiny_subjects("atm_things_meg.toml")]
    eeg = [int(s.removeprefix("sub-")) for s in tiny_subjects("atm_things_eeg2.toml")]
    zuco = [s.removeprefix("zuco/") for s in tiny_subjects("glim_zuco.toml")]
    nsd = [int(s.removeprefix("nsd/subj")) for s in tiny_subjects("mindbridge_nsd.toml")]
    assert set(meg) <= set(seen["simulate_things_meg"]) and len(meg) == 2
    assert set(zuco) <= set(seen["simulate_zuco"]) and set(eeg) <= set(seen["simulate_things_eeg2"])
    assert set(nsd) <= set(seen["simulate_nsd"])


CASES = {name[4:]: fn for name, fn in dict(globals()).items() if name.startswith("row_")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case, tmp_path):
    CASES[case](tmp_path)


def test_catalogue_covers_every_case_of_the_issue():
    expected = {
        "cache_same_ids_other_images", "zuco_nan_recorded_or_refused", "eeg2_corrupted_bytes_refused",
        "eeg2_truncated_pickle_refused", "check_nsd_missing_session", "check_nsd_missing_last_session",
        "check_nsd_nan_voxels_per_file", "check_nsd_other_subjects_mask", "check_things_meg_missing_session",
        "check_zuco_missing_subject_task", "check_zuco_unknown_subject_code", "check_eeg2_pickled_every_subject",
        "check_unknown_numbered_subject", "prepare_refuses_nan_unless_policy", "write_errors_are_reported_once",
        "writer_library_disk_errors",
        "output_path_through_a_file", "neurodecode_home_not_writable", "data_points_at_a_simulate_folder",
        "nan_errors_name_file_subject_position", "meg_nan_names_file_subject_channel", "npz_object_arrays_wording", "npz_with_objects_reads_when_allowed",
        "shared_cli_options_for_the_lead", "orphaned_temporaries_cleaned", "trainer_state_bounded",
        "subjects_forms", "flags_shown_as_flags", "simulate_defaults_cover_the_tiny_presets",
    }
    assert set(CASES) == expected
