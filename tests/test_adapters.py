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


def test_real_size_mindbridge_adapters_parameter_counts():
    with torch.device("meta"):
        emb = MindBridgeEmbedder("nsd/subj01", 15724)
        bld = MindBridgeBuilder("nsd/subj01", 15724)
    n_emb = sum(p.numel() for p in emb.parameters())
    # 8192*128+128 + 128*8192+8192 + 8192*2048+2048 + 2*2048
    assert n_emb == 18_888_832
    assert sum(p.numel() for p in bld.parameters()) == 2048 * 8192 + 8192 + 8192 * 128 + 128 + 128 * 8192 + 8192
