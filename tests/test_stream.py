"""A trained tiny ATM decodes a simulated THINGS-MEG recording replayed live over LSL (mne-lsl's player).

The run is trained through the CLI on the simulated recording; the recording's first session is
replayed in real time by ``mne_lsl.player.PlayerLSL`` on this machine, with its image onsets as a
string marker stream. The live answers must equal the offline decoding of the same trials (the
loader's epochs through the saved model, computed here without the stream code), and the top-k
candidates must follow the cosine ranking against the candidate images embedded here.

Both tests are marked slow (simulation, training and real-time replay: ~15 s of CPU, more wall time on a
loaded machine); tests/test_stream_windows.py keeps a fast LSL replay with a linear model in `make test`.

LSL and pytest-socket: liblsl opens its sockets in C (UDP discovery, TCP data on localhost), which
pytest-socket's Python-level ``socket.socket`` guard does not see, so these tests run with the suite's
``--disable-socket`` unchanged; Python code still cannot open a socket.

mne-lsl's player stamps each annotation with the timestamp of the sample before the annotated one (the
last sample of a chunk gets the push time, so each sample's stamp is one period late), hence
``marker_delay = 1 / sfreq`` for replays.
"""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path

import mne
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from neurodecode.cli import app

# mne-lsl's player pushes each annotation as a one-sample chunk and says so
pytestmark = pytest.mark.filterwarnings("ignore:A single sample is pushed:RuntimeWarning")
runner = CliRunner()
PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
N_WINDOWS = 3


@pytest.fixture(scope="module")
def atm_run(tmp_path_factory):
    from neurodecode.simulate import simulate_things_meg

    tmp = tmp_path_factory.mktemp("stream")
    simulate_things_meg(tmp, subjects=(1,), n_sessions=1, n_train_concepts=8, n_test=4, n_test_classes=2,
                        image_size=16)
    root = tmp / "things-meg"
    run = tmp / "run"
    res = runner.invoke(app, ["train", str(PIPELINES / "atm_things_meg.toml"), "--data", str(root), "--out", str(run),
                              "--preset", "tiny", "--device", "cpu", "--json", "--max-steps", "1",
                              "--set", 'data.subjects=["sub-BIGMEG1"]', "--set", "latents.cache_dir=out"])
    assert res.exit_code == 0, res.output
    base = root / "sub-BIGMEG1" / "ses-01" / "meg" / "sub-BIGMEG1_ses-01_task-main_run-01"
    with open(f"{base}_events.tsv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["trial_type"] != "catch"]
    raw = mne.io.read_raw_fif(f"{base}_meg.fif", preload=True, verbose="error")
    onsets = np.array([int(r["sample"]) for r in rows]) / raw.info["sfreq"]
    stems = [Path(r["image_path"]).stem for r in rows]
    raw.set_annotations(mne.Annotations(onsets, 0.0, stems))
    # only as much of session 1 as the first windows need (the player plays in real time)
    raw.crop(0.0, onsets[N_WINDOWS - 1] + 1.2)
    return {"root": root, "run": run, "raw": raw, "stems": stems}


def _player(raw, name):
    from mne_lsl.player import PlayerLSL

    return PlayerLSL(raw, chunk_size=24, n_repeat=1, name=name, annotations=len(raw.annotations) > 0,
                     annotations_encoding="string").start()


def _offline(run, root, n):
    """The saved model on the loader's epochs of session 1 (no stream code involved)."""
    from neurodecode.data import load_things_meg
    from neurodecode.models import load_decoder

    model = load_decoder(run / "sub-BIGMEG1")
    trials = load_things_meg(root, 1, sessions=[1], sfreq=200.0, tmin=0.0, tmax=0.995)
    return model.encode(trials.X[:n]), list(trials.stimulus_ids[:n])


def _candidates(root):
    """The tiny ViT-H-14 twin's embeddings of the test images, stored float16 as the feature cache does."""
    from neurodecode.latents import get_space

    files = sorted((root / "stimuli" / "images_test_meg").rglob("*.jpg"))
    emb = get_space("clip-vit-h-14-tiny").encode_images([np.asarray(Image.open(f).convert("RGB")) for f in files])
    return np.asarray(emb, np.float32).astype(np.float16).astype(np.float32), [f.stem for f in files]


@pytest.mark.slow
def test_live_lsl_decoding_equals_offline_decoding(atm_run, tmp_path):
    from neurodecode.estimators.stream import StreamDecoder

    name = f"nd-test-{uuid.uuid4().hex[:8]}"
    player = _player(atm_run["raw"], name)
    out = tmp_path / "live.jsonl"
    try:
        live = StreamDecoder(atm_run["run"], f"lsl://{name}", markers=f"lsl://{name}-annotations",
                             marker_delay=1.0 / 1200.0, max_windows=N_WINDOWS, timeout=5.0, out=out, top_k=2)
        results = live.run()
    finally:
        player.stop() if player.running else None
    offline, ids = _offline(atm_run["run"], atm_run["root"], N_WINDOWS)
    assert [r["event"] for r in results] == ids == atm_run["stems"][:N_WINDOWS]
    emb = np.stack([r["embedding"] for r in results])
    np.testing.assert_allclose(emb, offline, rtol=1e-4, atol=1e-5 * np.abs(offline).max())
    cands, cand_ids = _candidates(atm_run["root"])
    for r, e in zip(results, offline):
        cos = cands @ e / np.linalg.norm(cands, axis=1) / np.linalg.norm(e)
        assert [k["id"] for k in r["top_k"]] == [cand_ids[i] for i in np.argsort(-cos)[:2]]
        # stamps: the last sample needed comes after the window, the result after it was pulled. The player
        # pushes each chunk at the start of its period and stamps its last sample with the period's end, so
        # a sample can be stamped up to one chunk (24 samples) after it arrives
        chunk = 24 / 1200.0
        assert r["event_time"] < r["window_end_time"] <= r["sample_time"] < r["written_time"] + chunk + 1e-3
        assert r["received_time"] <= r["written_time"]
        assert r["window_end_time"] - r["event_time"] == pytest.approx(0.995, abs=2e-3)
        assert -chunk - 1e-3 < r["latency_s"] < 5.0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["type"] for x in lines] == ["start"] + ["window"] * N_WINDOWS + ["end"]
    assert lines[0]["stream"]["sfreq"] == 1200.0 and lines[0]["decoder"]["decoder"] == "atm"
    assert lines[-1]["reason"] == "max_windows"


@pytest.mark.slow
def test_cli_stream_and_its_exit_codes(atm_run, tmp_path):
    run = str(atm_run["run"])
    # bad usage: exit 2
    res = runner.invoke(app, ["stream", "--checkpoint", run, "--source", "lsl://x"])
    assert res.exit_code == 2 and "exactly one of --markers" in res.output
    res = runner.invoke(app, ["stream", "--checkpoint", run, "--source", "MEG", "--hop", "1"])
    assert res.exit_code == 2 and "lsl://<stream name>" in res.output
    # a stream at another rate: exit 1, naming both rates, no traceback
    raw = atm_run["raw"]
    slow = mne.io.RawArray(raw.get_data()[:, :3000], mne.create_info(raw.ch_names, 1000.0, "mag"), verbose="error")
    name = f"nd-rate-{uuid.uuid4().hex[:8]}"
    player = _player(slow, name)
    try:
        res = runner.invoke(app, ["stream", "--checkpoint", run, "--source", f"lsl://{name}", "--hop", "0.5",
                                  "--timeout", "3"])
    finally:
        player.stop() if player.running else None
    assert res.exit_code == 1 and "1200 Hz" in res.output and "got 1000 Hz" in res.output
    assert "Traceback" not in res.output
    # no such stream: exit 1
    res = runner.invoke(app, ["stream", "--checkpoint", run, "--source", f"lsl://nd-absent-{uuid.uuid4().hex[:6]}",
                              "--hop", "0.5", "--timeout", "0.5"])
    assert res.exit_code == 1 and "an LSL stream named" in res.output
    # a live run: JSON summary on stdout, the results in --out
    name = f"nd-cli-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "cli.jsonl"
    player = _player(atm_run["raw"], name)
    try:
        res = runner.invoke(app, ["stream", "--checkpoint", run, "--source", f"lsl://{name}", "--markers",
                                  f"lsl://{name}-annotations", "--marker-delay", str(1 / 1200), "--max-windows", "1",
                                  "--out", str(out), "--json", "--device", "cpu"])
    finally:
        player.stop() if player.running else None
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["n_windows"] == 1 and summary["latency_ms"]["median"] > 0
    window = [json.loads(x) for x in out.read_text().splitlines()][1]
    assert window["event"] == atm_run["stems"][0] and len(window["top_k"]) == 4  # every test image, best first


@pytest.mark.slow
def test_a_meg_realtime_run_decodes_a_replay_like_offline(atm_run, tmp_path):
    """The MEG brain-module run (recipes/_meg_realtime.py, its load_run) through the same window protocol,
    on an in-memory replay of the same recording (40 Hz, -0.5..1.0 s windows, baseline inside the model)."""
    from neurodecode.data import load_things_meg
    from neurodecode.estimators.stream import ArraySource, StreamDecoder, load_window_decoder
    from neurodecode.recipes._meg_realtime import load_run

    root, out = atm_run["root"], tmp_path / "megrt"
    res = runner.invoke(app, ["train", str(PIPELINES / "meg_realtime_things.toml"), "--data", str(root), "--out",
                              str(out), "--preset", "tiny", "--device", "cpu", "--json", "--max-steps", "1",
                              "--set", 'data.subjects=["sub-BIGMEG1"]', "--set", 'decoder.time.mode="shifting"',
                              "--set", "decoder.selection.clip_weights=[0.75]", "--set", "decoder.ridge.enabled=false",
                              "--set", "decoder.retrieval.large_set=false", "--set", "latents.cache_dir=out"])
    assert res.exit_code == 0, res.output
    dec = load_window_decoder(out, subject="sub-BIGMEG1")
    assert (dec.spec.sfreq, dec.spec.tmin, dec.spec.n_times, dec.spec.raw_sfreq) == (40.0, -0.5, 60, 1200.0)
    raw = atm_run["raw"]
    markers = [(float(a["onset"]), str(a["description"])) for a in raw.annotations]
    results = StreamDecoder(dec, ArraySource(raw.get_data(), raw.info["sfreq"], raw.ch_names, markers=markers)).run()
    trials = load_things_meg(root, 1, sessions=[1], sfreq=40.0, tmin=-0.5, tmax=1.0 - 1 / 40.0)
    offline_run = load_run(out)
    n = len(results)
    assert n >= 2 and [r["event"] for r in results] == list(trials.stimulus_ids[:n])
    offline = offline_run.decode(trials.X[:n], offline_run.subjects[0])
    np.testing.assert_allclose(np.stack([r["embedding"] for r in results]), offline, rtol=1e-4,
                               atol=1e-5 * np.abs(offline).max())
    ids, _ = offline_run.retrieve(trials.X[:n], offline_run.subjects[0], k=3)
    assert [[k["id"] for k in r["top_k"][:3]] for r in results] == ids.tolist()
