"""Image protocols: Brain-Diffuser's PixCorr/SSIM, MindEye2's CLIP preprocessing, blank items, report rows."""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode.metrics import (
    evaluate_reconstructions,
    pixcorr_brain_diffuser,
    read_predicted_latents,
    render_report,
    save_predicted_latents,
    ssim_brain_diffuser,
)


def _images(rng, n=7, h=24, w=20):
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    f = rng.uniform(1, 3, size=(n, 3, 1, 1))
    ph = rng.uniform(0, 6, size=(n, 3, 1, 1))
    out = 0.5 + 0.4 * np.sin(2 * np.pi * f * (xx + 0.7 * yy) + ph)
    return (np.moveaxis(out, 1, -1) * 255).astype(np.uint8)


def test_brain_diffuser_pixcorr_independent(rng):
    from PIL import Image

    truth = _images(rng, 7, 17, 17)
    recons = _images(rng, 7, 25, 25)
    got = pixcorr_brain_diffuser(recons, truth)
    # evaluate_reconstruction.py: PIL resize (bicubic, Pillow's default) to 425 = the truth's size, /255, corrcoef
    want = []
    for r, t in zip(recons, truth):
        g = np.array(Image.fromarray(r).resize((17, 17), Image.Resampling.BICUBIC)) / 255.0
        want.append(np.corrcoef(t.reshape(1, -1) / 255.0, g.reshape(1, -1))[0, 1])
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_brain_diffuser_ssim_is_columnwise_1d(rng):
    from scipy.ndimage import gaussian_filter1d
    from skimage.color import rgb2gray
    from skimage.metrics import structural_similarity

    truth = _images(rng, 3, 30, 26)
    recons = np.clip(truth.astype(float) + rng.normal(0, 30, truth.shape), 0, 255).astype(np.uint8)
    got = ssim_brain_diffuser(recons, truth)

    def column_ssim(a, b):  # SSIM of each column (a 1-D signal down the rows), Gaussian sigma 1.5, then the mean
        c1, c2 = 0.01 ** 2, 0.03 ** 2
        g = lambda x: gaussian_filter1d(x, 1.5, axis=0, truncate=3.5, mode="reflect")  # noqa: E731
        ua, ub = g(a), g(b)
        va, vb, cov = g(a * a) - ua * ua, g(b * b) - ub * ub, g(a * b) - ua * ub
        s = ((2 * ua * ub + c1) * (2 * cov + c2)) / ((ua ** 2 + ub ** 2 + c1) * (va + vb + c2))
        pad = 5  # (win_size 11 - 1) / 2
        return s[pad:-pad].mean(axis=0).mean()

    for i in range(3):
        a, b = rgb2gray(recons[i] / 255.0), rgb2gray(truth[i] / 255.0)
        assert got[i] == pytest.approx(column_ssim(a, b), rel=1e-9)
        assert got[i] != pytest.approx(structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                                             use_sample_covariance=False, data_range=1.0), rel=1e-3)


def test_clip_two_way_uses_mindeye2_preprocessing(rng):
    import torch
    import torch.nn.functional as F

    from neurodecode.latents import get_space
    from neurodecode.metrics._features import clip_image_features

    imgs = _images(rng, 3, 40, 40)
    got, info = clip_image_features(imgs, "random", prep_size=None)
    space = get_space("clip-vit-l-14-tiny")
    size = space.preprocessing["size"]
    # final_evaluations: float tensor, Resize(224, bilinear) without antialias, CLIP mean/std, no crop
    x = torch.from_numpy(imgs.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.inference_mode():
        want = space.model.encode_image((x - mean) / std).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert info["preprocessing"]["crop"] is None and info["preprocessing"]["antialias"] is False


def test_blank_reconstruction_is_reported_and_scored_not_dropped(rng):
    truth = _images(rng, 7, 20, 20)
    recons = np.clip(truth.astype(float) + rng.normal(0, 20, truth.shape), 0, 255).astype(np.uint8)
    recons[2] = 0  # a safety filter's black image
    ids = [f"stim-{i}" for i in range(7)]
    res = evaluate_reconstructions(recons, truth, metrics="pixcorr,ssim", weights="random", item_ids=ids,
                                   sizes={"pixcorr": 20, "ssim": 20}, prep_size=None, n_boot=50)
    assert res["constant_recons"] == {"count": 1, "ids": ["stim-2"]}
    pc = res["pixcorr"]
    assert np.isnan(pc["value"]) and pc["nan_items"] == ["stim-2"]  # as MindEye2's np.corrcoef mean: NaN
    assert pc["value_finite_items"] == pytest.approx(np.delete(pc["per_item"], 2).mean())
    assert res["ssim"]["n_valid"] == 7 and np.isfinite(res["ssim"]["per_item"][2])  # SSIM scores it, low
    assert res["ssim"]["per_item"][2] < np.delete(res["ssim"]["per_item"], 2).min()
    html = render_report(res, recons, truth, item_ids=ids)
    assert "1 blank (constant) reconstruction" in html and "stim-2" in html


def test_brain_diffuser_protocol_end_to_end_and_report_rows(rng):
    truth = _images(rng, 7, 20, 20)
    recons = np.clip(_images(rng, 7, 28, 28).astype(float) * 0.3 + np.stack(
        [np.asarray(__import__("PIL.Image", fromlist=["Image"]).fromarray(t).resize((28, 28))) for t in truth]) * 0.7,
        0, 255).astype(np.uint8)
    res = evaluate_reconstructions(recons, truth, metrics="pixcorr,ssim,alex2,effnet", weights="random",
                                   protocol="brain-diffuser", n_boot=50)
    assert res["protocol"]["name"] == "brain-diffuser" and res["protocol"]["prep_size"] is None
    assert res["protocol"]["sizes"] == {"pixcorr": "truth", "ssim": "truth", "alex2": 224, "effnet": 224}
    assert res["pixcorr"]["value"] == pytest.approx(pixcorr_brain_diffuser(recons, truth).mean())
    assert res["ssim"]["value"] == pytest.approx(ssim_brain_diffuser(recons, truth).mean())
    assert res["weights"]["effnet"]["network"] == "efficientnet_v1"  # Brain-Diffuser's weights=True: V1
    html = render_report(res)
    assert "Brain-Diffuser (own paper)" in html and "MindEye2 (40 sessions)" not in html
    me2 = evaluate_reconstructions(recons, truth, metrics="pixcorr", weights="random", n_boot=50,
                                   sizes={"pixcorr": 20}, prep_size=None)
    html2 = render_report(me2)
    assert "recomputation" in html2 and "Brain-Diffuser (own paper)" not in html2 and "Scotti et al." in html2


def test_predicted_latents_roundtrip(tmp_path, rng):
    pred = rng.normal(size=(7, 8, 9)).astype(np.float32)
    tgt = rng.normal(size=(7, 8, 9))
    path = save_predicted_latents(tmp_path, "nsd/subj01", [3, 0, 7, 11, 5, 9, 2], pred, tgt, space="clip-tokens")
    assert path == tmp_path / "latents" / "sub-01_desc-cliptokens_latents.safetensors"
    (entry,) = read_predicted_latents(tmp_path)
    assert entry["subject"] == "01" and entry["ids"] == ["3", "0", "7", "11", "5", "9", "2"]
    np.testing.assert_array_equal(entry["predicted"], pred)
    np.testing.assert_allclose(entry["target"], tgt, rtol=1e-6)
    assert read_predicted_latents(tmp_path / "nothing") == []
