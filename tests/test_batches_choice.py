"""ChoiceRows: one caption of each sample's image per step (MindBridge's trainer.py: prompts[train_i % 3])."""

import numpy as np
import pytest
import torch

from neurodecode.errors import ValidationError
from neurodecode.train import ArrayBatches, ChoiceRows, MultiSubjectBatches

# 3 images with 2, 5 and 3 captions; each caption row holds its (image, caption) code
COUNTS = np.array([2, 5, 3])
STARTS = np.array([0, 2, 7])
TABLE = np.array([[i, k] for i, c in enumerate(COUNTS) for k in range(c)], dtype=np.float32)


def _source(mode, shuffle=False):
    image_of_sample = np.array([0, 1, 2, 1, 0, 2, 1])  # 7 trials (repeats of the 3 images)
    rows = ChoiceRows(TABLE, STARTS[image_of_sample], COUNTS[image_of_sample], mode=mode, cycle=3)
    return ArrayBatches({"x": np.arange(7, dtype=np.float32), "text": rows}, batch_size=7, shuffle=shuffle), \
        image_of_sample


def test_cycle_takes_caption_step_mod_3_of_every_image_as_the_reference():
    src, image = _source("cycle")
    for epoch in range(4):  # one step per epoch: global step = epoch
        batch = next(src.epoch(epoch))
        got = batch["text"].numpy()
        assert (got[:, 0] == image).all()  # always a caption of the sample's own image
        expected = [(epoch % 3) % COUNTS[i] for i in image]  # the reference's prompts[train_i % 3]
        assert got[:, 1].tolist() == expected


def test_random_draws_cover_the_captions_and_repeat_under_the_same_seed():
    src, image = _source("random", shuffle=True)
    seen = {i: set() for i in range(3)}
    for epoch in range(40):
        batch = next(src.epoch(epoch, seed=5))
        order = batch["x"].long().numpy()
        got = batch["text"].numpy()
        assert (got[:, 0] == image[order]).all()
        for i, k in got:
            seen[int(i)].add(int(k))
    assert all(seen[i] == set(range(COUNTS[i])) for i in range(3))  # uniform over each image's captions
    a = next(src.epoch(3, seed=5))["text"]
    b = next(src.epoch(3, seed=5))["text"]
    c = next(src.epoch(3, seed=6))["text"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    # resuming at a step draws what the uninterrupted run drew there
    two = ArrayBatches({"x": np.arange(7, dtype=np.float32),
                        "text": ChoiceRows(TABLE, STARTS[image], COUNTS[image], mode="random")}, batch_size=3)
    full = list(two.epoch(2, seed=1))
    resumed = list(two.epoch(2, seed=1, start=1))
    assert torch.equal(full[1]["text"], resumed[0]["text"])


def test_multi_subject_batches_choose_per_step():
    image = np.array([0, 1, 2, 1])
    data = {s: {"x": np.zeros((4, 2), np.float32),
                "text": ChoiceRows(TABLE, STARTS[image], COUNTS[image], mode="cycle")} for s in ("a", "b")}
    src = MultiSubjectBatches(data, batch_size=4, subjects_per_step=2)
    for step, batch in enumerate(src.epoch(0)):
        for part in batch["parts"]:
            assert set(part["text"][:, 1].long().tolist()) <= {step % 3, (step % 3) % 2}


def test_blocks_are_checked():
    with pytest.raises(ValidationError, match="starts/counts"):
        ChoiceRows(TABLE, [0, 9], [2, 3])  # 9 + 3 > 10 rows
    with pytest.raises(ValidationError, match="mode"):
        ChoiceRows(TABLE, [0], [2], mode="mean")


def test_samples_per_epoch_sets_the_steps_of_the_nsd_runner(tmp_path):
    """MindEye2's epoch is 30,000 samples over all subjects: steps = samples // (batch x subjects per step)."""
    import json
    from pathlib import Path

    from neurodecode.recipes import load_recipe, train_from_recipe
    from neurodecode.simulate import simulate_nsd

    sim = simulate_nsd(tmp_path / "sim", subjects=(1, 2), n_sessions=1, n_shared=40, n_voxels=60, seed=0,
                       formats=("hdf5",))
    recipe = load_recipe(Path(__file__).resolve().parents[1] / "pipelines" / "mindeye2_nsd.toml", preset="tiny",
                         overrides=["train.samples_per_epoch=48", "train.epochs=1", "train.log_every=1"])
    train_from_recipe(recipe, sim.root, tmp_path / "run", device="cpu")
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(e["step"] for e in lines if "step" in e) == 48 // (8 * 2)  # 3 steps: batch 8 x 2 subjects


def test_two_random_choice_keys_of_one_batch_draw_independently():
    # the same rows under two keys (e.g. captions and augmented image views): with one shared generator the
    # two keys would pick the same row for every sample at every step
    image_of_sample = np.arange(3).repeat(30)
    n = len(image_of_sample)

    def rows():
        return ChoiceRows(TABLE, STARTS[image_of_sample], COUNTS[image_of_sample], mode="random")

    src = ArrayBatches({"x": np.arange(n, dtype=np.float32), "text": rows(), "views": rows()}, batch_size=n)
    same = []
    for epoch in range(5):
        batch = next(src.epoch(epoch, seed=3))
        same.append((batch["text"][:, 1] == batch["views"][:, 1]).float().mean().item())
    # independent draws agree with probability mean(1 / count) = (1/2 + 1/5 + 1/3) / 3 = 0.34
    assert 0.15 < np.mean(same) < 0.55


def test_a_sample_draws_the_same_row_whichever_process_slice_holds_it():
    # a distributed run gives each process a slice of every batch: the row chosen for a sample must not depend
    # on the slice (1 process and 2 processes on the same global batch train on the same targets)
    image_of_sample = np.arange(3).repeat(5)
    n = len(image_of_sample)
    data = {"x": np.arange(n, dtype=np.float32),
            "text": ChoiceRows(TABLE, STARTS[image_of_sample], COUNTS[image_of_sample], mode="random")}
    src = ArrayBatches(data, batch_size=n, shuffle=True)
    for epoch in range(3):
        whole = next(src.epoch(epoch, seed=2))
        parts = [next(src.epoch(epoch, seed=2, rank=r, world_size=2)) for r in (0, 1)]
        assert torch.equal(torch.cat([p["x"] for p in parts]), whole["x"])  # the slices of the same batch
        assert torch.equal(torch.cat([p["text"] for p in parts]), whole["text"])
    multi = MultiSubjectBatches({s: {k: v for k, v in data.items()} for s in ("a", "b")}, batch_size=n,
                                subjects_per_step=2)
    whole = next(multi.epoch(1, seed=4))
    parts = [next(multi.epoch(1, seed=4, rank=r, world_size=2)) for r in (0, 1)]
    for k in range(2):  # each subject's sub-batch
        assert torch.equal(torch.cat([p["parts"][k]["text"] for p in parts]), whole["parts"][k]["text"])
