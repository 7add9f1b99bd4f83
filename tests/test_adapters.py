"""Subject adapters: keyed by subject id, sized per subject, zero-initialised bottlenecks, real-size counts."""

from __future__ import annotations

import pytest
import torch

from neurodecode._core.errors import MetadataMismatchError, ShapeMismatchError
from neurodecode.models.adapters import (
    AdapterBank,
    BottleneckAdapter,
    LinearAdapter,
    MindBridgeBuilder,
    MindBridgeEmbedder,
    adaptive_resize,
    subject_key,
)


def test_subject_key_is_module_safe():
    assert subject_key("nsd/subj01") == "nsd__subj01"
    assert subject_key("things-eeg2/sub-01.x") == "things-eeg2__sub-01_x"


def test_bank_is_keyed_by_subject_not_position():
    a, b = LinearAdapter("nsd/subj02", 9, 4), LinearAdapter("nsd/subj01", 7, 4)
    bank = AdapterBank([a, b])
    assert bank["nsd/subj01"] is b and bank["nsd/subj02"] is a
    assert bank.subjects == ["nsd/subj02", "nsd/subj01"]
    assert "nsd__subj01.linear.weight" in {k.removeprefix("adapters.") for k in bank.state_dict()}
    with pytest.raises(MetadataMismatchError, match="nsd/subj03"):
        bank["nsd/subj03"]
    with pytest.raises(MetadataMismatchError, match="unique"):
        bank.add(LinearAdapter("nsd/subj01", 7, 4))


def test_adapters_refuse_other_sizes_naming_subject_and_sizes():
    emb = MindBridgeEmbedder("nsd/subj07", 9, pooled=8, bottleneck=2, width=5)
    with pytest.raises(ShapeMismatchError, match=r"nsd/subj07.*\(n_trials, 9\).*\(3, 8\)"):
        emb(torch.zeros(3, 8))
    assert emb(torch.zeros(3, 9)).shape == (3, 5)
    with pytest.raises(ShapeMismatchError, match="nsd/subj01"):
        LinearAdapter("nsd/subj01", 7, 4)(torch.zeros(2, 9))


def test_bottleneck_starts_as_identity_and_pooling_known_answers():
    ad = BottleneckAdapter(6, 2)
    x = torch.randn(3, 6)
    assert torch.equal(ad(x), x)
    x = torch.tensor([[1.0, 5.0, 2.0, 0.0, 3.0, 4.0]])
    assert adaptive_resize(x, 3, "max").tolist() == [[5.0, 2.0, 4.0]]
    torch.testing.assert_close(adaptive_resize(x, 2, "avg"), torch.tensor([[8 / 3, 7 / 3]]))
    assert adaptive_resize(torch.tensor([[0.0, 2.0]]), 3, "linear").tolist() == [[0.0, 1.0, 2.0]]
    # MindBridge's "resize" pooling: F.interpolate(..., align_corners=False); source position (i + 0.5) * 4/3 - 0.5
    torch.testing.assert_close(adaptive_resize(torch.tensor([[0.0, 3.0, 6.0, 9.0]]), 3, "linear"),
                               torch.tensor([[0.5, 4.5, 8.5]]))


def test_bottleneck_is_a_relu_residual_adapter_with_zero_bias_start():
    torch.manual_seed(0)
    ad = BottleneckAdapter(7, 3)
    assert torch.count_nonzero(ad.down.bias) == 0 and torch.count_nonzero(ad.down.weight) > 0
    with torch.no_grad():
        ad.up.weight.normal_()
        ad.up.bias.normal_()
        ad.down.bias.normal_()
    x = torch.randn(5, 7)
    # the reference Adapter_Layer: x + up_proj(ReLU(down_proj(x))) (scale 1, no dropout, no layer norm)
    h = torch.clamp(x @ ad.down.weight.T + ad.down.bias, min=0)
    torch.testing.assert_close(ad(x), x + h @ ad.up.weight.T + ad.up.bias)


def test_builder_is_linear_layernorm_gelu_then_adapter():
    torch.manual_seed(1)
    bld = MindBridgeBuilder("nsd/subj01", 9, pooled=8, bottleneck=3, width=5)
    with torch.no_grad():
        for p in bld.parameters():
            p.add_(0.3 * torch.randn(p.shape))
    e = torch.randn(4, 5)
    y = e @ bld.proj.weight.T + bld.proj.bias
    y = (y - y.mean(-1, keepdim=True)) / torch.sqrt(y.var(-1, unbiased=False, keepdim=True) + 1e-5)
    y = y * bld.norm.weight + bld.norm.bias
    y = 0.5 * y * (1 + torch.erf(y / 2 ** 0.5))  # exact GELU
    a = bld.adapter
    expected = y + torch.clamp(y @ a.down.weight.T + a.down.bias, min=0) @ a.up.weight.T + a.up.bias
    torch.testing.assert_close(bld(e), expected)


def test_real_size_mindbridge_adapters_parameter_counts():
    with torch.device("meta"):
        emb = MindBridgeEmbedder("nsd/subj01", 15724)
        bld = MindBridgeBuilder("nsd/subj01", 15724)
    n_emb = sum(p.numel() for p in emb.parameters())
    # 8192*128+128 + 128*8192+8192 + 8192*2048+2048 + 2*2048
    assert n_emb == 18_888_832
    # Linear 2048 -> 8192, LayerNorm(8192), GELU, adapter: the reference's 18,907,264 per subject
    n_bld = 2048 * 8192 + 8192 + 2 * 8192 + 8192 * 128 + 128 + 128 * 8192 + 8192
    assert n_bld == 18_907_264
    assert sum(p.numel() for p in bld.parameters()) == n_bld
