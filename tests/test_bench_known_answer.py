"""The known-answer benchmark's pure part: the fraction of the ideal observer and how a run's metrics are read.

The training runs themselves take minutes (``python benchmarks/bench_known_answer.py``), so they are not here.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_known_answer.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_known_answer", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fraction_is_zero_at_chance_one_at_the_ideal_and_linear_between(bench):
    # chance 1/9, ideal 7/9: a score of 3/9 is (3/9 - 1/9) / (7/9 - 1/9) = 2/6 of the way
    assert bench.fraction_of_ideal(3 / 9, 1 / 9, 7 / 9) == pytest.approx(1 / 3, abs=1e-4)
    assert bench.fraction_of_ideal(1 / 9, 1 / 9, 7 / 9) == 0.0
    assert bench.fraction_of_ideal(7 / 9, 1 / 9, 7 / 9) == 1.0
    assert bench.fraction_of_ideal(0.0, 1 / 8, 0.5) == pytest.approx(-1 / 3, abs=1e-4)  # below chance: negative
    assert bench.fraction_of_ideal(0.3, 0.2, 0.2) is None  # an ideal at chance leaves nothing to reach


def test_nsd_run_is_read_per_subject_with_its_shuffled_control(bench):
    metrics = {"test/nsd/subj01/top1": 0.5, "test/nsd/subj01/shuffled_top1": 0.0, "test/nsd/subj01/chance": 0.125,
               "test/nsd/subj02/top1": 0.25, "test/nsd/subj02/shuffled_top1": 0.375, "test/nsd/subj02/chance": 0.125,
               "loss": 3.0}
    ceiling = {"n_test": 8, "per_subject": {"subj01": {"top1_retrieval": 0.875, "n_test": 8},
                                            "subj02": {"top1_retrieval": 0.625, "n_test": 8}}}
    out = bench.summarise_run("nsd", metrics, ceiling)
    s1, s2 = out["subjects"]["subj01"], out["subjects"]["subj02"]
    assert s1["fraction_of_ideal"] == pytest.approx((0.5 - 0.125) / (0.875 - 0.125), abs=1e-4)
    assert s2["fraction_of_ideal"] == pytest.approx((0.25 - 0.125) / (0.625 - 0.125), abs=1e-4)
    assert s1["beats_control"] and not s2["beats_control"] and not out["beats_control"]  # every subject must
    # the summary is the fraction of the means: (0.375 - 0.125) / (0.75 - 0.125)
    assert (out["score"], out["control"], out["ideal"]) == (0.375, 0.1875, 0.75)
    assert out["fraction_of_ideal"] == pytest.approx(0.4, abs=1e-4)
    assert out["candidates"] == {"run": [8], "ideal": [8], "same_count": True}
    assert json.loads(json.dumps(out)) == out  # plain JSON


def test_mindeye2_retrieval_space_is_reported_beside_the_prior_output(bench):
    metrics = {"test/nsd/subj01/top1": 0.25, "test/nsd/subj01/shuffled_top1": 0.0, "test/nsd/subj01/chance": 0.125,
               "test/nsd/subj01/retrieval_top1": 0.625, "test/nsd/subj01/retrieval_shuffled_top1": 0.125}
    ceiling = {"n_test": 8, "per_subject": {"subj01": {"top1_retrieval": 0.875, "n_test": 8}}}
    sub = bench.summarise_run("nsd", metrics, ceiling)["subjects"]["subj01"]
    assert sub["score"] == 0.25  # the main target (the prior's tokens) stays the score
    r = sub["retrieval"]
    assert (r["score"], r["control"], r["chance"], r["ideal"]) == (0.625, 0.125, 0.125, 0.875)
    assert r["fraction_of_ideal"] == pytest.approx((0.625 - 0.125) / (0.875 - 0.125), abs=1e-4) and r["beats_control"]
    two = {**metrics, **{k.replace("subj01", "subj02"): v for k, v in metrics.items()},
           "test/nsd/subj02/retrieval_top1": 0.125}
    ceiling["per_subject"]["subj02"] = {"top1_retrieval": 0.625, "n_test": 8}
    mean = bench.summarise_run("nsd", two, ceiling)["retrieval"]
    assert (mean["score"], mean["ideal"]) == (0.375, 0.75) and not mean["beats_control"]  # subj02 at its control


def test_atm_uses_its_shuffled_control_when_the_run_reports_one(bench):
    metrics = {"test/things-eeg2/sub-01/top1": 0.4, "test/things-eeg2/sub-01/chance": 0.1,
               "test/things-eeg2/sub-01/shuffled_top1": 0.5}
    ceiling = {"n_test": 10, "per_subject": {"sub-01": {"top1_retrieval": 0.7, "n_test": 10}}}
    out = bench.summarise_run("atm", metrics, ceiling)
    sub = out["subjects"]["sub-01"]
    assert sub["control"] == 0.5 and sub["control_kind"] == "shuffled-brain" and not out["beats_control"]


def test_training_subprocesses_run_one_thread_unless_told_otherwise(bench, tmp_path, monkeypatch):
    # two spin-waiting OpenMP threads per run on 2 shared cores made the tiny MindEye2 45x slower
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    env = bench.subprocess_env(tmp_path)
    assert env["OMP_NUM_THREADS"] == "1" and env["MKL_NUM_THREADS"] == "1"
    assert env["NEURODECODE_CACHE"] == str(tmp_path / "cache") and env["NEURODECODE_OFFLINE"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert bench.subprocess_env(tmp_path)["OMP_NUM_THREADS"] == "4"


def _sets(bench, family):
    return dict(s.split("=", 1) for s in bench.DECODERS[family]["sets"])


def test_mindbridge_known_answer_run_pools_without_dropping_voxels(bench):
    # the tiny preset's pooled = 16 max-pools the simulated voxels 25:1, which alone caps a ridge at top-1 0.02
    import inspect

    from neurodecode.simulate import simulate_nsd

    n_voxels = inspect.signature(simulate_nsd).parameters["n_voxels"].default
    sets = _sets(bench, "mindbridge_nsd")
    assert int(sets["decoder.pooled"]) >= n_voxels
    assert int(sets["train.epochs"]) >= 20 and int(_sets(bench, "mindeye2_nsd")["train.epochs"]) >= 20
    assert "train.lr" not in sets  # the recipe's own learning rate


def test_atm_without_a_control_uses_chance_and_glim_pools_its_blocks(bench):
    metrics = {"test/things-eeg2/sub-01/top1": 0.4, "test/things-eeg2/sub-01/chance": 0.1,
               "test/things-eeg2/sub-01/n_way": 10.0, "test/things-eeg2/sub-01/prior_top1": 0.3}
    ceiling = {"n_test": 7, "per_subject": {"sub-01": {"top1_retrieval": 0.7, "n_test": 7}}}
    out = bench.summarise_run("atm", metrics, ceiling)
    sub = out["subjects"]["sub-01"]
    assert sub["control"] == 0.1 and sub["control_kind"] == "chance" and sub["prior_top1"] == 0.3
    assert sub["fraction_of_ideal"] == pytest.approx(0.5, abs=1e-4)
    assert out["candidates"] == {"run": [10], "ideal": [7], "same_count": False}  # a mismatch is reported

    glim = {"test/retrieval_top1": 0.5, "test/retrieval_chance_top1": 0.125, "test/retrieval_block": 8.0}
    ceil = {"n_test": 8, "per_subject": {"A": {"top1_retrieval": 0.75}, "B": {"top1_retrieval": 1.0}}}
    g = bench.summarise_run("glim", glim, ceil)
    assert g["ideal"] == 0.875 and g["fraction_of_ideal"] == pytest.approx((0.5 - 0.125) / 0.75, abs=1e-4)
    assert list(g["subjects"]) == ["all"]


def test_a_run_without_test_metrics_is_an_error_not_a_zero(bench):
    with pytest.raises(ValueError, match="no test metrics"):
        bench.summarise_run("nsd", {"loss": 1.0}, {"n_test": 8, "per_subject": {}})


def test_simulate_things_eeg2_cli_sets_the_training_size_and_records_it(tmp_path):
    # the ATM known-answer run trains on a larger simulated set than the default 12 concepts x 10 images
    import numpy as np
    from typer.testing import CliRunner

    from neurodecode.cli import app
    from neurodecode.data import load_things_eeg2

    out = tmp_path / "sim"
    res = CliRunner().invoke(app, ["simulate", "things-eeg2", str(out), "--subjects", "1", "--train-concepts", "3",
                                   "--images-per-concept", "2", "--test-images", "7", "--json"])
    assert res.exit_code == 0, res.output
    ceiling = json.loads((out / "ceiling.json").read_text())
    assert (ceiling["n_train_concepts"], ceiling["images_per_concept"], ceiling["n_test"]) == (3, 2, 7)
    trials = load_things_eeg2(out / "things-eeg2", 1, average_repeats=True)
    assert int(np.sum(trials.split == "train")) == 6 and int(np.sum(trials.split == "test")) == 7
    for opt in ("--train-concepts", "--test-images"):
        bad = CliRunner().invoke(app, ["simulate", "zuco", str(tmp_path / "z"), opt, "3"])
        assert bad.exit_code == 2 and "things-eeg2 only" in bad.output


def test_each_dataset_and_simulator_options_pair_is_simulated_once_and_recorded(bench, tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        if "simulate" in cmd:
            out = Path(cmd[cmd.index("simulate") + 2])
            out.mkdir(parents=True)
            n = int(cmd[cmd.index("--train-concepts") + 1]) if "--train-concepts" in cmd else 12
            (out / "ceiling.json").write_text(json.dumps({
                "snr": 1.0, "seed": 0, "n_test": 5, "n_train_concepts": n, "images_per_concept": 10,
                "per_subject": {"sub-01": {"top1_retrieval": 0.6, "n_test": 5}}}))
        else:
            run = Path(cmd[cmd.index("--out") + 1])
            run.mkdir(parents=True)
            (run / "metrics.json").write_text(json.dumps({"steps": 3, "metrics": {
                "test/things-eeg2/sub-01/top1": 0.4, "test/things-eeg2/sub-01/chance": 0.2,
                "test/things-eeg2/sub-01/shuffled_top1": 0.2}}))
        return type("Done", (), {"returncode": 0, "stderr": ""})()

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    monkeypatch.setattr(bench, "DECODERS", {
        "a": {"dataset": "things-eeg2", "kind": "atm", "recipe": "atm_things_eeg2", "sets": [],
              "simulate": ["--train-concepts", "7"]},
        "b": {"dataset": "things-eeg2", "kind": "atm", "recipe": "atm_things_eeg2", "sets": []},
        "c": {"dataset": "things-eeg2", "kind": "atm", "recipe": "atm_things_eeg2", "sets": [],
              "simulate": ["--train-concepts", "7"]}})
    out = bench.bench_decoders(tmp_path, ["a", "b", "c"])
    sims = [c for c in calls if "simulate" in c]
    assert len(sims) == 2 and sims[0][-2:] == ["--train-concepts", "7"] and "--train-concepts" not in sims[1]
    assert out["a"]["simulator"]["n_train_concepts"] == 7 and out["c"]["simulator"]["n_train_concepts"] == 7
    assert out["a"]["simulator"]["command"].endswith("--seed 0 --train-concepts 7")
    assert out["b"]["simulator"] == {"snr": 1.0, "seed": 0}  # default simulation: as before
    assert out["a"]["score"] == 0.4 and out["a"]["beats_control"]


def test_atm_known_answer_run_keeps_the_recipe_and_enlarges_only_the_simulation(bench):
    # ATM's reference settings stay: the only override is the recipe's own 40 epochs (the preset has 2)
    import inspect

    from neurodecode._core.recipes import load_recipe
    from neurodecode.simulate import simulate_things_eeg2

    recipe = load_recipe(BENCH.parents[1] / "pipelines" / "atm_things_eeg2.toml")  # without the preset
    assert _sets(bench, "atm_things_eeg2") == {"train.epochs": str(recipe["train"]["epochs"])}
    opts = bench.DECODERS["atm_things_eeg2"]["simulate"]
    default = inspect.signature(simulate_things_eeg2).parameters["n_train_concepts"].default
    assert int(opts[opts.index("--train-concepts") + 1]) > default


def test_glim_known_answer_run_keeps_the_model_and_enlarges_the_test_split(bench):
    # at the simulator's default 100 sentences the test split holds 8 (16 trials: one hit is 0.0625, GLIM's 3 of
    # 16 was within noise); the run simulates more sentences so several of GLIM's full blocks of 24 are scored.
    # Model and loss stay the recipe's; training takes the recipe's batch of 72 (the preset's is 8) and a learning
    # rate 10x the reference's (the toy width learns nothing at 1e-4 in 60 epochs: docs/decoders/glim.md)
    import inspect

    from neurodecode._core.recipes import load_recipe
    from neurodecode.data._zuco import sentence_split
    from neurodecode.simulate import simulate_zuco
    from neurodecode.simulate.text import make_sentences

    recipe = load_recipe(BENCH.parents[1] / "pipelines" / "glim_zuco.toml")  # without the preset
    sets = _sets(bench, "glim_zuco")
    assert set(sets) == {"train.epochs", "train.batch_size", "train.lr"}  # nothing of [decoder] or [data]
    assert 2 < int(sets["train.epochs"]) <= recipe["train"]["epochs"]
    assert int(sets["train.batch_size"]) == recipe["train"]["batch_size"] == 72
    assert float(sets["train.lr"]) == pytest.approx(10 * recipe["train"]["lr"])
    opts = bench.DECODERS["glim_zuco"]["simulate"]
    n = int(opts[opts.index("--sentences") + 1])
    assert n > inspect.signature(simulate_zuco).parameters["n_sentences"].default
    n_test = sum(sentence_split(t) == "test" for t in make_sentences(n, 0))  # the benchmark simulates seed 0
    block = int(recipe["evaluate"]["retrieval_block"])
    assert n_test >= 3 * block  # several full blocks of GLIM's 24 distinct test sentences per subject
    assert sum(sentence_split(t) == "test" for t in make_sentences(100, 0)) < block  # the default could not


def test_p_above_chance_is_the_binomial_tail(bench):
    # independent: the upper tail summed from the binomial probability mass
    from math import comb

    n, p = 30, 1 / 30
    expected = sum(comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(4, n + 1))
    assert bench.p_above_chance(4 / 30, p, n) == pytest.approx(expected, rel=1e-9)
    assert bench.p_above_chance(0.0, p, n) == pytest.approx(1.0)


def test_summaries_carry_the_scored_trials_and_their_p_value(bench):
    metrics = {"test/things-eeg2/sub-01/top1": 0.2, "test/things-eeg2/sub-01/chance": 0.1,
               "test/things-eeg2/sub-02/top1": 0.1, "test/things-eeg2/sub-02/chance": 0.1}
    ceil = {"per_subject": {"sub-01": {"top1_retrieval": 0.9, "n_test": 10},
                            "sub-02": {"top1_retrieval": 0.7, "n_test": 10}}}
    out = bench.summarise_run("atm", metrics, ceil)
    assert out["subjects"]["sub-01"]["n_scored"] == 10
    assert out["subjects"]["sub-01"]["p_above_chance"] == pytest.approx(bench.p_above_chance(0.2, 0.1, 10), rel=1e-2)
    assert out["n_scored"] == 20  # pooled: 3 hits of 20 at 0.1
    assert out["p_above_chance"] == pytest.approx(bench.p_above_chance(0.15, 0.1, 20), rel=1e-2)


def test_simulate_zuco_cli_passes_the_number_of_sentences(tmp_path, monkeypatch):
    import neurodecode.simulate as sim_mod
    from neurodecode.cli._simulate import run_simulation

    seen = []
    monkeypatch.setattr(sim_mod, "simulate_zuco", lambda out, **kw: seen.append(kw) or "done")
    assert run_simulation("zuco", tmp_path / "a", n_sentences=37) == "done"
    assert run_simulation("zuco", tmp_path / "b") == "done"
    assert seen[0]["n_sentences"] == 37 and "n_sentences" not in seen[1]  # unset: the library default
    assert seen[0]["subjects"] == ["YAC", "YAG"]

    from typer.testing import CliRunner

    from neurodecode.cli import app

    bad = CliRunner().invoke(app, ["simulate", "nsd", str(tmp_path / "n"), "--sentences", "30"])
    assert bad.exit_code == 2 and "zuco only" in bad.output
    too_few = CliRunner().invoke(app, ["simulate", "zuco", str(tmp_path / "z"), "--sentences", "1"])
    assert too_few.exit_code == 2 and not seen[2:]  # rejected before simulating


def test_simulated_zuco_records_its_number_of_sentences(tmp_path):
    from neurodecode.simulate import load_truth, simulate_zuco

    res = simulate_zuco(tmp_path / "z", subjects=("YAC",), n_sentences=13, space="minilm-l6-tiny", seed=1)
    ceiling = json.loads((tmp_path / "z" / "ceiling.json").read_text())
    assert ceiling["n_sentences"] == 13 == res.ceiling["n_sentences"]
    assert len(load_truth(res.out, "sentences")["texts"]) == 13


def test_glim_summary_reports_top5_and_the_scored_trials_when_the_run_has_them(bench):
    glim = {"test/retrieval_top1": 0.125, "test/retrieval_chance_top1": 1 / 24, "test/retrieval_block": 24.0,
            "test/retrieval_n_blocks": 2.0, "test/retrieval_top5": 0.3125, "test/retrieval_chance_top5": 5 / 24}
    ceil = {"n_test": 28, "per_subject": {"YAC": {"top1_retrieval": 0.5}, "YAG": {"top1_retrieval": 0.25}}}
    sub = bench.summarise_run("glim", glim, ceil)["subjects"]["all"]
    assert (sub["top5"], sub["top5_chance"], sub["n_scored"]) == (0.3125, 0.2083, 48)
    assert sub["p_above_chance"] == pytest.approx(bench.p_above_chance(0.125, 1 / 24, 48), rel=1e-2)
    assert sub["top5_p_above_chance"] == pytest.approx(bench.p_above_chance(0.3125, 0.2083, 48), rel=1e-2)
    assert (sub["n_candidates"], sub["n_candidates_ideal"]) == (24, 28)
    assert sub["fraction_of_ideal"] == pytest.approx((0.125 - 1 / 24) / (0.375 - 1 / 24), abs=1e-4)
    assert (sub["control"], sub["control_kind"]) == (round(1 / 24, 4), "chance")  # a run without the control
    shuffled = bench.summarise_run("glim", {**glim, "test/retrieval_shuffled_top1": 0.0625}, ceil)["subjects"]["all"]
    assert (shuffled["control"], shuffled["control_kind"]) == (0.0625, "shuffled-brain") and shuffled["beats_control"]
    bare = bench.summarise_run("glim", {k: glim[k] for k in list(glim)[:3]}, ceil)["subjects"]["all"]
    assert "top5" not in bare and "n_scored" not in bare and "p_above_chance" not in bare  # older runs: as before


#: Every decoder family of the benchmark (checked against ``DECODERS`` below, so a new family gets a learning test).
FAMILIES = ("mindbridge_nsd", "mindeye2_nsd", "brain_diffuser_nsd", "atm_things_eeg2", "glim_zuco")


def test_the_learning_test_covers_every_benchmark_family(bench):
    assert set(FAMILIES) == set(bench.DECODERS)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("family", FAMILIES)
def test_each_decoder_learns_its_known_answer(bench, family, tmp_path):
    # issue #17 item 6, as the benchmark measures it: simulate, train the shipped recipe (tiny preset plus the
    # benchmark's settings) in a subprocess, and score it against its control, chance and the ideal observer
    # (MindEye2 takes about 11 minutes on 2 CPU cores, the others 1-3)
    out = bench.bench_decoders(tmp_path, [family])[family]
    assert "error" not in out, out.get("error")
    assert out["beats_control"] and out["score"] > out["chance"]
    assert out["p_above_chance"] < 0.05, out  # hits above chance, not a lucky one or two
    assert 0 < out["fraction_of_ideal"] < 1  # learns, and stays below the true model
