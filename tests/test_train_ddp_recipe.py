"""`neurodecode train` of a tiny MindBridge under torchrun (2 CPU processes, gloo) equals one process on the
same global batch (issue 19, item 6).

What has to hold for the two runs to agree:

- the same global batch: the recipe's ``[train] batch_per_process = true`` multiplies ``batch_size`` by
  ``WORLD_SIZE``, so the 2-process run is given half the batch (4 per subject per process = 8 global);
  ``MultiSubjectBatches`` plans every step from ``(seed, epoch)`` alone and gives rank ``r`` its half of each
  subject's rows, so both runs see the very same trials;
- the same learning rate: ``scale_lr_with_processes = false`` (the recipe scales it with the number of GPUs,
  as the paper did when every GPU added 50 trials per subject; here the global batch is held fixed);
- SoftCLIP scores the global batch: :func:`neurodecode.models.losses.soft_clip_loss` gathers the rows of every
  process (with gradients), so its negatives do not depend on the process count;
- the cycle loss joins the same pair of subjects on every process (process 0's draw, broadcast);
- no dropout (``embed_dropout = block_dropout = 0``): the trainer seeds each process with ``seed + rank``, so
  masks of a 2-process run cannot equal those of one process over the whole batch; dropout is a per-trial
  random draw, not a property of DDP.

Tolerance: not bit-exact, because DDP averages the gradients (an all-reduce, another summation order than one
backward pass over the whole batch) and the gathered SoftCLIP sums its rows in another order; Adam divides by
sqrt(v), which carries such 1e-7 differences into the updates. Measured on the 2-core CPU machine (3 steps,
constant lr 1e-3): at most 4.3e-6 (entries about 0.29), 0.15 of the allowed ``atol=2e-5, rtol=1e-4``, while
the LayerNorm gains move by 2.4e-3 (median). The same 2-process run without the gathered negatives
(``decoder.gather_negatives=false``) differs by 5.7e-3, and one whose processes draw their cycle pairs from
their own generators (the bug fixed with this test) by 5.1e-3.

``accelerate launch --cpu --num_processes 2`` ran a single process on this machine
(shared/specs/environment.md), so the test launches with ``torchrun`` (``python -m torch.distributed.run``),
which the trainer's accelerator joins through the launcher's environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neurodecode.testing import make_nsd_fixture
from neurodecode.train import latest_checkpoint

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "pipelines" / "mindbridge_nsd.toml"
GLOBAL_BATCH = 8  # per subject per step (2 subjects per step: 16 trials)
STEPS = 3
ATOL, RTOL = 2e-5, 1e-4

# both runs: dropout off (see the module docstring), a constant lr large enough that 3 steps move every weight
# by about 3e-3, far above the tolerance
COMMON = ["--set", "decoder.embed_dropout=0.0", "--set", "decoder.block_dropout=0.0",
          "--set", "train.scheduler=constant", "--set", "train.lr=1e-3"]


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               NEURODECODE_OFFLINE="1", NEURODECODE_CACHE=str(cache))
    return env


def _train(launcher: list[str], root: Path, out: Path, env: dict[str, str], *extra: str) -> str:
    cmd = [*launcher, "-m", "neurodecode", "train", str(RECIPE), "--preset", "tiny", "--data", str(root),
           "--out", str(out), "--device", "cpu", "--max-steps", str(STEPS), *COMMON, *extra]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


def _state(out: Path) -> dict:
    path = latest_checkpoint(out / "checkpoints")
    assert path is not None, out
    return json.loads((path / "trainer_state.json").read_text())


def _history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.slow  # two cold CLI runs (one of them 2 processes) on 2 shared cores: about 40 s
def test_two_process_torchrun_train_matches_one_process_on_the_same_global_batch(tmp_path):
    from safetensors.numpy import load_file

    root = make_nsd_fixture(tmp_path / "nsd", subjects=(1, 2), n_sessions=1, seed=3)
    one, two = tmp_path / "one", tmp_path / "two"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
                "--nproc_per_node", "2"]
    # the 2-process run on a COLD feature cache: each process embeds its shards and waits for the other's
    # before reading the targets (a process without shards must not read a half-written cache)
    _train(torchrun, root, two, _env(tmp_path / "cache2"), "--set", f"train.batch_size={GLOBAL_BATCH // 2}",
           "--set", "train.scale_lr_with_processes=false")
    _train([sys.executable], root, one, _env(tmp_path / "cache1"))

    # the runs are what they claim: 1 and 2 processes, the same global batch, lr and number of steps
    s1, s2 = _state(one), _state(two)
    assert (s1["world_size"], s2["world_size"]) == (1, 2)
    for s in (s1, s2):
        assert s["step"] == STEPS
        assert s["config"]["batch_size"] == GLOBAL_BATCH and s["config"]["lr"] == pytest.approx(1e-3)
    assert s2["config"]["scale_lr_with_processes"] is False

    # the logged losses of every step (averaged over the processes) agree
    h1, h2 = _history(one), _history(two)
    assert [h["step"] for h in h1] == [h["step"] for h in h2] == list(range(1, STEPS + 1))
    for a, b in zip(h1, h2):
        for key in ("loss", "clip_image", "clip_text", "mse_image", "mse_text", "recon", "cycle"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (a["step"], key)

    w1, w2 = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert sorted(w1) == sorted(w2)
    for key in w1:
        np.testing.assert_allclose(w2[key], w1[key], atol=ATOL, rtol=RTOL, err_msg=key)
    # not vacuous: training moved the weights far beyond the tolerance. LayerNorm gains start at 1 (torch's
    # init) and move by about lr per Adam step (measured median 2.4e-3)
    gains = np.concatenate([w1[k].ravel() for k in w1 if k.startswith("translator.") and k.endswith(".net.1.weight")])
    assert gains.size == 4 * 12  # tiny base: 4 blocks of width 12
    assert float(np.median(np.abs(gains - 1.0))) > 10 * (ATOL + RTOL)
