"""The shared M/EEG brain-module blocks (models/_meeg_blocks.py) against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neurodecode._core.errors import ShapeMismatchError, ValidationError
from neurodecode.models._meeg_blocks import (
    ConvTransposeHead,
    DilatedConvStack,
    SpatialAttention,
    SubjectLayers,
    TemporalAggregation,
    conv_dilations,
    fourier_embedding,
    sensor_positions,
)


def _fourier_loop(pos: np.ndarray, dim: int, margin: float) -> np.ndarray:
    """The embedding written as the formula: for each frequency pair (k, l), cos then sin blocks."""
    n = int(math.isqrt(dim // 2))
    width = 1 + 2 * margin
    out = np.zeros((len(pos), dim))
    for i, (x, y) in enumerate(pos):
        for k in range(n):
            for ll in range(n):
                phi = 2 * math.pi * (k * (x + margin) + ll * (y + margin)) / width
                out[i, k * n + ll] = math.cos(phi)
                out[i, n * n + k * n + ll] = math.sin(phi)
    return out


@pytest.mark.parametrize("dim", [8, 18, 32])
def test_fourier_embedding_known_answer(dim):
    pos = np.array([[0.0, 0.0], [1.0, 0.5], [0.3, 0.9], [0.25, 0.75]])
    got = fourier_embedding(torch.tensor(pos, dtype=torch.float64), dim, 0.2).numpy()
    np.testing.assert_allclose(got, _fourier_loop(pos, dim, 0.2), atol=1e-12)
    # by hand, one entry: k=1, l=0 at x=0 -> cos(2 pi 0.2 / 1.4)
    n = int(math.isqrt(dim // 2))
    assert got[0, n] == pytest.approx(math.cos(2 * math.pi * 0.2 / 1.4))


def test_fourier_embedding_refuses_bad_dim():
    with pytest.raises(ValidationError, match="2 n"):
        fourier_embedding(torch.zeros(3, 2), 20)


def _softmax(a, axis):
    a = a - np.max(a, axis=axis, keepdims=True)
    e = np.exp(a)
    return e / e.sum(axis=axis, keepdims=True)


def test_spatial_attention_matches_numpy_with_masks():
    torch.manual_seed(0)
    n_out, dim, c, t, b = 7, 18, 9, 8, 3
    sa = SpatialAttention(n_out, dim, dropout_radius=0.3).double().eval()
    rng = np.random.default_rng(1)
    pos = rng.uniform(0, 1, (c, 2))
    pos[4] = np.nan  # a channel without a position
    x = rng.normal(size=(b, c, t))
    center = np.array([0.5, 0.5])
    got = sa(torch.tensor(x), torch.tensor(pos), torch.tensor(center)).detach().numpy()
    # independent: scores from the loop embedding, masked channels excluded by hand
    heads = sa.heads.detach().numpy()
    ok = np.isfinite(pos).all(1)
    dropped = np.zeros(c, bool)
    dropped[ok] = np.linalg.norm(pos[ok] - center, axis=1) <= 0.3
    use = ok & ~dropped
    assert 0 < use.sum() < ok.sum()  # the disc drops some sensors
    emb = _fourier_loop(np.nan_to_num(pos), dim, 0.2)
    scores = heads @ emb[use].T  # (O, C_use)
    w = np.zeros((n_out, c))
    w[:, use] = _softmax(scores, axis=1)
    want = np.einsum("oc,bct->bot", w, x)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # eval without a centre: nothing dropped, only the NaN channel masked
    w_eval = sa.weights(torch.tensor(pos)).detach().numpy()
    np.testing.assert_allclose(w_eval[:, ok], _softmax(heads @ emb[ok].T, axis=1), rtol=1e-10)
    assert np.all(w_eval[:, ~ok] == 0)


def test_spatial_attention_per_sample_positions_and_training_dropout():
    torch.manual_seed(3)
    sa = SpatialAttention(5, 8, dropout_radius=0.25)
    pos = torch.rand(2, 9, 2)
    x = torch.randn(2, 9, 7)
    w = sa.eval().weights(pos)
    assert w.shape == (2, 5, 9)
    y = sa(x, pos)
    torch.testing.assert_close(y[1], w[1] @ x[1])
    sa.train()
    zeroed = 0
    for _ in range(20):  # random discs: dropped sensors get exactly zero weight, rows still sum to 1
        wt = sa.weights(pos[0])
        torch.testing.assert_close(wt.sum(-1), torch.ones(5))
        zeroed += int((wt[0] == 0).sum())
    assert zeroed > 0
    # a disc covering every sensor keeps them all (no division by zero)
    wt = sa.weights(pos[0], torch.tensor([0.5, 0.5]) * 1.0)
    big = SpatialAttention(5, 8, dropout_radius=2.0).train()
    assert torch.isfinite(big.weights(pos[0])).all() and torch.isfinite(wt).all()


def test_subject_layers_match_per_subject_matmul():
    torch.manual_seed(0)
    layer = SubjectLayers(7, 8, n_subjects=3)
    x = torch.randn(4, 7, 9)
    subj = torch.tensor([2, 0, 2, 1])
    got = layer(x, subj)
    w = layer.weights.detach()
    for i in range(4):
        torch.testing.assert_close(got[i], w[subj[i]].T @ x[i])
    ident = SubjectLayers(7, 7, 2, init_id=True)
    torch.testing.assert_close(ident(x, torch.tensor([0, 1, 1, 0])), x / math.sqrt(7))
    with pytest.raises(ShapeMismatchError):
        layer(x, torch.tensor([0, 1]))


def test_conv_dilations_and_stack_parameter_count():
    assert conv_dilations(10, 2, 5) == [1, 2, 4, 8, 16, 1, 2, 4, 8, 16]
    assert conv_dilations(4, 2, None) == [1, 2, 4, 8]
    stack = DilatedConvStack(270, 320, depth=10, kernel=3, dilation_period=5, glu=2, glu_context=1)
    # independent count from the architecture: first conv 270->320, nine 320->320, BN (2 per channel),
    # five GLU convs 320->640 with kernel 3
    conv0 = 270 * 320 * 3 + 320
    conv = 320 * 320 * 3 + 320
    bn = 2 * 320
    glu = 320 * 640 * 3 + 640
    want = conv0 + 9 * conv + 10 * bn + 5 * glu
    assert sum(p.numel() for p in stack.parameters()) == want
    assert [b.conv.dilation[0] for b in stack.blocks] == [1, 2, 4, 8, 16, 1, 2, 4, 8, 16]


def test_conv_stack_forward_residuals_and_glu():
    torch.manual_seed(0)
    stack = DilatedConvStack(7, 8, depth=3, kernel=3, glu=2, glu_context=1).eval()
    x = torch.randn(2, 7, 9)
    y = stack(x)
    assert y.shape == (2, 8, 9)
    # by hand: block0 (no skip, widths differ), block1 (skip) + GLU, block2 (skip)
    b0, b1, b2 = stack.blocks
    h = torch.nn.functional.gelu(b0.norm(b0.conv(x)))
    h = h + torch.nn.functional.gelu(b1.norm(b1.conv(h)))
    conv_glu = stack.glus[1][0]
    a, g = conv_glu(h).chunk(2, dim=1)
    h = a * torch.sigmoid(g)
    h = h + torch.nn.functional.gelu(b2.norm(b2.conv(h)))
    torch.testing.assert_close(y, h)
    assert isinstance(stack.glus[0], torch.nn.Identity) and isinstance(stack.glus[2], torch.nn.Identity)
    with pytest.raises(ValidationError, match="odd"):
        DilatedConvStack(7, 8, kernel=4)


def test_temporal_aggregation_modes():
    torch.manual_seed(0)
    x = torch.randn(3, 8, 9)
    aff = TemporalAggregation("affine", n_times=9)
    torch.testing.assert_close(aff(x), x @ aff.affine.weight[0] + aff.affine.bias)
    torch.testing.assert_close(TemporalAggregation("mean")(x), x.mean(-1))
    att = TemporalAggregation("attention", channels=8)
    s = torch.einsum("d,bdt->bt", att.score.weight[0, :, 0], x) + att.score.bias
    torch.testing.assert_close(att(x), (x * torch.softmax(s, -1)[:, None]).sum(-1))
    with pytest.raises(ShapeMismatchError, match="9 time samples"):
        aff(torch.randn(3, 8, 7))
    with pytest.raises(ValidationError):
        TemporalAggregation("max")


def test_conv_transpose_head_shape():
    head = ConvTransposeHead(8, 7)
    assert head(torch.randn(2, 8, 9)).shape == (2, 7, 9)


def test_sensor_positions_ctf_names_and_info():
    import mne

    names = ["MLC11-1609", "MRO11-1609", "MZC01-1609", "MLT11-1609", "UPPT001"]
    pos = sensor_positions(ch_names=names, layout="CTF-275")
    assert pos.shape == (5, 2) and pos.dtype == np.float32
    assert np.isnan(pos[4]).all()
    good = pos[:4]
    assert good.min() == 0.0 and good.max() == 1.0
    # independent: the layout's own coordinates, min-max scaled
    lay = mne.channels.read_layout("CTF-275")
    idx = [[n.split("-")[0] for n in lay.names].index(c.split("-")[0]) for c in names[:4]]
    xy = lay.pos[idx, :2]
    np.testing.assert_allclose(good, (xy - xy.min(0)) / (xy.max(0) - xy.min(0)), rtol=1e-6)
    # from an EEG info with a montage (find_layout)
    info = mne.create_info(["Fz", "Cz", "Pz", "Oz", "C3", "C4", "T7"], 100.0, "eeg")
    info.set_montage("easycap-M1")
    p = sensor_positions(info)
    assert p.shape == (7, 2) and np.isfinite(p).all() and p.min() == 0.0 and p.max() == 1.0
    # Oz behind Pz behind Cz behind Fz (y decreases front to back); C3 left of C4
    assert p[0, 1] > p[1, 1] > p[2, 1] > p[3, 1] and p[4, 0] < p[5, 0]
    with pytest.raises(ValidationError, match="layout"):
        sensor_positions(ch_names=["A", "B"], layout="CTF-275")
