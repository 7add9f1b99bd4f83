"""The trainer: configs, batch sources, fitting, metrics log, checkpoints and exact resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import diffusers.optimization as diffusers_optimization  # imported at collection: urllib3 probes a socket on import
import numpy as np
import pytest
import torch

from neurodecode._core.errors import ShapeMismatchError, ValidationError
from neurodecode.train import ArrayBatches, MultiSubjectBatches, TrainConfig, Trainer, latest_checkpoint

REPO = Path(__file__).resolve().parents[1]

MODEL_SRC = textwrap.dedent('''
    import os, time, torch

    class Regressor(torch.nn.Module):
        """Linear map with dropout and a random input jitter (both use the global RNG)."""

        def __init__(self, n_in=9, n_out=7):
            super().__init__()
            self.lin = torch.nn.Linear(n_in, n_out)
            self.drop = torch.nn.Dropout(0.2)
            self.pause_at = None

        def training_step(self, batch, step):
            if self.pause_at is not None and step == self.pause_at:
                open(os.environ["ND_MARKER"], "w").close()
                time.sleep(120)
            x = batch["x"] + 0.01 * torch.randn_like(batch["x"])
            pred = self.lin(self.drop(x))
            err = pred - batch["y"]
            return {"loss": (err ** 2).mean(), "mae": err.abs().mean()}
''')


def _model_module(tmp_path):
    (tmp_path / "nd_test_model.py").write_text(MODEL_SRC)
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        import nd_test_model

        return importlib.reload(nd_test_model)
    finally:
        sys.path.remove(str(tmp_path))


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 9)).astype(np.float32)
    w = rng.standard_normal((9, 7)).astype(np.float32)
    return x, x @ w


def _config(**kw):
    base = dict(epochs=4, batch_size=8, lr=3e-2, device="cpu", log_every=3, checkpoint_every=5, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_config_checks_and_round_trip():
    with pytest.raises(ValidationError, match="scheduler"):
        TrainConfig(scheduler="linear")
    with pytest.raises(ValidationError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValidationError, match="lerning_rate"):
        TrainConfig.from_dict({"lerning_rate": 1.0})
    cfg = TrainConfig(lr=1e-3, betas=[0.9, 0.95])
    assert TrainConfig.from_dict({**cfg.to_dict(), "betas": tuple(cfg.betas)}) == cfg


def test_array_batches_order_resume_and_rank_slices():
    x = np.arange(20, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    src = ArrayBatches({"x": x, "i": np.arange(20)}, batch_size=6)
    assert src.steps_per_epoch == 3
    e0 = [b["i"].tolist() for b in src.epoch(0, seed=1)]
    assert e0 == [b["i"].tolist() for b in src.epoch(0, seed=1)]  # seeded by (seed, epoch)
    assert e0 != [b["i"].tolist() for b in src.epoch(1, seed=1)]
    assert len(set(sum(e0, []))) == 18  # drop_last, no repeats
    assert [b["i"].tolist() for b in src.epoch(0, seed=1, start=2)] == e0[2:]
    halves = [[b["i"].tolist() for b in src.epoch(0, seed=1, rank=r, world_size=2)] for r in (0, 1)]
    assert [a + b for a, b in zip(*halves)] == e0
    val = ArrayBatches({"i": np.arange(20)}, batch_size=6, shuffle=False)
    assert [b["i"].tolist() for b in val.epoch(0)][-1] == [18, 19]
    with pytest.raises(ShapeMismatchError, match="same number of samples"):
        ArrayBatches({"x": np.zeros((5, 2)), "y": np.zeros(4)}, 2)


def test_multi_subject_batches_two_distinct_subjects_per_step():
    data = {"nsd/subj01": {"x": np.zeros((30, 7), np.float32), "i": np.arange(30)},
            "nsd/subj02": {"x": np.ones((20, 8), np.float32), "i": np.arange(20)},
            "nsd/subj05": {"x": np.ones((25, 9), np.float32), "i": np.arange(25)}}
    src = MultiSubjectBatches(data, batch_size=4, subjects_per_step=2)
    assert src.steps_per_epoch == (7 + 5 + 6) // 2
    batches = list(src.epoch(0, seed=2))
    sizes = {"nsd/subj01": 7, "nsd/subj02": 8, "nsd/subj05": 9}
    for b in batches:
        subs = [p["subject"] for p in b["parts"]]
        assert len(set(subs)) == 2
        for p in b["parts"]:
            assert p["x"].shape == (4, sizes[p["subject"]])
    again = list(src.epoch(0, seed=2, start=3))
    assert [[p["i"].tolist() for p in b["parts"]] for b in again] == \
        [[p["i"].tolist() for p in b["parts"]] for b in batches[3:]]
    single = MultiSubjectBatches(data, batch_size=4)
    assert isinstance(next(iter(single.epoch(0)))["subject"], str)


def test_fit_learns_logs_and_writes_safe_checkpoints(tmp_path):
    mod = _model_module(tmp_path)
    x, y = _data()
    torch.manual_seed(0)
    model = mod.Regressor()
    model.drop.p = 0.0
    with torch.no_grad():
        before = float(((model.lin(torch.from_numpy(x)) - torch.from_numpy(y)) ** 2).mean())
    out = tmp_path / "run"
    result = Trainer(model, _config(epochs=6, lr=0.3), out_dir=out).fit(
        ArrayBatches({"x": x, "y": y}, 8), ArrayBatches({"x": x, "y": y}, 16, shuffle=False))
    assert result.steps == 36 and result.resumed_from == 0
    assert result.metrics["val/loss"] < 0.2 * before
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    train_steps = [e["step"] for e in lines if "loss" in e]
    assert train_steps == [3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36]
    assert sum("val/loss" in e for e in lines) == 6  # one validation per epoch
    ckpt = latest_checkpoint(out / "checkpoints")
    assert ckpt == result.checkpoint and ckpt.name == "step_00000036"
    assert len(list((out / "checkpoints").glob("step_*"))) == 2  # keep_checkpoints
    for f in ckpt.iterdir():
        assert f.read_bytes()[:1] != b"\x80" and f.read_bytes()[:2] != b"PK"  # no pickles
    # a second fit with resume=True finds the run finished and changes nothing
    w = model.lin.weight.detach().clone()
    again = Trainer(model, _config(epochs=6, lr=0.3), out_dir=out).fit(ArrayBatches({"x": x, "y": y}, 8))
    assert again.resumed_from == 36 and torch.equal(model.lin.weight, w)


def test_sigkill_and_resume_gives_bit_identical_weights(tmp_path):
    mod = _model_module(tmp_path)
    x, y = _data()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    cfg = _config()  # 4 epochs x 6 steps, checkpoint every 5

    torch.manual_seed(0)
    reference = mod.Regressor()
    Trainer(reference, cfg).fit(ArrayBatches({"x": x, "y": y}, 8))

    out = tmp_path / "killed"
    marker = tmp_path / "marker"
    script = textwrap.dedent(f'''
        import sys, numpy as np, torch
        torch.set_num_threads(1)
        sys.path.insert(0, {str(tmp_path)!r})
        import nd_test_model
        from neurodecode.train import ArrayBatches, TrainConfig, Trainer
        cfg = TrainConfig(**{cfg.to_dict()!r})
        torch.manual_seed(0)
        model = nd_test_model.Regressor()
        model.pause_at = 13
        x, y = np.load({str(tmp_path / "x.npy")!r}), np.load({str(tmp_path / "y.npy")!r})
        Trainer(model, cfg, out_dir={str(out)!r}).fit(ArrayBatches({{"x": x, "y": y}}, 8))
    ''')
    env = {**os.environ, "ND_MARKER": str(marker), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert latest_checkpoint(out / "checkpoints").name == "step_00000010"
    state = json.loads((out / "checkpoints" / "step_00000010" / "trainer_state.json").read_text())
    assert "history" not in state and state["metrics_lines"] == 3  # steps 3, 6, 9 (the history is in the log)
    # what a kill in the middle of a write leaves: an unfinished checkpoint and a temporary of the dead process
    from neurodecode._core.files import temp_tag

    partial = out / "checkpoints" / ".step_00000015.partial"
    partial.mkdir()
    orphan = out / f".metrics.jsonl{temp_tag().replace(f'-{os.getpid()}-', f'-{proc.pid}-')}x.tmp"
    orphan.write_text("half")

    torch.manual_seed(123)  # a different init: everything must come from the checkpoint
    resumed = mod.Regressor()
    result = Trainer(resumed, cfg, out_dir=out).fit(ArrayBatches({"x": x, "y": y}, 8))
    assert result.resumed_from == 10 and result.steps == 24
    assert torch.equal(resumed.lin.weight, reference.lin.weight)
    assert torch.equal(resumed.lin.bias, reference.lin.bias)
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [e["step"] for e in lines]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # lines after the checkpoint dropped
    assert steps[:4] == [3, 6, 9, 12] and result.history == lines
    assert not partial.exists() and not orphan.exists()


def test_max_steps_and_schedules(tmp_path):
    mod = _model_module(tmp_path)
    x, y = _data()
    for sched in ("onecycle", "cosine", "constant"):
        torch.manual_seed(0)
        model = mod.Regressor()
        res = Trainer(model, _config(scheduler=sched, max_steps=4, optimizer="adam")).fit(ArrayBatches({"x": x, "y": y}, 8))
        assert res.steps == 4
        lr = res.history[-1]["lr"]
        if sched == "constant":
            assert lr == pytest.approx(3e-2)
        else:
            assert lr < 3e-2 * 0.5


@pytest.mark.parametrize("sched", ["onecycle", "constant"])
def test_resuming_with_a_longer_plan(tmp_path, sched):
    """A constant schedule extends; a schedule planned for N steps refuses another length, naming the fix."""
    mod = _model_module(tmp_path)
    x, y = _data()
    out = tmp_path / "run"

    def run(max_steps):
        torch.manual_seed(0)
        return Trainer(mod.Regressor(), _config(scheduler=sched, max_steps=max_steps, checkpoint_every=1),
                       out_dir=out).fit(ArrayBatches({"x": x, "y": y}, 8))

    assert run(3).steps == 3
    if sched == "constant":
        res = run(7)
        assert (res.resumed_from, res.steps) == (3, 7)
        assert [e["step"] for e in res.history if "loss" in e][-1] == 7
    else:
        with pytest.raises(ValidationError, match=r"max_steps.*3 steps.*7 steps.*no-resume"):
            run(7)
        assert run(3).resumed_from == 3  # the same plan still resumes


class _AutocastProbe(torch.nn.Module):
    """Linear regressor that records whether CPU autocast was on, and in which dtype it computed."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(9, 7)
        self.probe: list[tuple[bool, torch.dtype]] = []

    def training_step(self, batch, step):
        pred = self.lin(batch["x"])
        if not torch.compiler.is_compiling():
            self.probe.append((torch.is_autocast_enabled("cpu"), pred.dtype))
        return {"loss": ((pred.float() - batch["y"]) ** 2).mean()}


def _fit_probe(**kw):
    x, y = _data()
    torch.manual_seed(0)
    model = _AutocastProbe()
    res = Trainer(model, _config(checkpoint_every=None, epochs=12, **kw)).fit(ArrayBatches({"x": x, "y": y}, 8))
    return model, res


def test_bf16_autocast_trains_with_float32_master_weights():
    ref, ref_res = _fit_probe(precision="fp32")
    model, res = _fit_probe(precision="bf16")
    assert ref.probe[0] == (False, torch.float32)
    assert model.probe[0] == (True, torch.bfloat16)  # the step ran under autocast
    assert model.lin.weight.dtype == torch.float32  # optimizer state and weights stay float32
    first = res.history[0]["loss"]
    assert res.metrics["loss"] < 0.5 * first
    assert res.metrics["loss"] == pytest.approx(ref_res.metrics["loss"], rel=0.05)


@pytest.mark.slow
def test_compiled_step_matches_eager():
    ref, ref_res = _fit_probe(precision="fp32")
    model, res = _fit_probe(precision="fp32", compile=True)
    torch.testing.assert_close(model.lin.weight, ref.lin.weight, rtol=1e-4, atol=1e-5)


def test_frozen_model_is_refused(tmp_path):
    mod = _model_module(tmp_path)
    model = mod.Regressor().requires_grad_(False)
    x, y = _data()
    with pytest.raises(ValidationError, match="trainable"):
        Trainer(model, _config()).fit(ArrayBatches({"x": x, "y": y}, 8))


def test_indexed_rows_give_the_same_batches_without_copying_repeats():
    import numpy as np
    import torch

    from neurodecode.train import ArrayBatches, IndexedRows, MultiSubjectBatches

    rng = np.random.default_rng(0)
    table = rng.normal(size=(7, 3, 8)).astype(np.float32)
    rows = np.array([4, 0, 4, 6, 1, 1, 2, 5, 3])
    x = rng.normal(size=(9, 5)).astype(np.float32)
    dense = ArrayBatches({"x": x, "y": table[rows]}, batch_size=4)
    lazy = ArrayBatches({"x": x, "y": IndexedRows(table, rows)}, batch_size=4)
    for a, b in zip(dense.epoch(1, seed=3), lazy.epoch(1, seed=3), strict=True):
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])
    multi = MultiSubjectBatches({"s1": {"x": x, "y": IndexedRows(table, rows)}}, batch_size=3)
    batch = next(iter(multi.epoch(0)))
    assert batch["y"].shape == (3, 3, 8)
    with pytest.raises(ValidationError, match="index"):
        IndexedRows(table, np.array([0, 7]))


@pytest.mark.parametrize("sched", ["cosine", "constant"])
def test_warmup_schedules_match_diffusers(tmp_path, sched):
    """warmup_steps follows diffusers' get_{cosine,constant}_schedule_with_warmup (ATM's prior: 500 steps)."""
    get_constant_schedule_with_warmup = diffusers_optimization.get_constant_schedule_with_warmup
    get_cosine_schedule_with_warmup = diffusers_optimization.get_cosine_schedule_with_warmup
    mod = _model_module(tmp_path)
    x, y = _data()
    torch.manual_seed(0)
    res = Trainer(mod.Regressor(), _config(scheduler=sched, warmup_steps=3, max_steps=9, log_every=1,
                                           checkpoint_every=None)).fit(ArrayBatches({"x": x, "y": y}, 8))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-2)
    ref = (get_cosine_schedule_with_warmup(opt, num_warmup_steps=3, num_training_steps=9) if sched == "cosine"
           else get_constant_schedule_with_warmup(opt, num_warmup_steps=3))
    expected = []
    for _ in range(9):
        opt.step()
        ref.step()
        expected.append(ref.get_last_lr()[0])
    assert [e["lr"] for e in res.history] == pytest.approx(expected)
    assert expected[1] == pytest.approx(3e-2 * 2 / 3)  # still warming up after 2 steps


def test_warmup_refused_with_onecycle():
    with pytest.raises(ValidationError, match="warmup_steps"):
        TrainConfig(scheduler="onecycle", warmup_steps=5)
