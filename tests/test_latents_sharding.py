"""Two CPU processes under torchrun split the shards, each writing its own files; the result is merged.

The same logic is covered fast, in one process, by test_latents_cache.py::test_in_process_sharding_by_rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from neurodecode.cli import main
sys.argv = ["neurodecode", "embed"] + sys.argv[1:]
main()
"""


@pytest.mark.slow  # ~35 s: two cold interpreters importing torch + open_clip on 2 shared cores
def test_torchrun_two_processes_write_their_own_shards(tmp_path):
    from PIL import Image

    from neurodecode.latents import FeatureCache, get_space

    folder = tmp_path / "imgs"
    folder.mkdir()
    images = np.random.default_rng(2).integers(0, 256, (7, 21, 19, 3), dtype=np.uint8)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"img{i}.png")
    script = tmp_path / "embed_script.py"
    script.write_text(SCRIPT)
    out = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "0",
           str(script), "--space", "clip-vit-l-14-tiny", "--stimuli", str(folder), "--out", str(out),
           "--device", "cpu", "--shard-size", "2", "--batch-size", "2", "--json", "--store-dtype", "float32"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    summaries = [json.loads(s) for s in res.stdout.replace("}\n{", "}\x00{").split("\x00") if s.strip()]
    assert sorted(s["process"] for s in summaries) == [0, 1] and {s["world_size"] for s in summaries} == {2}
    names = sorted(p.name for p in out.glob("*.safetensors"))
    assert names == ["shard-00000-p0.safetensors", "shard-00001-p1.safetensors",
                     "shard-00002-p0.safetensors", "shard-00003-p1.safetensors"]
    cache = FeatureCache(out)
    assert cache.complete and len(cache) == 7
    ref = get_space("clip-vit-l-14-tiny").encode_images(images)
    np.testing.assert_allclose(cache.load(ids=[f"img{i}.png" for i in range(7)]), ref, rtol=1e-5, atol=1e-6)
