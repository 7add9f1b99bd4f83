"""Shared losses and schedules against the reference formulas (tests/reference_formulas.py), and across processes.

SoftCLIP and ``mixco_nce`` / ``soft_cont_loss`` as in MindBridge @2a3943f and MindEyeV2 @c184718
``src/utils.py``; OneCycle as PyTorch's, with the reference recipes' pct_start and final_div_factor.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from reference_formulas import cosine_anneal as ref_cosine_anneal
from reference_formulas import mixco_nce, mixco_sum, onecycle_lr, soft_clip, soft_cont, unit_rows

from neurodecode.models.losses import clip_loss, cosine_anneal, mixco_loss, soft_clip_loss, soft_cont_loss
from neurodecode.train import TrainConfig, Trainer


def _data(seed=0, n=7, shape=(3, 3)):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(n, *shape, generator=g)
    b = t + 0.8 * torch.randn(n, *shape, generator=g)  # correlated with the targets, as trained brains are
    return b, t


@pytest.mark.parametrize("temperature", [0.005, 0.0075, 0.125])
def test_soft_clip_equals_the_reference_formula(temperature):
    b, t = _data()
    expected = soft_clip(unit_rows(b.numpy()), unit_rows(t.numpy()), temperature)
    assert soft_clip_loss(b, t, temperature).item() == pytest.approx(expected, rel=1e-4)


def test_contrastive_losses_keep_float32_under_bfloat16_autocast():
    g = torch.Generator().manual_seed(4)
    b, t = torch.randn(9, 5, 7, generator=g), torch.randn(9, 5, 7, generator=g)  # cosines ~0.2: logits ~40 at T 0.005
    expected = soft_clip(unit_rows(b.numpy()), unit_rows(t.numpy()), 0.005)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert soft_clip_loss(b, t, 0.005).item() == pytest.approx(expected, rel=2e-5)  # bfloat16 logits: 1.6e-4 off
        perm, betas = torch.arange(9).flip(0), torch.full((9,), 0.7)
        ref = mixco_sum(unit_rows(b.numpy()), unit_rows(t.numpy()), 0.006, perm.numpy(), betas.numpy())
        assert mixco_loss(b, t, perm, betas, temperature=0.006).item() == pytest.approx(ref, rel=2e-5)


def test_mixco_labels_equal_the_reference_formulas_including_self_pairs():
    b, t = _data(1, n=7)
    perm = torch.tensor([3, 1, 0, 6, 4, 2, 5])  # items 1 and 4 are paired with themselves
    betas = torch.tensor([0.3, 0.8, 1.0, 0.05, 1.0, 0.6, 0.45])  # item 4 unselected (beta 1), item 1 mixed
    pb, pt = unit_rows(b.numpy()), unit_rows(t.numpy())
    for temperature in (0.006, 0.1):
        ref = mixco_nce(pb, pt, temperature, perm.numpy(), betas.numpy())
        ours_ref = mixco_loss(b, t, perm, betas, temperature=temperature, labels="reference").item()
        assert ours_ref == pytest.approx(ref, rel=1e-4)
        summed = mixco_sum(pb, pt, temperature, perm.numpy(), betas.numpy())
        assert mixco_loss(b, t, perm, betas, temperature=temperature).item() == pytest.approx(summed, rel=1e-4)
    assert abs(summed - ref) > 1e-3  # the self-pairs make the two label rules differ


def test_soft_cont_equals_the_reference_formula():
    g = torch.Generator().manual_seed(2)
    s, p, a = (torch.randn(9, 8, generator=g) for _ in range(3))
    expected = soft_cont(unit_rows(s.numpy()), unit_rows(p.numpy()), unit_rows(a.numpy()), 0.2)
    assert soft_cont_loss(s, p, a, 0.2).item() == pytest.approx(expected, rel=1e-4)


def test_cosine_anneal_equals_mindeye2_schedule():
    ref = ref_cosine_anneal(0.004, 0.0075, 101)  # 150 epochs - int(0.33 * 150) SoftCLIP epochs
    for k in (0, 1, 37, 50, 99, 100):
        assert cosine_anneal(0.004, 0.0075, k, 101) == pytest.approx(ref[k], rel=1e-12)
    assert cosine_anneal(0.004, 0.0075, 0, 1) == 0.004


@pytest.mark.parametrize(("epochs", "steps_per_epoch", "max_lr", "final_div"), [
    (600, 1, 1.5e-4, 100.0),   # MindBridge: trainer.py OneCycleLR(final_div_factor=100, pct_start=2/num_epochs)
    (150, 7, 3e-4, 1000.0),    # MindEye2: Train.ipynb OneCycleLR(final_div_factor=1000, pct_start=2/num_epochs)
])
def test_onecycle_schedule_matches_the_reference_at_given_steps(epochs, steps_per_epoch, max_lr, final_div):
    total = epochs * steps_per_epoch
    cfg = TrainConfig(lr=max_lr, pct_start=2 / epochs, final_div_factor=final_div, cycle_momentum=True)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=max_lr)
    sched = Trainer._build_scheduler(cfg, opt, max_lr, total)
    checks = {0, 1, 5, int(2 / epochs * total) - 1, int(2 / epochs * total), total // 2, total - 2, total - 1}
    for step in range(total):
        if step in checks:
            assert sched.get_last_lr()[0] == pytest.approx(onecycle_lr(step, total, max_lr, 2 / epochs, 25.0, final_div),
                                                           rel=1e-6), step
        opt.step()
        sched.step()
    # the last step reaches max_lr / 25 / final_div; momentum (beta1) cycles 0.95 -> 0.85 -> 0.95
    assert onecycle_lr(total - 1, total, max_lr, 2 / epochs, 25.0, final_div) == pytest.approx(max_lr / 25 / final_div)
    assert opt.param_groups[0]["betas"][0] == pytest.approx(0.95, abs=1e-6)


# -- across processes ---------------------------------------------------------------------------------
def _losses(w, b, t, perm, betas, s, p, a):
    bw = b @ w
    return {"soft_clip": soft_clip_loss(bw.view(len(bw), 3, 3), t, 0.05),
            "mixco": mixco_loss(bw, t.flatten(1), perm, betas, temperature=0.1),
            "soft_cont": soft_cont_loss(s @ w[:, :8], p, a, 0.2),
            "clip": clip_loss(bw, t.flatten(1), 5.0)}


def _global_inputs():
    g = torch.Generator().manual_seed(3)
    b, t = torch.randn(8, 9, generator=g), torch.randn(8, 3, 3, generator=g)
    perm = torch.cat([torch.tensor([2, 0, 1]), torch.tensor([4, 3, 0, 1, 2]) + 3])  # rank 0: 3 rows, rank 1: 5 rows
    betas = torch.rand(8, generator=g)
    s, p, a = torch.randn(8, 9, generator=g), torch.randn(8, 8, generator=g), torch.randn(8, 8, generator=g)
    w = torch.randn(9, 9, generator=g)
    return w, b, t, perm, betas, s, p, a


def _worker(rank, world, init_file, out_file):
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    w, b, t, perm, betas, s, p, a = _global_inputs()
    rows = slice(0, 3) if rank == 0 else slice(3, 8)
    local_perm = perm[rows] - rows.start
    results = {}
    for name in ("soft_clip", "mixco", "soft_cont", "clip"):
        wr = w.clone().requires_grad_(True)
        loss = _losses(wr, b[rows], t[rows], local_perm, betas[rows], s[rows], p[rows], a[rows])[name]
        loss.backward()
        grad = wr.grad.clone()
        torch.distributed.all_reduce(grad)
        results[name] = {"loss": loss.item(), "grad": (grad / world).flatten().tolist()}  # DDP averages gradients
    if rank == 0:
        with open(out_file, "w") as fh:
            json.dump(results, fh)
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned interpreters: about 10 s
def test_contrastive_losses_do_not_depend_on_the_process_count(tmp_path):
    """Two gloo processes holding 3 and 5 rows of a global batch of 8: the same loss and, after DDP's
    gradient averaging, the same gradient as one process holding all 8 rows."""
    out = tmp_path / "two.json"
    torch.multiprocessing.spawn(_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    two = json.loads(out.read_text())
    inputs = _global_inputs()
    for name, res in two.items():
        w = inputs[0].clone().requires_grad_(True)
        loss = _losses(w, *inputs[1:])[name]
        loss.backward()
        assert res["loss"] == pytest.approx(loss.item(), rel=1e-5), name
        np.testing.assert_allclose(res["grad"], w.grad.flatten().numpy(), rtol=1e-4, atol=1e-6, err_msg=name)
