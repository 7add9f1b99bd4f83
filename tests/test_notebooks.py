"""The tutorial notebooks execute end to end (simulated data, tiny models, offline) with no error output.

Each notebook runs in a fresh kernel started from this interpreter, in a temporary working directory, with
the hub offline. A cell that raises, or writes an error output, fails the test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds; each notebook takes < 60 s on an idle 2-core CPU, the margin is for a busy one


def test_every_tutorial_is_collected():
    assert [p.name for p in NOTEBOOKS] == ["01_nsd_reconstruction.ipynb", "02_things_eeg_atm.ipynb",
                                           "03_eeg_to_text_glim.ipynb", "04_new_subject.ipynb"]


def test_notebooks_are_saved_without_outputs():
    import nbformat

    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), path.name
        assert "DATA = None" in code[0].source, path.name  # the one path a user changes for real data


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_without_errors(path, tmp_path, monkeypatch):
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    monkeypatch.chdir(tmp_path)
    for name, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("NEURODECODE_OFFLINE", "1"),
                        ("NEURODECODE_PROGRESS", "0"), ("MPLBACKEND", "module://matplotlib_inline.backend_inline"),
                        ("TMPDIR", str(tmp_path)), ("TOKENIZERS_PARALLELISM", "false")):
        monkeypatch.setenv(name, value)
    nb = nbformat.read(path, as_version=4)
    # a kernel of this very interpreter, talking over unix sockets (TCP sockets are blocked in the test suite)
    km = KernelManager(kernel_name="python3", transport="ipc", connection_file=str(tmp_path / "kernel.json"))
    km.kernel_spec.argv[0] = sys.executable
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, allow_errors=False,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [(i, o.get("ename"), o.get("evalue")) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    stderr = [o["text"] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    assert not any("Traceback" in s for s in stderr), stderr
    # every notebook shows shapes, and the figures of 01 and 02 were drawn
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "(" in text and ")" in text
    if path.stem[:2] in ("01", "02"):
        assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", [])), "no figure"
