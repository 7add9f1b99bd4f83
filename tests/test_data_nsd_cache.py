"""The NSD cache: same trials as the original files, resumable, atomic."""

import json

import numpy as np
import pytest

from neurodecode._core.errors import MissingFileError, ValidationError
from neurodecode.data import load_nsd, prepare_nsd
from neurodecode.testing import make_nsd_fixture


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_nsd_fixture(tmp_path_factory.mktemp("nsd"), subjects=(2,), n_sessions=2, formats=("hdf5",))


def test_cache_matches_original_files(root, tmp_path):
    folder = prepare_nsd(root, "subj02", tmp_path)
    assert folder == tmp_path / "subj02" / "betas_fithrf_GLMdenoise_RR"
    betas = np.load(folder / "betas.npy", mmap_mode="r")
    assert betas.dtype == np.int16 and betas.shape[0] == 1500 and not (folder / "parts").exists()
    prov = json.loads((folder / "provenance.json").read_text())
    assert prov["sessions"] == [1, 2] and prov["n_voxels"] == betas.shape[1]
    a = load_nsd(root, 2)
    b = load_nsd("/nonexistent", 2, cache_dir=tmp_path)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.stimulus_ids, b.stimulus_ids)
    assert b.provenance["source"] == "cache"
    c = load_nsd(root, 2, sessions=[2], zscore=None, average_test_repeats=False)
    d = load_nsd(root, 2, sessions=[2], zscore=None, average_test_repeats=False, cache_dir=folder)
    np.testing.assert_array_equal(c.X, d.X)
    with pytest.raises(ValidationError, match="look 0-based"):
        load_nsd(root, 2, sessions=[0], cache_dir=tmp_path)


def test_resume_after_a_killed_conversion(root, tmp_path, monkeypatch):
    import neurodecode.data._nsd_cache as cache_mod

    calls = []
    real = cache_mod._read_session_betas

    def flaky(fmt, path, mask, tps, verbose=None):
        calls.append(path.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(fmt, path, mask, tps, verbose=verbose)

    monkeypatch.setattr(cache_mod, "_read_session_betas", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare_nsd(root, 2, tmp_path)
    folder = tmp_path / "subj02" / "betas_fithrf_GLMdenoise_RR"
    assert (folder / "parts" / "session01.npy").is_file()
    assert not (folder / "betas.npy").exists() and not (folder / "provenance.json").exists()
    assert not [p for p in (folder / "parts").iterdir() if p.name.startswith(".")]  # no temp left
    prepare_nsd(root, 2, tmp_path)
    assert calls == ["betas_session01.hdf5", "betas_session02.hdf5", "betas_session02.hdf5"]
    prepare_nsd(root, 2, tmp_path)  # finished: nothing read again
    assert len(calls) == 3


def test_missing_cache_says_how_to_build_it(tmp_path):
    with pytest.raises(MissingFileError, match="neurodecode prepare nsd"):
        load_nsd(tmp_path, 1, cache_dir=tmp_path)
