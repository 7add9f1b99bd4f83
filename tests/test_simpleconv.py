"""SimpleConv (Défossez et al. 2023): real-size parameter count, shapes, the ClipLoss scores, scaling, save/load."""

import numpy as np
import pytest
import torch

from neurodecode._core.errors import ShapeMismatchError, ValidationError
from neurodecode.models.simpleconv import SimpleConv, SimpleConvConfig, clip_segment_loss, robust_statistics


def _expected_params(n_subjects, out_dim=1024, c_in=270, hidden=320, depth=10, pos_dim=2048):
    # written from the architecture description (spec section 6), not from the module
    n = c_in * pos_dim                                  # spatial attention heads
    n += c_in * c_in + c_in                             # initial 1x1 conv
    n += n_subjects * c_in * c_in                       # subject layers
    n += c_in * hidden * 3 + hidden + 2 * hidden        # first conv block (+ batch norm)
    n += (depth - 1) * (hidden * hidden * 3 + hidden + 2 * hidden)
    n += (depth // 2) * (hidden * 2 * hidden * 3 + 2 * hidden)  # a GLU conv (context 1) after every 2nd block
    n += hidden * 2 * hidden + 2 * hidden               # complex_out 1x1 -> 640
    n += 2 * hidden * out_dim + out_dim                 # ConvTranspose1d(640, out, 1)
    return n


def test_real_size_parameter_count_on_meta():
    cfg = SimpleConvConfig(positions=[[i / 207, (i * 7 % 208) / 207] for i in range(208)],
                           subjects=[f"meg-masc/sub-{i:02d}" for i in range(1, 28)])
    with torch.device("meta"):
        model = SimpleConv(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert n == _expected_params(27)
    assert 9e6 < n < 10e6  # "order of 10 M" with 27 subject layers (spec, unverified in the paper)


def test_shapes_and_distinct_tiny_widths():
    cfg = SimpleConvConfig.tiny(n_channels=7, n_times=9, subjects=["a", "b"])
    assert len({cfg.n_channels, cfg.spatial_channels, cfg.hidden, cfg.out_dim}) == 4
    model = SimpleConv(cfg)
    z = model.encode(np.random.default_rng(0).normal(size=(8, 7, 9)).astype("float32"), subject=["a", "b"] * 4)
    assert z.shape == (8, 20, 9) and np.isfinite(z).all()
    with pytest.raises(ShapeMismatchError, match="9 samples"):
        model.encode(np.zeros((2, 7, 8), "float32"))
    with pytest.raises(ValidationError, match="subject"):
        model.encode(np.zeros((2, 7, 9), "float32"), subject="c")
    with pytest.raises(ValidationError, match="positions"):
        SimpleConv(SimpleConvConfig(n_channels=3, positions=None))


def test_clip_loss_matches_the_reference_formula():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(7, 8, 9))
    y = rng.normal(size=(7, 8, 9))
    # independent: scores_ij = <z_i, y_j / |y_j|>, cross-entropy of row i against label i (brain -> speech)
    yn = y / np.linalg.norm(y.reshape(7, -1), axis=1)[:, None, None]
    s = np.einsum("bct,oct->bo", z, yn)
    ref = np.mean(np.log(np.exp(s).sum(1)) - np.diag(s))
    got = clip_segment_loss(torch.tensor(z), torch.tensor(y), gather=False).item()
    assert got == pytest.approx(ref, rel=1e-5)
    # not symmetric in its arguments (the estimate is not normalised)
    assert clip_segment_loss(torch.tensor(y), torch.tensor(z), gather=False).item() != pytest.approx(ref, rel=1e-3)


def test_robust_scaling_and_clamp():
    rng = np.random.default_rng(2)
    X = rng.normal(3.0, 2.0, size=(40, 7, 9)).astype("float32")
    med, iqr = robust_statistics(X)
    flat = X.transpose(1, 0, 2).reshape(7, -1)
    np.testing.assert_allclose(med, np.median(flat, axis=1), rtol=1e-6)
    np.testing.assert_allclose(iqr, np.subtract(*np.percentile(flat, [75, 25], axis=1)), rtol=1e-6)
    model = SimpleConv(SimpleConvConfig.tiny(n_channels=7, n_times=9, subjects=["a"], clamp=0.5))
    model.set_input_scaling(med, iqr)
    assert model.config.input_scaling and "input_mean" in model.state_dict()
    # after scaling and the clamp at 0.5, an input 1000 x larger gives the same output as the clamped one
    model.eval()
    big = np.full((2, 7, 9), 1e6, "float32")
    np.testing.assert_allclose(model.encode(big, "a"), model.encode(big * 10, "a"), rtol=1e-5)


def test_save_load_roundtrip_and_a_training_step(tmp_path):
    torch.manual_seed(0)
    model = SimpleConv(SimpleConvConfig.tiny(n_channels=7, n_times=9, subjects=["a", "b"]))
    batch = {"x": torch.randn(5, 7, 9), "speech": torch.randn(5, 20, 9), "subject": "a"}
    out = model.training_step(batch, 0)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.subject_layers.weights.grad is not None
    model.save_pretrained(tmp_path / "m")
    again = SimpleConv.from_pretrained(tmp_path / "m")
    x = np.random.default_rng(3).normal(size=(3, 7, 9)).astype("float32")
    np.testing.assert_allclose(again.encode(x, "b"), model.encode(x, "b"), rtol=1e-6)


def _inputs():
    g = torch.Generator().manual_seed(4)
    return torch.randn(3, 7, generator=g), torch.randn(8, 7, 5, generator=g), torch.randn(8, 3, 5, generator=g)


def _ddp_worker(rank, world, init_file, out_file):
    import json

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    w, x, y = _inputs()
    w = w.clone().requires_grad_(True)
    rows = slice(0, 3) if rank == 0 else slice(3, 8)  # unequal shares of a global batch of 8
    z = torch.einsum("bct,dc->bdt", x[rows], w)
    loss = clip_segment_loss(z, y[rows], gather=True)
    loss.backward()
    grad = w.grad.clone()
    torch.distributed.all_reduce(grad)
    if rank == 0:
        with open(out_file, "w") as fh:
            json.dump({"loss": loss.item(), "grad": (grad / world).flatten().tolist()}, fh)
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned interpreters
def test_negatives_are_gathered_across_processes(tmp_path):
    """Two gloo processes holding 3 and 5 segments score every segment against all 8 (the loss and, after DDP's
    gradient averaging, the gradient of one process holding the whole batch)."""
    import json

    torch.multiprocessing.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "o.json")), nprocs=2,
                                join=True)
    two = json.loads((tmp_path / "o.json").read_text())
    w, x, y = _inputs()
    w = w.clone().requires_grad_(True)
    z = torch.einsum("bct,dc->bdt", x, w)
    loss = clip_segment_loss(z, y, gather=True)
    loss.backward()
    assert two["loss"] == pytest.approx(loss.item(), rel=1e-5)
    np.testing.assert_allclose(two["grad"], w.grad.flatten().numpy(), rtol=1e-4, atol=1e-6)
    # and the per-process (reference) negatives give another loss
    z0 = z[:3].detach()
    assert clip_segment_loss(z0, y[:3], gather=False).item() != pytest.approx(loss.item(), rel=1e-3)
