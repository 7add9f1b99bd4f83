"""Issue 7: a new subject reset-tuned from a small fraction of its trials beats the same network from scratch.

Known-answer simulation: a 16-d latent ``z`` per image drives every subject's voxels linearly (each
subject with its own random mixing and voxel count, plus noise) and the image tokens through a shared
nonlinearity, ``sin(z W1) W2``; training targets carry heavy noise (noise std = signal std), the
held-out test targets are clean. MindBridge learns the shared translator and head from two source
subjects (600 trials each). The new subject gives 40 trials (10 % of its 400 training trials).

Plain reset-tuning, as in the paper: a fresh embedder and builder for the new subject, everything else
frozen, a source-subject batch mixed into every step (the cycle loss), AdamW with strong weight decay
(1.0) on the few trainable weights. Scratch is the same architecture trained on the same 40 trials
and gets the best of four learning-rate/step settings scored on the test set (an oracle advantage).
Scoring is top-1 identification among 100 held-out images of the new subject (chance 0.01).

Seeds 0-4 checked locally with the reference losses (SoftCLIP at 0.005 and MSE on normalised vectors)
and the reference's weight-decay groups: reset-tuned 0.70 / 0.63 / 0.58 / 0.61 / 0.50 vs scratch (best of the
4 settings here) 0.41 / 0.23 / 0.43 / 0.33 / 0.28 (with weight decay 0.01 instead, scratch gets 0.33-0.38 on
seeds 0-1); sources 0.96-0.99. (With our earlier losses, SoftCLIP at 0.125 on raw tokens: 0.85-0.87 vs 0.72-0.78.)

Where it does not hold (measured, documented in docs/decoders/mindbridge.md): with a strongly
nonlinear shared map (a 4-d latent, ``z W1`` of std 3 instead of 1) gradient descent through the frozen translator
from a random embedder stalls (reset-tuned 0.09 vs scratch 0.11 vs sources 0.43); with shared images,
:meth:`MindBridge.align_embedder` gives the embedder a closed-form start for that case.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodecode.metrics import identification_top1
from neurodecode.models.mindbridge import MindBridge, MindBridgeConfig
from neurodecode.train import MultiSubjectBatches, TrainConfig, Trainer

Z_DIM = 16
SIZES = {"nsd/subj02": 50, "nsd/subj05": 64, "nsd/subj01": 47}
SOURCES = ["nsd/subj02", "nsd/subj05"]
NEW = "nsd/subj01"
N_SOURCE, N_NEW_TRAIN, N_FEW, N_TEST = 600, 400, 40, 100
TOKENS = [4, 16]
KW = dict(width=64, pooled=64, embed_dropout=0.0, block_dropout=0.0, pool="avg", text_tokens=None,
          image_tokens=TOKENS)


def _simulate(seed: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = N_SOURCE + N_TEST
    z = rng.standard_normal((n, Z_DIM))
    hidden = 12 * Z_DIM
    w1 = rng.standard_normal((Z_DIM, hidden)) / np.sqrt(Z_DIM)
    w2 = rng.standard_normal((hidden, int(np.prod(TOKENS)))) / np.sqrt(hidden)
    img = (np.sin(z @ w1) @ w2).astype(np.float32).reshape(n, *TOKENS)
    xs = {s: (z @ rng.standard_normal((Z_DIM, p)) + 0.6 * rng.standard_normal((n, p))).astype(np.float32)
          for s, p in SIZES.items()}
    noisy = (img + img.std() * rng.standard_normal(img.shape)).astype(np.float32)
    return xs, img, noisy


def _fit(model: MindBridge, batches: MultiSubjectBatches, steps: int, lr: float, seed: int,
         weight_decay: float = 1e-2) -> None:
    cfg = TrainConfig(epochs=1, max_steps=steps, lr=lr, weight_decay=weight_decay, device="cpu",
                      checkpoint_every=None, log_every=10**6, seed=seed)
    Trainer(model, cfg).fit(batches)


def _run(seed: int) -> tuple[list[float], float, float]:
    torch.set_num_threads(1)
    xs, img, noisy = _simulate(seed)
    test = slice(N_SOURCE, N_SOURCE + N_TEST)
    few = np.random.default_rng(100 + seed).choice(N_NEW_TRAIN, N_FEW, replace=False)
    data = {s: {"x": xs[s][:N_SOURCE], "image_tokens": noisy[:N_SOURCE]} for s in SOURCES}

    torch.manual_seed(seed)
    model = MindBridge(MindBridgeConfig.tiny({s: SIZES[s] for s in SOURCES}, **KW))
    _fit(model, MultiSubjectBatches(data, 32, subjects_per_step=2, steps_per_epoch=1200), 1200, 3e-3, seed)
    source_top1 = [identification_top1(model.predict_latents(xs[s][test], s)["clip_image_tokens"], img[test])
                   for s in SOURCES]

    new_data = {"x": xs[NEW][few], "image_tokens": noisy[few]}
    torch.manual_seed(seed)
    key = NEW.replace("/", "__")
    trainable = model.reset_tune(NEW, SIZES[NEW])
    assert trainable and all(f".{key}." in name for name in trainable)  # only the new embedder and builder
    _fit(model, MultiSubjectBatches({NEW: new_data, SOURCES[0]: data[SOURCES[0]]}, 10, subjects_per_step=2,
                                    anchor=NEW, steps_per_epoch=300), 300, 0.1, seed, weight_decay=1.0)
    tuned = identification_top1(model.predict_latents(xs[NEW][test], NEW)["clip_image_tokens"], img[test])

    scratch = 0.0
    for lr, steps in ((0.01, 300), (0.03, 300), (0.01, 600), (0.03, 600)):
        torch.manual_seed(seed)
        fresh = MindBridge(MindBridgeConfig.tiny({NEW: SIZES[NEW]}, **KW))
        _fit(fresh, MultiSubjectBatches({NEW: new_data}, 10, steps_per_epoch=steps), steps, lr, seed,
             weight_decay=1.0)
        scratch = max(scratch, identification_top1(fresh.predict_latents(xs[NEW][test], NEW)["clip_image_tokens"],
                                                    img[test]))
    return source_top1, tuned, scratch


@pytest.mark.parametrize("seed", [0, 1])
def test_reset_tuned_new_subject_beats_scratch_on_small_fraction(seed: int) -> None:
    source_top1, tuned, scratch = _run(seed)
    msg = f"seed {seed}: sources {source_top1}, reset-tuned {tuned:.2f}, scratch (best of 4) {scratch:.2f}"
    # the shared network learned the task from the source subjects (chance 0.01)
    assert min(source_top1) > 0.9, msg
    # scratch learns from 40 trials (20x chance or more), so the comparison is against a real baseline
    assert scratch > 0.2, msg
    # reset-tuning from 10 % of the trials beats the same network trained from scratch on them
    assert tuned > scratch + 0.04, msg


def test_align_embedder_fits_closed_form_and_checks_rows() -> None:
    from neurodecode._core.errors import ShapeMismatchError

    torch.manual_seed(0)
    model = MindBridge(MindBridgeConfig.tiny({"nsd/subj02": 11}, embed_dropout=0.0, pool="avg"))
    model.reset_tune("nsd/subj01", 23)
    rng = np.random.default_rng(0)
    x_src = rng.standard_normal((30, 11)).astype(np.float32)
    x_new = rng.standard_normal((30, 23)).astype(np.float32)
    with pytest.raises(ShapeMismatchError, match="rows"):
        model.align_embedder("nsd/subj01", x_new[:7], x_src, "nsd/subj02")
    model.align_embedder("nsd/subj01", x_new, x_src, "nsd/subj02", alpha=0.0)
    src, new = model.embedders["nsd/subj02"], model.embedders["nsd/subj01"]
    with torch.no_grad():
        target = src.proj(src.adapter(src.pool(torch.from_numpy(x_src)))).double()
        inputs = new.adapter(new.pool(torch.from_numpy(x_new))).double()
        fitted = new.proj(new.adapter(new.pool(torch.from_numpy(x_new)))).double()
    design = torch.cat([inputs, torch.ones(30, 1, dtype=torch.float64)], 1)
    best = design @ torch.linalg.lstsq(design, target).solution
    # alpha=0 gives the least-squares map (residual orthogonal to the design), not the random init
    assert torch.allclose(fitted, best, atol=1e-3)
    assert float(((design.T @ (target - fitted)).abs()).max()) < 1e-2
