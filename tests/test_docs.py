"""The docs site builds with warnings as errors, offline, and holds its key pages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Runs mkdocs' own command line in this interpreter (the venv's) with every internet socket refused,
# so a theme or plugin that tries to download anything fails the build instead of passing online only.
_OFFLINE_MKDOCS = """
import socket, sys
def _refuse(*args, **kwargs):
    raise OSError("network access during the docs build")
_create = socket.socket
class _Socket(_create):
    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _refuse()
        return super().connect(address)
socket.socket = _Socket
socket.create_connection = _refuse
from mkdocs.__main__ import cli
sys.argv = ["mkdocs"] + sys.argv[1:]
cli()
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    assert (Path(sys.executable).parent / "mkdocs").exists() or (Path(sys.executable).parent / "mkdocs.exe").exists(), \
        "mkdocs is not installed next to this interpreter (pip install -e '.[dev]')"
    out = tmp_path_factory.mktemp("site")
    env = {"NO_MKDOCS_2_WARNING": "1", "PATH": str(Path(sys.executable).parent), "HOME": str(out.parent),
           "HF_HUB_OFFLINE": "1", "NEURODECODE_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _OFFLINE_MKDOCS, "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    return out, proc


def test_docs_build_strict(site: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, proc = site
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert "WARNING" not in proc.stderr
    for page in ("index.html", "api/index.html", "quickstart/index.html", "performance/index.html",
                 "datasets/things_meg/index.html", "decoders/mindbridge/index.html"):
        assert (out / page).is_file(), page
    assert not (out / "_ext").exists(), "the griffe extension must not be published"


def test_api_reference_content(site: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, proc = site
    assert proc.returncode == 0
    api = (out / "api" / "index.html").read_text(encoding="utf-8")
    for anchor in ("neurodecode.data.load_nsd", "neurodecode.data.Trials", "neurodecode.estimators.RidgeDecoder",
                   "neurodecode.models.mindbridge.MindBridge", "neurodecode.metrics.two_way_identification",
                   "neurodecode.simulate.simulate_nsd", "neurodecode.demo.run_demo", "neurodecode.io.resolve_model_dir"):
        assert f'id="{anchor}"' in api, anchor
    # shared parameter docs filled in (fill_doc), Sphinx roles rendered as code
    assert "%(verbose)s" not in api and "%(device)s" not in api
    assert "keeps the current neurodecode level" in api
    assert ":func:" not in api and ":class:" not in api


def test_pages_offline_and_linked(site: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, proc = site
    assert proc.returncode == 0
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "fonts.googleapis.com" not in index and "fonts.gstatic.com" not in index
    quick = (out / "quickstart" / "index.html").read_text(encoding="utf-8")
    assert "make demo" in quick and "simulate_nsd" in quick and "RidgeDecoder" in quick
