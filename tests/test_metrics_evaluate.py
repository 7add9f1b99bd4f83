"""Feature networks (two tiers), the whole image protocol, and the HTML report."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pytest

from neurodecode._core.errors import DataIntegrityError, OfflineError
from neurodecode.metrics import METRICS_VERSION, evaluate_reconstructions, render_report
from neurodecode.metrics._features import extract_features, load_feature_network, weights_file


def _smooth_images(rng, n=7, size=24):
    """Distinct, smooth 'natural-ish' images (random low-frequency blobs)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3))
    for i in range(n):
        f = rng.uniform(1, 4, size=(3, 2))
        ph = rng.uniform(0, 2 * np.pi, size=(3, 2))
        for c in range(3):
            out[i, :, :, c] = 0.5 + 0.25 * np.sin(2 * np.pi * f[c, 0] * xx + ph[c, 0]) + 0.25 * np.cos(
                2 * np.pi * f[c, 1] * yy + ph[c, 1])
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def test_real_weights_missing_offline_teaches(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torchhome"))
    with pytest.raises(OfflineError) as exc:
        load_feature_network("alexnet", "real")
    msg = str(exc.value)
    assert "alexnet-owt-7be5be79.pth" in msg and str(tmp_path / "torchhome" / "hub" / "checkpoints") in msg
    assert "https://download.pytorch.org/models/" in msg and "weights='random'" in msg
    with pytest.raises(OfflineError, match="swav_800ep_pretrain.pth.tar"):
        load_feature_network("swav", "real")
    # the protocol never falls back to random weights silently
    with pytest.raises(OfflineError):
        evaluate_reconstructions(np.zeros((3, 8, 8, 3)), np.zeros((3, 8, 8, 3)), metrics=["alex2"])


def test_real_tier_loads_a_local_weights_file(tmp_path, rng):
    import torch

    rand = load_feature_network("alexnet", "random")
    path = weights_file("alexnet", tmp_path)
    torch.save({k: v * 2 for k, v in rand.model.state_dict().items()}, path)
    real = load_feature_network("alexnet", "real", weights_dir=tmp_path)
    assert real.tier == "real" and real.source == str(path)
    w_real = real.model.features[0].weight
    torch.testing.assert_close(w_real, 2 * rand.model.features[0].weight)
    imgs = _smooth_images(rng, n=2, size=16)
    f = extract_features(imgs, real, ["features.4", "features.11"], size=64)
    # 64 px: conv1 (k11, s4, p2) -> 15, pool -> 7 (features.4: 192 x 7 x 7); pool -> 3 (features.11: 256 x 3 x 3)
    assert f["features.4"].shape == (2, 192 * 7 * 7) and f["features.11"].shape == (2, 256 * 3 * 3)
    # SwAV checkpoints carry a "module." prefix and extra heads: both handled
    swav = load_feature_network("swav", "random")
    state = {f"module.{k}": v for k, v in swav.model.state_dict().items() if not k.startswith("fc.")}
    state["module.prototypes.weight"] = torch.zeros(3, 2)
    torch.save(state, weights_file("swav", tmp_path))
    assert load_feature_network("swav", "real", weights_dir=tmp_path).tier == "real"
    # a file of the wrong network is refused
    torch.save({"features.0.weight": torch.zeros(1)}, weights_file("efficientnet", tmp_path))
    with pytest.raises(DataIntegrityError, match="missing"):
        load_feature_network("efficientnet", "real", weights_dir=tmp_path)


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.tables, self.pre = [], 0, 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs))
        self.tables += tag == "table"
        self.pre += tag == "pre"


def test_evaluate_protocol_random_weights_and_report(rng):
    truth = _smooth_images(rng)
    noisy = np.clip(truth.astype(float) + rng.normal(0, 25, truth.shape), 0, 255).astype(np.uint8)
    res = evaluate_reconstructions(noisy, truth, metrics="pixcorr,ssim,alex2,alex5,clip", weights="random",
                                   n_boot=200)
    assert res["n_items"] == 7 and res["metrics_version"] == METRICS_VERSION
    assert res["protocol"]["sizes"] == {"pixcorr": 425, "ssim": 425, "alex2": 256, "alex5": 256, "clip": 224}
    assert res["protocol"]["prep_size"] == 256
    for m in ("pixcorr", "ssim", "alex2", "alex5", "clip"):
        e = res[m]
        assert e["ci"][0] <= e["value"] <= e["ci"][1]
        assert e["per_item"].shape == (7,)
        assert e["value"] > e["shuffled"], m  # noisy copies beat the shuffled pairing
    assert res["alex2"]["chance"] == 0.5 and res["pixcorr"]["chance"] == 0.0 and res["ssim"]["chance"] is None
    assert res["weights"]["alex2"]["tier"] == "random" and res["weights"]["pixcorr"]["tier"] == "none"
    assert "NOT the published weights" in res["weights"]["clip"]["source"]

    html = render_report(res, noisy, truth, item_ids=[f"stim-{i}" for i in range(7)], provenance={"seed": 0})
    p = _Collector()
    p.feed(html)
    alts = [i.get("alt") for i in p.imgs]
    assert alts == ["grid", "best", "worst", "published comparison"]
    assert all(i["src"].startswith("data:image/png;base64,") and len(i["src"]) > 1000 for i in p.imgs)
    assert p.tables == 1 and p.pre == 1  # scores; provenance
    assert "Random feature-network weights" in html
    assert "MindEye2" in html and "Brain-Diffuser" in html


def test_identical_images_identify_perfectly_with_small_sizes(rng):
    truth = _smooth_images(rng, n=7, size=20)
    res = evaluate_reconstructions(truth, truth, metrics=["incep", "effnet", "swav", "alex2", "pixcorr"],
                                   weights="random", sizes={"incep": 80, "effnet": 64, "swav": 64, "alex2": 64,
                                                            "pixcorr": 20},
                                   prep_size=None, n_boot=100, blurry=np.zeros_like(truth))
    assert res["incep"]["value"] == 1.0 and res["alex2"]["value"] == 1.0
    assert res["effnet"]["value"] == pytest.approx(0.0, abs=1e-6) and res["swav"]["value"] == pytest.approx(0, abs=1e-6)
    assert res["protocol"]["sizes_follow_protocol"] is False
    assert abs(res["alex2"]["shuffled"] - 0.5) < 0.35  # the shuffled pairing sits near chance, not at 1
    # MindEye2 blending, reported separately: 0.75 x truth + 0.25 x black is an affine copy -> PixCorr 1
    assert res["blended"]["pixcorr"]["value"] == pytest.approx(1.0)
    assert res["protocol"]["blend"] == [0.75, 0.25]
    p = _Collector()
    p.feed(render_report(res, truth, truth))
    assert p.tables == 2  # scores and blended scores
