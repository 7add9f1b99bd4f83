"""Live windows are the offline epochs, and the stream decoder's bookkeeping (in memory, no LSL).

The window of an event cut from a stretch of the recording (resampling and filter margins) is
compared with what the offline loader builds from the whole run (``mne.io.Raw.resample`` +
``mne.Epochs``), and with MNE's resampling of a whole synthetic signal at a ratio whose numerator
is not 1. The stream decoder runs on an in-memory source with a linear "model" whose answer the
test computes itself from the same samples.
"""

from __future__ import annotations

import csv
import json

import mne
import numpy as np
import pytest

from neurodecode._core.errors import MetadataMismatchError, ValidationError
from neurodecode.estimators._stream_windows import WindowSpec, channel_picks, extract_window, plan_windows
from neurodecode.estimators.stream import ArraySource, StreamDecoder


@pytest.fixture(scope="module")
def meg_run(tmp_path_factory):
    from neurodecode.simulate import simulate_things_meg

    out = tmp_path_factory.mktemp("megsim")
    simulate_things_meg(out, subjects=(1,), n_sessions=1, n_train_concepts=4, n_test=3, n_test_classes=1,
                        image_size=16)
    root = out / "things-meg"
    base = root / "sub-BIGMEG1" / "ses-01" / "meg" / "sub-BIGMEG1_ses-01_task-main_run-01"
    with open(f"{base}_events.tsv", newline="") as fh:
        samples = [int(r["sample"]) for r in csv.DictReader(fh, delimiter="\t") if r["trial_type"] != "catch"]
    return root, f"{base}_meg.fif", samples


@pytest.mark.parametrize("l_freq, h_freq, tmin, baseline", [(None, None, 0.0, None), (1.0, 40.0, 0.0, None),
                                                           (None, None, -0.2, (None, 0.0))])
def test_windows_equal_the_offline_loader_epochs(meg_run, l_freq, h_freq, tmin, baseline):
    from neurodecode.data import load_things_meg

    root, fif, samples = meg_run
    trials = load_things_meg(root, 1, sfreq=200.0, tmin=tmin, tmax=0.995, l_freq=l_freq, h_freq=h_freq,
                             baseline=baseline)
    data = mne.io.read_raw_fif(fif, preload=True, verbose="error").get_data(picks=trials.ch_names)
    spec = WindowSpec(tuple(trials.ch_names), 200.0, tmin, trials.X.shape[2], l_freq=l_freq, h_freq=h_freq,
                      baseline=baseline)
    plan = plan_windows(spec, 1200.0)
    assert (plan.up, plan.down) == (1, 6)
    inside = [i for i, s in enumerate(samples) if plan.extent(s)[0] >= 0 and plan.extent(s)[1] <= data.shape[1]]
    assert len(inside) >= 4  # the filter margin (1.65 s for a 1 Hz high-pass) may leave out the first events
    # each window from only the samples it needs, placed anywhere in a buffer
    live = []
    for i in inside:
        start, stop = plan.extent(samples[i])
        live.append(extract_window(plan, data[:, start - 3:stop + 5], samples[i], offset=start - 3))
    scale = np.abs(trials.X).max()
    np.testing.assert_allclose(np.stack(live), trials.X[inside], rtol=0, atol=1e-6 * scale)
    assert plan.latency_s == pytest.approx((plan.margin_out * 6 + plan.filter_margin) / 1200.0)


def test_window_on_a_grid_with_up_not_one_equals_whole_signal_resampling(rng):
    """The event is output sample 0 of its window: on the whole signal's grid, the same samples."""
    # 1000 Hz -> 120 Hz: up 3, down 25; the whole signal's length is a multiple of 25 (MNE's ratio is then 3/25)
    x = rng.standard_normal((3, 25 * 400))
    whole = mne.filter.resample(x, up=120.0, down=1000.0, method="polyphase", verbose="error")
    spec = WindowSpec(("a", "b", "c"), 120.0, -0.1, 37)
    plan = plan_windows(spec, 1000.0)
    assert (plan.up, plan.down) == (3, 25)
    for event in (1250, 4000, 5575, 7775):  # on the 120 Hz grid of the whole signal (multiples of 25 / 3)
        k = event * 3 // 25 + int(round(-0.1 * 120.0))
        start, stop = plan.extent(event)
        win = extract_window(plan, x[:, start:stop], event, offset=start)
        np.testing.assert_allclose(win, whole[:, k:k + 37], rtol=0, atol=1e-6)


def test_missing_channels_and_irregular_streams_are_named():
    with pytest.raises(MetadataMismatchError, match=r"2 missing: MEG 0113, MEG 0112"):
        channel_picks(["MEG 0111", "MEG 0113", "MEG 0112"], ["MEG 0111", "STI 014"], "MEG")
    assert channel_picks(["b", "a"], ["a", "x", "b"], "s").tolist() == [2, 0]  # model order, extras ignored
    with pytest.raises(ValidationError, match="regularly sampled"):
        plan_windows(WindowSpec(("a",), 100.0, 0.0, 10), 0.0)


class _Linear:
    """A window decoder whose answer the test can compute: mean over time, times a fixed matrix."""

    def __init__(self, spec, W, candidates=None, ids=None):
        self.spec, self.W = spec, W
        self.candidates, self.candidate_ids = candidates, ids
        self.provenance = {"decoder": "linear test model"}
        self.calls = []

    def decode(self, X, subject=None):
        self.calls.append((X.shape, subject))
        return X.mean(axis=2) @ self.W


def _source(rng, n=900, sfreq=100.0, markers=None, chunk=17):
    names = ["c0", "c1", "c2", "stim", "c3"]
    data = rng.standard_normal((5, n))
    return data, ArraySource(data, sfreq, names, markers=markers, chunk_size=chunk)


def test_markers_each_give_one_window_and_a_json_line(rng, tmp_path):
    spec = WindowSpec(("c3", "c0", "c1", "c2"), 100.0, -0.05, 9)
    W = rng.standard_normal((4, 7))
    cands = rng.standard_normal((8, 7))
    ids = np.array([f"img{i}" for i in range(8)])
    onsets = [(1.0, "a"), (2.347, "b"), (2.5, "skip"), (4.0, "a"), (8.97, "late")]
    data, src = _source(rng, markers=onsets)
    model = _Linear(spec, W, cands, ids)
    out = tmp_path / "live.jsonl"
    res = StreamDecoder(model, src, events=["a", "b", "late"], top_k=3, out=out, subject="sub-x").run()
    assert [r["event"] for r in res] == ["a", "b", "a"]  # "skip" filtered; "late" has no full window
    picks = [4, 0, 1, 2]
    for r, (t, _) in zip(res, [onsets[0], onsets[1], onsets[3]]):
        s = int(round(t * 100.0))
        assert r["event_sample"] == s
        expect = data[picks, s - 5:s + 4].mean(axis=1) @ W  # independent of the decoder's code
        np.testing.assert_allclose(r["embedding"], expect, rtol=1e-5, atol=1e-5)
        cos = cands @ expect / np.linalg.norm(cands, axis=1) / np.linalg.norm(expect)
        assert [k["id"] for k in r["top_k"]] == [f"img{i}" for i in np.argsort(-cos)[:3]]
        np.testing.assert_allclose([k["score"] for k in r["top_k"]], np.sort(cos)[::-1][:3], rtol=1e-5)
        assert r["sample_time"] >= r["window_end_time"] >= r["event_time"]
    assert all(c[1] == "sub-x" for c in model.calls)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [ln["type"] for ln in lines] == ["start", "window", "window", "window", "end"]
    assert lines[0]["spec"]["ch_names"] == ["c3", "c0", "c1", "c2"] and lines[-1]["n_windows"] == 3
    np.testing.assert_allclose(lines[2]["embedding"], res[1]["embedding"], rtol=1e-6)
    # a second run appends, never rewrites
    StreamDecoder(model, _source(rng, markers=onsets)[1], out=out, max_windows=1).run()
    assert [json.loads(x)["type"] for x in out.read_text().splitlines()][5:] == ["start", "window", "end"]


def test_fixed_hop_windows_and_a_small_ring_buffer(rng):
    spec = WindowSpec(("c0", "c1", "c2", "c3"), 50.0, 0.0, 20)  # 100 Hz stream -> 50 Hz: resampled
    W = rng.standard_normal((4, 3))
    data, src = _source(rng, n=3000, chunk=23)
    model = _Linear(spec, W)
    live = StreamDecoder(model, src, hop=0.7, buffer_s=2.0, max_windows=30)
    res = live.run()
    plan = live.plan_
    assert (plan.up, plan.down) == (1, 2) and len(res) == 30
    first = res[0]["event_sample"]
    assert plan.extent(first)[0] == 0  # the first window starts with the first sample (with its margin)
    assert [r["event_sample"] - first for r in res] == [70 * i for i in range(len(res))]
    whole = mne.filter.resample(data[[0, 1, 2, 4]], up=50.0, down=100.0, method="polyphase", verbose="error")
    for r in res:
        k = int(np.round(r["event_sample"] / 2))
        np.testing.assert_allclose(r["embedding"], whole[:, k:k + 20].mean(axis=1) @ W, rtol=1e-4, atol=1e-5)
    assert "top_k" not in res[0]


def test_a_stream_at_another_rate_or_without_the_channels_is_refused(rng):
    spec = WindowSpec(("c0", "c1"), 50.0, 0.0, 10, raw_sfreq=1200.0)
    with pytest.raises(MetadataMismatchError, match=r"1200 Hz \(the rate of the recordings.*got 100 Hz from stream"):
        StreamDecoder(_Linear(spec, np.eye(2)), _source(rng)[1], hop=1.0).run()
    res = StreamDecoder(_Linear(spec, np.eye(2)), _source(rng)[1], hop=1.0, raw_sfreq=100.0, max_windows=2).run()
    assert len(res) == 2  # accepted on request
    spec = WindowSpec(("c0", "MEG 0111"), 50.0, 0.0, 10)
    with pytest.raises(MetadataMismatchError, match="1 missing: MEG 0111"):
        StreamDecoder(_Linear(spec, np.eye(2)), _source(rng)[1], hop=1.0).run()
    with pytest.raises(ValidationError, match="hop"):
        StreamDecoder(_Linear(spec, np.eye(2)), _source(rng)[1], hop=-1.0).run()
    with pytest.raises(ValidationError, match="lsl://"):
        StreamDecoder(_Linear(spec, np.eye(2)), "MEG", hop=1.0).run()


def test_lsl_replay_gives_the_in_memory_answers(rng):
    """A short recording replayed by mne-lsl's player (localhost LSL; liblsl's C sockets are not Python
    sockets, so pytest-socket does not block them) decodes to the same windows as the array source."""
    import uuid

    from mne_lsl.player import PlayerLSL

    sfreq, names = 250.0, ["c0", "c1", "stim", "c2"]
    data = rng.standard_normal((4, 705)) * 1e-12  # not a whole number of chunks (the player warns then)
    onsets = [1.2, 1.7, 2.1]  # a lead-in: samples pushed before the inlet connects are not received
    raw = mne.io.RawArray(data, mne.create_info(names, sfreq, "mag"), verbose="error")
    raw.set_annotations(mne.Annotations(onsets, 0.0, ["x", "y", "x"]))
    spec = WindowSpec(("c2", "c0", "c1"), 125.0, -0.1, 25, raw_sfreq=sfreq)
    W = rng.standard_normal((3, 4)) * 1e12
    offline = StreamDecoder(_Linear(spec, W), ArraySource(data, sfreq, names, markers=list(zip(onsets, "xyx")))).run()
    assert [r["event"] for r in offline] == ["x", "y", "x"]
    name = f"nd-unit-{uuid.uuid4().hex[:8]}"
    player = PlayerLSL(raw, chunk_size=10, n_repeat=1, name=name, annotations=True,
                       annotations_encoding="string").start()
    try:
        live = StreamDecoder(_Linear(spec, W), f"lsl://{name}", markers=f"lsl://{name}-annotations",
                             marker_delay=1.0 / sfreq, max_windows=3, timeout=5.0).run()
    finally:
        player.stop() if player.running else None
    assert [r["event"] for r in live] == ["x", "y", "x"]
    # counted from the first sample received: the spacing is the recording's
    assert np.diff([r["event_sample"] for r in live]).tolist() == np.diff(np.round(np.multiply(onsets, sfreq))).tolist()
    np.testing.assert_allclose(np.stack([r["embedding"] for r in live]),
                               np.stack([r["embedding"] for r in offline]), rtol=1e-5, atol=1e-6)
    assert all(-10 / sfreq - 1e-3 < r["latency_s"] < 2.0 for r in live)  # stamps run up to a chunk ahead


def test_a_folder_that_is_not_a_run_is_explained(tmp_path):
    from neurodecode._core.errors import MissingFileError
    from neurodecode.estimators.stream import load_window_decoder

    with pytest.raises(MissingFileError, match="nothing at"):
        load_window_decoder(tmp_path / "absent")
    (tmp_path / "model").mkdir()
    with pytest.raises(MissingFileError, match="no recipe.json in .*model or its parent"):
        load_window_decoder(tmp_path / "model")
    (tmp_path / "model" / "recipe.json").write_text(json.dumps({"decoder": {"name": "mindbridge"}, "data": {}}))
    with pytest.raises(ValidationError, match="decodes windows live.*a 'mindbridge' run"):
        load_window_decoder(tmp_path / "model")


def test_the_ring_buffer_keeps_the_newest_samples_by_counter():
    from neurodecode.estimators._stream import _Ring

    ring, total = _Ring(2, 10), 0
    for k in (3, 4, 12, 5, 9, 1, 25, 2):  # chunks shorter and longer than the buffer
        counter = np.arange(total, total + k, dtype=float)
        ring.append(np.stack([counter, -counter]), counter, 0.0)
        total += k
        assert ring.stop == total and min(total, 10) <= ring.n <= 20
        np.testing.assert_array_equal(ring.data[0, :ring.n], np.arange(ring.start, ring.stop))  # no gap, no reorder
        np.testing.assert_array_equal(ring.data[1, :ring.n], -np.arange(ring.start, ring.stop))
    assert ring.sample_at(total - 1.4) == total - 1 and ring.sample_at(ring.start - 5.0) is None
