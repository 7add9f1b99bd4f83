"""The transformer brain encoder against outside truth: the reference's layer shapes (parameter counts computed
here from nn.MultiheadAttention / Linear / LayerNorm shapes), DETR's sine encoding written from its formula, a
pre-norm cross-attention layer computed by hand, the ROI readout routing, and the ridge baseline on a known map."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neurodecode.models.brain_encoder import (
    UNLABELLED,
    BrainEncoderConfig,
    RidgeBrainEncoder,
    RidgeEncoderConfig,
    TransformerBrainEncoder,
    roi_groups,
    sine_position_encoding,
)


def _mha(d):  # in_proj (3d x d + 3d) + out_proj (d x d + d)
    return 4 * d * d + 4 * d


def _ln(d):
    return 2 * d


def test_decoder_parameter_count_matches_the_reference_layer_shapes():
    """The reference's DETR decoder layer (d 768, FFN 1024) allocates self-attention, cross-attention, FFN and 3
    LayerNorms, plus the decoder's final LayerNorm: 6,305,536 (~6.3 M). Its forward_pre uses neither the
    self-attention nor norm2: 3,941,632 parameters do the work. Readout: 769 per voxel (~0.77 M per 1,000)."""
    d, ff = 768, 1024
    ffn = d * ff + ff + ff * d + d
    reference_alloc = _mha(d) + _mha(d) + ffn + 3 * _ln(d) + _ln(d)
    assert reference_alloc == 6_305_536
    used = _mha(d) + ffn + 2 * _ln(d) + _ln(d)
    with torch.device("meta"):
        detr = TransformerBrainEncoder(BrainEncoderConfig(self_attention=True))
        ours = TransformerBrainEncoder(BrainEncoderConfig())
    assert detr.decoder_parameters() == reference_alloc
    assert ours.decoder_parameters() == used == 3_941_632
    assert ours.readout.weight.numel() + ours.readout.bias.numel() == 15724 * (d + 1)
    assert ours.query_embed.weight.shape == (2, d)


def test_sine_position_encoding_is_detrs_formula():
    h, w, dim = 3, 4, 12
    npf, scale, temp = dim // 2, 2 * math.pi, 10000.0
    ref = np.zeros((h, w, dim))
    for r in range(h):
        for c in range(w):
            y = (r + 1) / (h + 1e-6) * scale
            x = (c + 1) / (w + 1e-6) * scale
            for i in range(npf):
                t = temp ** (2 * (i // 2) / npf)
                f = math.sin if i % 2 == 0 else math.cos
                ref[r, c, i] = f(y / t)
                ref[r, c, npf + i] = f(x / t)
    got = sine_position_encoding(h, w, dim).numpy()
    # DETR interleaves sin / cos pairs: feature 2k = sin, 2k+1 = cos of the same frequency
    np.testing.assert_allclose(got, ref.reshape(h * w, dim), atol=1e-5)


def _attention_by_hand(mha, q_in, k_in, v_in, n_heads):
    d = q_in.shape[-1]
    W, b = mha.in_proj_weight, mha.in_proj_bias
    q = q_in @ W[:d].T + b[:d]
    k = k_in @ W[d:2 * d].T + b[d:2 * d]
    v = v_in @ W[2 * d:].T + b[2 * d:]
    hd = d // n_heads

    def split(t):
        return t.reshape(t.shape[0], t.shape[1], n_heads, hd).transpose(1, 2)

    att = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(hd), dim=-1)
    out = (att @ split(v)).transpose(1, 2).reshape(q.shape[0], q.shape[1], d)
    return out @ mha.out_proj.weight.T + mha.out_proj.bias


def test_forward_is_the_reference_pre_norm_layer_computed_by_hand():
    labels = np.array([1, 2, 2, 0, 1, 3, 0, 2])
    mem, names = roi_groups(labels)
    torch.manual_seed(0)
    model = TransformerBrainEncoder.tiny(membership=mem, roi_names=names).eval()
    with torch.no_grad():
        model.query_embed.weight.normal_()
        x = torch.randn(5, 9, 28)
        got = model(x)
        layer, c = model.layers[0], model.config
        src = model.input_proj(x)  # 28 -> 20
        pos = sine_position_encoding(3, 3, 20)[None]
        qp = model.query_embed.weight[None].expand(5, -1, -1)
        tgt = torch.zeros_like(qp)
        ln = torch.nn.functional.layer_norm
        t = ln(tgt, (20,), layer.norm1.weight, layer.norm1.bias)
        tgt = tgt + _attention_by_hand(layer.cross_attn, t + qp, src + pos, src, c.n_heads)
        t = ln(tgt, (20,), layer.norm3.weight, layer.norm3.bias)
        tgt = tgt + (torch.relu(t @ layer.linear1.weight.T + layer.linear1.bias) @ layer.linear2.weight.T
                     + layer.linear2.bias)
        out = ln(tgt, (20,), model.norm.weight, model.norm.bias)
        per_q = out @ model.readout.weight.T + model.readout.bias  # (5, groups, voxels)
        group_of = mem.argmax(0)
        want = per_q[:, torch.as_tensor(group_of), torch.arange(8)]
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)


def test_each_voxel_reads_its_own_rois_query():
    labels = np.array([1, 1, 2, 0, 2, 1, 0])
    mem, names = roi_groups(labels)
    assert names == ["1", "2", UNLABELLED]
    model = TransformerBrainEncoder.tiny(membership=mem, roi_names=names).eval()
    x = torch.randn(2, 9, 28)
    with torch.no_grad():
        before = model(x)
        model.query_embed.weight[1] += 1.0  # ROI "2" only
        after = model(x)
    changed = (after - before).abs().amax(0).numpy() > 1e-6
    np.testing.assert_array_equal(changed, labels == 2)


def test_roi_groups_hemispheres_and_overlaps():
    mem, names = roi_groups(np.array([3, 3, 5, 0, 5, 0]), hemisphere=np.array(["lh", "rh", "lh", "lh", "rh", "rh"]))
    assert names == ["lh/3", "lh/5", f"lh/{UNLABELLED}", "rh/3", "rh/5", f"rh/{UNLABELLED}"]
    np.testing.assert_array_equal(mem.sum(0), 1)
    over, n2 = roi_groups(membership=np.array([[1, 1, 0, 0], [0, 1, 1, 0]]), names=["V1", "FFA"])
    assert n2 == ["V1", "FFA", UNLABELLED] and over.shape == (3, 4)
    np.testing.assert_array_equal(over[:, 1], [True, True, False])  # the overlap reads both queries
    np.testing.assert_array_equal(over[2], [False, False, False, True])


def test_bad_membership_and_tokens_teach():
    from neurodecode.errors import ShapeMismatchError, ValidationError

    model = TransformerBrainEncoder.tiny()
    with pytest.raises(ShapeMismatchError, match="membership"):
        model.set_membership(np.ones((2, 7), dtype=bool))
    with pytest.raises(ValidationError, match="every voxel"):
        model.set_membership(np.zeros((3, 7), dtype=bool))
    with pytest.raises(ShapeMismatchError, match="dinov2-base-q-tokens-tiny"):
        model.predict(np.zeros((2, 8, 28), dtype=np.float32))


def test_save_and_load_round_trip(tmp_path):
    mem, names = roi_groups(np.array([2, 1, 0, 1, 2, 2, 1]))
    model = TransformerBrainEncoder.tiny(membership=mem, roi_names=names)
    model.set_target_stats(np.random.default_rng(0).normal(3, 2, (9, 7)))
    model.save_pretrained(tmp_path / "enc")
    back = TransformerBrainEncoder.from_pretrained(tmp_path / "enc")
    x = np.random.default_rng(1).standard_normal((3, 9, 28)).astype(np.float32)
    np.testing.assert_allclose(back.predict(x), model.predict(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(back.membership.numpy(), mem)


def test_ridge_baseline_recovers_a_linear_encoding_model():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 3, 5)).astype(np.float32)
    W = rng.standard_normal((15, 7))
    Y = X.reshape(80, -1) @ W + 0.05 * rng.standard_normal((80, 7))
    enc = RidgeBrainEncoder(RidgeEncoderConfig(n_voxels=7, feature_shape=(3, 5), alphas=(1e-3, 1e-1, 10.0, 1e3)))
    enc.fit(X[:60], Y[:60])
    pred = enc.predict(X[60:])
    r = [np.corrcoef(pred[:, v], Y[60:, v])[0, 1] for v in range(7)]
    assert min(r) > 0.95
    np.testing.assert_allclose(enc.coef.numpy(), W, atol=0.1)
    mean = RidgeBrainEncoder(RidgeEncoderConfig(n_voxels=7, feature_shape=(3, 5), pool="mean")).fit(X, Y)
    assert mean.coef.shape == (5, 7)
