import json
import logging

import pytest
import torch

from neurodecode._core import (
    ValidationError,
    atomic_write,
    backend_report,
    cache_dir,
    fill_doc,
    home_dir,
    is_offline,
    load_spec,
    logger,
    progress,
    resolve_device,
    resolve_dtype,
    set_log_level,
    use_log_level,
    write_json,
)
from neurodecode._core.logging import progress_enabled


def test_config_env(monkeypatch, tmp_path):
    monkeypatch.setenv("NEURODECODE_HOME", str(tmp_path / "h"))
    monkeypatch.delenv("NEURODECODE_CACHE")
    assert home_dir() == tmp_path / "h"
    assert cache_dir() == tmp_path / "h" / "cache"
    monkeypatch.setenv("NEURODECODE_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.setenv("NEURODECODE_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not is_offline()
    monkeypatch.setenv("NEURODECODE_OFFLINE", "1")
    assert is_offline()


def test_resolve_device_and_dtype():
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    assert resolve_dtype("float64") is torch.float64
    assert resolve_dtype(None) is torch.float32
    with pytest.raises(ValidationError, match="dtype: expected one of"):
        resolve_dtype("float8")
    with pytest.raises(ValidationError, match="device"):
        resolve_device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(ValidationError, match="No CUDA device"):
            resolve_device("cuda")
        assert resolve_dtype("auto") is torch.float32


def test_reduced_precision_warns_once():
    from neurodecode._core import device as device_mod

    device_mod._warned_reduced.discard("bfloat16")
    with pytest.warns(UserWarning, match="reduced precision"):
        assert resolve_dtype("bf16") is torch.bfloat16


def test_backend_report_keys():
    rep = backend_report()
    for key in ("cuda_available", "bf16_supported", "sdpa_flash", "sdpa_mem_efficient", "sdpa_math"):
        assert key in rep


def test_log_levels_and_progress(monkeypatch):
    with use_log_level("info"):
        assert logger.level == logging.INFO
        monkeypatch.setenv("NEURODECODE_PROGRESS", "1")
        assert progress_enabled()
        monkeypatch.setenv("NEURODECODE_PROGRESS", "0")
        assert not progress_enabled()
    set_log_level(False)
    assert logger.level == logging.WARNING
    monkeypatch.setenv("NEURODECODE_PROGRESS", "1")
    assert not progress_enabled()  # WARNING level hides bars
    assert progress_enabled(True)
    assert list(progress(range(3))) == [0, 1, 2]
    with pytest.raises(ValidationError, match="verbose"):
        set_log_level("loud")


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(target) as fh:
            fh.write("{partial")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_fill_doc():
    @fill_doc
    def f():
        """Do.

        Parameters
        ----------
        %(verbose)s
        """

    assert "verbose : bool" in f.__doc__
    assert "%(verbose)s" not in f.__doc__


def test_specs_are_loadable():
    spec = load_spec("nsd")
    assert spec["dataset"]["name"] == "nsd"
    assert load_spec("things-eeg2") is load_spec("things_eeg2")
