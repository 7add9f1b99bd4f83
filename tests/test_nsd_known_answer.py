"""Known-answer captions and depth maps of simulated NSD: functions of the image, written, and decodable."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from neurodecode._core.errors import MissingFileError, ValidationError
from neurodecode.data import load_nsd, load_nsd_stimuli
from neurodecode.simulate import known_answer_captions, known_answer_depth, load_simulated_depth, simulate_nsd
from neurodecode.simulate._annotations import known_answer_words


def _canvas(h=32, w=32):
    return np.zeros((h, w, 3), np.uint8)


def test_words_follow_the_documented_rules():
    flat = _canvas() + 230                        # bright, fills the image, uniform, square, grey
    red = _canvas()
    red[4:24, 10:16] = (220, 30, 30)               # 20 x 6 red bar: small, tall, smooth, dark overall
    stripes = _canvas()
    stripes[2:30, 4:30] = 60
    stripes[2:30:2, 4:30] = 250                     # patterned, wide-ish box (28 x 26 -> square), large
    blue = _canvas()
    blue[12:20, 2:30] = (20, 40, 200)               # 8 x 28: wide, blue
    words = known_answer_words(np.stack([flat, red, stripes, blue]))
    assert words[0] == {"brightness": "bright", "size": "large", "texture": "smooth", "shape": "square",
                        "colour": "grey"}
    assert words[1] == {"brightness": "dark", "size": "small", "texture": "smooth", "shape": "tall",
                        "colour": "red"}
    assert words[2]["texture"] == "patterned" and words[2]["size"] == "large" and words[2]["shape"] == "square"
    assert words[3]["shape"] == "wide" and words[3]["colour"] == "blue"
    caps = known_answer_captions(np.stack([red]))
    assert caps == [["a dark small smooth object", "a tall red object, dark and smooth", "a small tall red thing"]]
    # floats in [0, 1] give the same words as uint8
    assert known_answer_words(np.stack([red]).astype(np.float32) / 255) == [words[1]]


def test_depth_is_the_ramp_plus_inverted_blurred_luminance():
    black, white = _canvas(16, 12), _canvas(16, 12) + 255
    depth = known_answer_depth(np.stack([black, white]))
    ramp = np.linspace(1, 0, 16)[:, None] * np.ones((1, 12))
    np.testing.assert_allclose(depth[0], 0.5 * ramp + 0.5, atol=1e-6)   # dark = far
    np.testing.assert_allclose(depth[1], 0.5 * ramp, atol=1e-6)         # bright = near
    blob = _canvas(32, 32)
    blob[12:20, 12:20] = 255
    d = known_answer_depth(blob[None])[0]
    assert d[16, 16] < d[16, 2] and d[16, 16] < d[16, 30]  # the bright square is nearer than its row's background
    with pytest.raises(Exception, match="images"):
        known_answer_depth(np.zeros((2, 8, 8)))


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate_nsd(tmp_path_factory.mktemp("ka") / "out", subjects=(1,), seed=1, n_stimuli=560, n_voxels=200,
                        n_shared=60, volume_shape=(16, 18, 15), formats=("nifti",), annotations="image")


def test_simulator_writes_the_known_answers(sim):
    ids = np.arange(560)
    images = load_nsd_stimuli(sim.root, ids)
    anns = json.loads((sim.root / "nsddata_stimuli/stimuli/nsd/annotations/captions_train2017.json").read_text())
    by_image: dict[int, list[str]] = {}
    for a in anns["annotations"]:
        by_image.setdefault(a["image_id"] - 100000, []).append(a["caption"])
    expected = known_answer_captions(images)
    assert [by_image[i] for i in ids] == expected
    np.testing.assert_allclose(load_simulated_depth(sim.out, ids), known_answer_depth(images), atol=1e-3)
    assert json.loads((sim.out / "truth" / "model.json").read_text())["annotations"] == "image"


def test_decoded_depth_and_caption_words_beat_shuffled_controls(sim):
    trials = load_nsd(sim.root, 1, average_train_repeats=True)
    train, test = trials.split == "train", trials.split == "test"
    depth = load_simulated_depth(sim.root, trials.stimulus_ids)[:, ::4, ::4].reshape(len(trials), -1)
    mean = depth[train].mean(0)  # the ramp every map shares: score what differs between images
    pred = Ridge(alpha=100).fit(trials.X[train], depth[train] - mean).predict(trials.X[test])
    truth = depth[test] - mean

    def corr(a, b):
        a = a - a.mean(1, keepdims=True)
        b = b - b.mean(1, keepdims=True)
        return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))

    matched = corr(pred, truth).mean()
    shuffled = np.mean([corr(pred, np.roll(truth, k, 0)).mean() for k in range(1, 6)])
    assert matched > shuffled + 0.2
    words = known_answer_words(load_nsd_stimuli(sim.root, trials.stimulus_ids))
    for key in ("brightness", "size", "shape"):
        labels = np.array([w[key] for w in words])
        cats = np.array(sorted(set(labels)))
        onehot = (labels[:, None] == cats[None]).astype(float)
        guess = cats[Ridge(alpha=100).fit(trials.X[train], onehot[train]).predict(trials.X[test]).argmax(1)]
        acc = (guess == labels[test]).mean()
        control = np.mean([(guess == np.roll(labels[test], k)).mean() for k in range(1, 6)])
        assert acc > control + 0.2 and acc > 1 / len(cats) + 0.15, (key, acc, control)


def test_bad_annotation_options(tmp_path):
    with pytest.raises(ValidationError, match="annotations"):
        simulate_nsd(tmp_path, annotations="coco")
    with pytest.raises(ValidationError, match="volume_shapes"):
        simulate_nsd(tmp_path, volume_shapes="mni")
    with pytest.raises(MissingFileError, match="--annotations image"):
        load_simulated_depth(tmp_path, [0])


def test_cli_passes_annotations_to_the_nsd_simulator(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from neurodecode import simulate
    from neurodecode.cli import app

    seen = {}

    def record(out, **kw):
        seen.update(kw)
        raise SystemExit(0)

    monkeypatch.setattr(simulate, "simulate_nsd", record)
    CliRunner().invoke(app, ["simulate", "nsd", str(tmp_path / "o"), "--annotations", "image"])
    assert seen["annotations"] == "image"
    res = CliRunner().invoke(app, ["simulate", "zuco", str(tmp_path / "z"), "--annotations", "image"])
    assert res.exit_code == 2 and "nsd only" in res.output
