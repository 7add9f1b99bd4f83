"""NVL concept localisation: GradCAM through the extractor and the patch-size ensemble find a known voxel cluster.

Simulated volumes (12 x 10 x 14, noise) in which concept A adds signal to one 3 x 3 x 3 voxel cluster and concept
B to another; the CLIP target is the sum of the concepts' embeddings present. One tiny extractor per patch size
(4, 3, 2) learns the targets; the map of concept A must put its top voxels on A's cluster, not on B's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodecode.data import patches_to_volume
from neurodecode.data._nsd_volumes import NSDPatchGrid, volume_patches
from neurodecode.models.nvl import NVL, NVLConfig, ensemble_maps

SHAPE = (12, 10, 14)
CLUSTER_A = (slice(5, 8), slice(2, 5), slice(7, 10))  # not aligned with any patch grid below
CLUSTER_B = (slice(1, 4), slice(6, 9), slice(1, 4))
SIZES = (4, 3, 2)


def _grid(p: int) -> NSDPatchGrid:
    g = tuple(-(-n // p) for n in SHAPE)
    keep = np.arange(int(np.prod(g)))
    coords = np.stack(np.unravel_index(keep, g), axis=1) * p
    return NSDPatchGrid(SHAPE, p, g, keep, coords, np.ones(SHAPE, bool), ["sim"], 0.5, False)


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    n, dim = 320, 16
    has = rng.random((n, 2)) < 0.5
    vols = rng.standard_normal((n, *SHAPE)).astype(np.float32) * 0.5
    vols[(has[:, 0],) + CLUSTER_A] += 1.5
    vols[(has[:, 1],) + CLUSTER_B] += 1.5
    emb = np.linalg.qr(rng.standard_normal((dim, 2)))[0].T.astype(np.float32)  # two orthonormal concept embeddings
    clip = has.astype(np.float32) @ emb + 0.05 * rng.standard_normal((n, dim)).astype(np.float32)
    models = {}
    for p in SIZES:
        torch.manual_seed(p)
        X = volume_patches(np.moveaxis(vols, 0, -1), p)
        model = NVL(NVLConfig.tiny(patch_dim=p ** 3, n_patches=X.shape[1], vae_shape=None, mixup=False))
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
        xt, yt = torch.from_numpy(X), torch.from_numpy(clip)
        for step in range(150):
            idx = torch.from_numpy(np.random.default_rng(step).choice(n, 64, replace=False))
            loss = model.training_step({"x": xt[idx], "clip": yt[idx]}, step)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        models[p] = (model, X)
    return vols, has, emb, models


def _top_overlap(volume: np.ndarray, cluster: tuple[slice, ...], k: int = 27) -> float:
    """Fraction of the cluster's voxels among the map's k top voxels (ties at the threshold count as top)."""
    thr = np.sort(volume.ravel())[-k]
    top = volume >= thr
    mask = np.zeros(SHAPE, bool)
    mask[cluster] = True
    return float((top & mask).sum() / max(top.sum(), k))


@pytest.mark.parametrize("method", ["gradcam", "gradient_x_input"])
def test_each_extractor_and_the_ensemble_point_at_the_concept_cluster(world, method):
    vols, has, emb, models = world
    rows = np.flatnonzero(has[:, 0] & has[:, 1])[:8]  # both concepts in view: the map must pick A's
    per_size = []
    for p, (model, X) in models.items():
        maps = model.concept_map(X[rows], emb[0], method=method)
        assert maps.shape == X[rows].shape and (maps >= 0).all()
        per_size.append(patches_to_volume(maps.mean(0), _grid(p)))
    ensemble = ensemble_maps(per_size)
    chance = 27 / np.prod(SHAPE)  # a random set of 27 voxels holds 27 * 27 / 1680 cluster voxels
    got_a, got_b = _top_overlap(ensemble, CLUSTER_A), _top_overlap(ensemble, CLUSTER_B)
    print(method, [round(_top_overlap(v, CLUSTER_A), 2) for v in per_size], got_a, got_b, chance)
    assert got_a > 15 * chance and got_a > 3 * got_b


def test_ensemble_normalises_before_averaging():
    a = np.array([[0.0, 2.0], [4.0, 4.0]])
    b = np.array([[10.0, 10.0], [10.0, 30.0]])
    np.testing.assert_allclose(ensemble_maps([a, b]), [[0.0, 0.25], [0.5, 1.0]])
    np.testing.assert_allclose(ensemble_maps([np.ones((2, 2)), a]), a / 8)
    with pytest.raises(Exception, match="shape"):
        ensemble_maps([a, np.zeros(3)])
