"""`neurodecode reconstruct` and `evaluate` on the M/EEG recipes: ATM (THINGS-EEG2, THINGS-MEG) and GLIM (ZuCo).

Simulated data in the published layouts -> `neurodecode train --preset tiny` (a few steps) ->
`neurodecode reconstruct` -> `neurodecode evaluate`, all through the CLI. The outputs are recomputed
here from the saved models and the RAW data of the loaders (ATM: encode, prior sampled with the
item's seed, the tiny SDXL-Turbo + IP-Adapter with the same seed; GLIM: greedy decoding from the EEG
alone), so a wrong window, subject, seed, scaling or pairing shows up as a mismatch.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from neurodecode.cli import app

runner = CliRunner()
PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
N_TEST_EEG, N_TEST_MEG = 5, 6


def _cli(*args, code=0):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == code, res.output
    return res


def _train(recipe, root, out, *extra):
    _cli("train", PIPELINES / recipe, "--data", root, "--out", out, "--preset", "tiny", "--device", "cpu", "--json",
         *extra)
    return out


def _reconstruct(recipe, root, run, out, *extra, code=0):
    res = _cli("reconstruct", "--pipeline", PIPELINES / recipe, "--preset", "tiny", "--data", root,
               "--checkpoint", run, "--out", out, "--device", "cpu", *extra, code=code)
    return json.loads(res.stdout) if code == 0 and "--json" in extra else res


def _label(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", stem)


@pytest.fixture(scope="module")
def eeg2(tmp_path_factory):
    from neurodecode.simulate import simulate_things_eeg2

    out = tmp_path_factory.mktemp("eeg2")
    simulate_things_eeg2(out, subjects=(1, 2), n_train_concepts=6, images_per_concept=2, n_test=N_TEST_EEG,
                         n_test_classes=2, train_repetitions=2, test_repetitions=3, safe_copy=True, image_size=16)
    root = out / "things-eeg2"
    assert len(list((root / "image_set" / "test_images").rglob("*.jpg"))) == N_TEST_EEG  # written by the simulator
    meta = np.load(root / "image_set" / "image_metadata.npz")
    run = _train("atm_things_eeg2.toml", root, tmp_path_factory.mktemp("runs") / "atm", "--max-steps", "2")
    return {"root": root, "run": run, "test_files": [str(f) for f in meta["test_img_files"]]}


@pytest.fixture(scope="module")
def eeg2_recon(eeg2, tmp_path_factory):
    out = tmp_path_factory.mktemp("recon") / "atm"
    summary = _reconstruct("atm_things_eeg2.toml", eeg2["root"], eeg2["run"], out, "--json")
    return out, summary


@pytest.fixture(scope="module")
def zuco(tmp_path_factory):
    from neurodecode.simulate import simulate_zuco

    out = tmp_path_factory.mktemp("zuco")
    simulate_zuco(out, subjects=("YAC", "YAG"), n_sentences=40, space="minilm-l6-tiny")
    root = out / "zuco"
    # enough steps at a high rate that the tiny T5 emits characters (an untrained one emits nothing)
    run = _train("glim_zuco.toml", root, tmp_path_factory.mktemp("runs") / "glim", "--max-steps", "40",
                 "--set", "train.lr=3e-3")
    return {"root": root, "run": run}


# ------------------------------------------------------------------------------------------- ATM
def test_atm_eeg2_derivative_matches_model_prior_and_generator(eeg2, eeg2_recon):
    from neurodecode.data import load_things_eeg2
    from neurodecode.generate import get_generator
    from neurodecode.models.atm import ATM, ATMDiffusionPrior

    out, summary = eeg2_recon
    assert (summary["n_items"], summary["n_done"], summary["n_skipped"]) == (2 * N_TEST_EEG, 2 * N_TEST_EEG, 0)
    assert set(summary["subjects"]) == {"things-eeg2/sub-01", "things-eeg2/sub-02"} and summary["outputs"] == "image"
    labels = sorted(_label(Path(f).stem) for f in eeg2["test_files"])  # coat-test1_01s.jpg -> coattest101s
    for sub in ("01", "02"):
        names = sorted(p.name for p in (out / f"sub-{sub}" / "recon").iterdir())
        assert names == sorted(f"sub-{sub}_stim-{lab}_desc-atmthingseeg2_recon.png" for lab in labels)
    assert json.loads((out / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    run = json.loads((out / "provenance.json").read_text())["runs"][0]
    assert run["generator"]["generator"] == "sdxl-turbo" and run["generator"]["weights"] == "tiny"
    assert run["generator"]["steps"] == 1 and run["generator"]["options"] == {"ip_adapter_scale": 1.0}
    assert run["decoder"]["things-eeg2/sub-02"]["sha256"] and run["decoder"]["things-eeg2/sub-02"]["prior"]["sha256"]
    assert not list(out.rglob(".*.tmp")) and not list(out.rglob(".*.png"))

    # one subject's images by hand, from the saved model on the RAW averaged test trials
    test = load_things_eeg2(eeg2["root"], 2, split="test", average_repeats=True)
    model = ATM.from_pretrained(eeg2["run"] / "sub-02")
    prior = ATMDiffusionPrior.from_pretrained(eeg2["run"] / "sub-02" / "prior")
    emb = model.encode(test.X)
    gen = get_generator("sdxl-turbo", weights="tiny", config={"embed_dim": 24})
    seeds = run["seeds"]["items"]["things-eeg2/sub-02"]
    for i in (0, N_TEST_EEG - 1):
        lab = _label(Path(str(test.stimulus_ids[i])).stem)
        assert seeds[lab] == {"stimulus_id": str(test.stimulus_ids[i]), "seed": i}  # base 0 + position
        embed = prior.sample(emb[i:i + 1], seed=i)
        image = gen.generate({"clip_image_embeds": embed}, seeds=[i], steps=1, guidance=0.0, ip_adapter_scale=1.0)[0]
        saved = np.asarray(Image.open(out / "sub-02" / "recon" / f"sub-02_stim-{lab}_desc-atmthingseeg2_recon.png"))
        np.testing.assert_array_equal(saved, image)
    # the two subjects' models give different images of the same stimulus
    lab = labels[0]
    assert not np.array_equal(*[np.asarray(Image.open(out / f"sub-{s}" / "recon" /
                                                      f"sub-{s}_stim-{lab}_desc-atmthingseeg2_recon.png"))
                                for s in ("01", "02")])


def _level_diff(a: bytes, b: bytes) -> int:
    """Largest difference in 8-bit levels between two PNG files' pixels."""
    import io

    x, y = (np.asarray(Image.open(io.BytesIO(v))).astype(int) for v in (a, b))
    assert x.shape == y.shape
    return int(np.abs(x - y).max())


def _assert_same_image(a: bytes, b: bytes) -> None:
    assert _level_diff(a, b) <= 1


def test_atm_resume_skips_finished_items_and_is_deterministic(eeg2, eeg2_recon, tmp_path):
    out, _ = eeg2_recon
    work = tmp_path / "copy"
    import shutil

    shutil.copytree(out, work)
    pngs = sorted(work.rglob("*_recon.png"))
    before = {p: p.read_bytes() for p in pngs}
    mtimes = {p: p.stat().st_mtime_ns for p in pngs}
    pngs[3].unlink()
    again = _reconstruct("atm_things_eeg2.toml", eeg2["root"], eeg2["run"], work, "--json")
    assert (again["n_done"], again["n_skipped"]) == (1, 2 * N_TEST_EEG - 1)
    # regenerated alone instead of in a batch: CPU float results depend on the batch composition, so the
    # image may move by one 8-bit level (docs/troubleshooting.md: what "deterministic" means)
    _assert_same_image(pngs[3].read_bytes(), before[pngs[3]])
    assert all(p.stat().st_mtime_ns == mtimes[p] for p in pngs if p != pngs[3])
    assert len(json.loads((work / "provenance.json").read_text())["runs"]) == 2

    # one subject, other batching: the same images (seed = base + position, not batch); another seed differs
    solo = _reconstruct("atm_things_eeg2.toml", eeg2["root"], eeg2["run"], tmp_path / "solo", "--json",
                        "--subject", "2", "--batch-size", "3")
    assert list(solo["subjects"]) == ["things-eeg2/sub-02"] and solo["n_done"] == N_TEST_EEG
    for p in sorted((tmp_path / "solo" / "sub-02" / "recon").glob("*.png")):
        _assert_same_image(p.read_bytes(), (out / "sub-02" / "recon" / p.name).read_bytes())
    assert not (tmp_path / "solo" / "sub-01").exists()
    _reconstruct("atm_things_eeg2.toml", eeg2["root"], eeg2["run"], tmp_path / "seed5", "--subject", "sub-02",
                 "--seed", "5", "--limit", "2")
    other = sorted((tmp_path / "seed5" / "sub-02" / "recon").glob("*.png"))
    assert len(other) == 2 and any(_level_diff(p.read_bytes(), (out / "sub-02" / "recon" / p.name).read_bytes()) > 8
                                   for p in other)


def test_atm_joint_model_reconstructs_with_the_subject_token(eeg2, tmp_path):
    from neurodecode.data import load_things_eeg2
    from neurodecode.generate import get_generator
    from neurodecode.models.atm import ATM, ATMDiffusionPrior

    run = _train("atm_things_eeg2.toml", eeg2["root"], tmp_path / "joint", "--max-steps", "2", "--set",
                 "decoder.subject_tokens=true")
    summary = _reconstruct("atm_things_eeg2.toml", eeg2["root"], run, tmp_path / "out", "--json", "--subject",
                           "things-eeg2/sub-02", "--limit", "2")
    assert list(summary["subjects"]) == ["things-eeg2/sub-02"] and summary["n_done"] == 2
    test = load_things_eeg2(eeg2["root"], 2, split="test", average_repeats=True)
    model, prior = ATM.from_pretrained(run), ATMDiffusionPrior.from_pretrained(run / "prior")
    gen = get_generator("sdxl-turbo", weights="tiny", config={"embed_dim": 24})
    lab = _label(Path(str(test.stimulus_ids[1])).stem)
    saved = np.asarray(Image.open(tmp_path / "out" / "sub-02" / "recon" /
                                  f"sub-02_stim-{lab}_desc-atmthingseeg2_recon.png"))
    images = {}
    for token in ("things-eeg2/sub-02", None):
        embed = prior.sample(model.encode(test.X[1:2], token), seed=1)
        images[token] = gen.generate({"clip_image_embeds": embed}, seeds=[1], steps=1, guidance=0.0)[0]
    # batch of 2 in reconstruct vs 1 here: equal up to one 8-bit level (float rounding across batch sizes)
    assert np.abs(saved.astype(int) - images["things-eeg2/sub-02"].astype(int)).max() <= 1
    # the token matters to the model (its embedding differs); at tiny size the images of both tokens may
    # differ by less than the batch-composition rounding, so the image check above is the one that ties
    # the output to the subject's own token
    own, none = model.encode(test.X[1:2], "things-eeg2/sub-02"), model.encode(test.X[1:2], None)
    assert np.abs(own - none).max() > 1e-3


def test_atm_outputs_pair_with_the_things_test_images(eeg2, eeg2_recon, tmp_path):
    from neurodecode.metrics import pixcorr

    out, _ = eeg2_recon
    res = _cli("evaluate", "--recons", out, "--truth", eeg2["root"] / "image_set" / "test_images", "--weights",
               "random", "--metrics", "pixcorr,alex2", "--n-boot", "50", "--out", tmp_path / "ev", "--json")
    data = json.loads(res.stdout)
    assert data["n_items"] == 2 * N_TEST_EEG and set(data) >= {"pixcorr", "alex2"}
    assert 0.0 <= data["alex2"]["value"] <= 1.0 and data["alex2"]["shuffled"] is not None
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    # pairing by the image stem: the score is that of each reconstruction against its own test image
    truth = {_label(Path(f).stem): f for f in eeg2["test_files"]}
    files = {p.name: p for p in (eeg2["root"] / "image_set" / "test_images").rglob("*.jpg")}
    recons, truths = [], []
    for item in saved["item_ids"]:
        sub, stim = re.fullmatch(r"sub-(\d+)/stim-(\w+)", item).groups()
        recons.append(np.asarray(Image.open(out / f"sub-{sub}" / "recon" / f"sub-{sub}_stim-{stim}_desc-atmthingseeg2"
                                            f"_recon.png")))
        truths.append(np.asarray(Image.open(files[truth[stim]]).convert("RGB")))
    assert data["pixcorr"]["value"] == pytest.approx(float(np.mean(pixcorr(np.stack(recons), np.stack(truths)))))


def test_atm_things_meg_reconstruct(tmp_path):
    from neurodecode.simulate import simulate_things_meg

    simulate_things_meg(tmp_path / "meg", subjects=(1,), n_sessions=2, n_train_concepts=5, n_test=N_TEST_MEG,
                        n_test_classes=2, image_size=16)
    root = tmp_path / "meg" / "things-meg"
    stim = np.load(tmp_path / "meg" / "truth" / "stimuli.npz")
    assert len(list((root / "stimuli" / "images_test_meg").rglob("*.jpg"))) == N_TEST_MEG  # written by the simulator
    run = _train("atm_things_meg.toml", root, tmp_path / "run", "--max-steps", "1", "--set",
                 'data.subjects=["sub-BIGMEG1"]')
    # the subject's own model folder is accepted as the checkpoint too
    summary = _reconstruct("atm_things_meg.toml", root, run / "sub-BIGMEG1", tmp_path / "out", "--json",
                           "--limit", "4")
    assert summary["subjects"] == {"things-meg/sub-BIGMEG1": {"n_items": 4, "n_assigned": 4, "n_done": 4,
                                                              "n_skipped": 0}}
    pngs = sorted((tmp_path / "out" / "sub-BIGMEG1" / "recon").glob("sub-BIGMEG1_stim-*_desc-atmthingsmeg_recon.png"))
    assert len(pngs) == 4 and np.asarray(Image.open(pngs[0])).shape == (32, 32, 3)
    test_labels = {_label(str(f)) for f in stim["test_files"]}
    assert {p.name.split("_stim-")[1].split("_")[0] for p in pngs} <= test_labels
    res = _cli("evaluate", "--recons", tmp_path / "out", "--truth", root / "stimuli" / "images_test_meg",
               "--metrics", "pixcorr", "--n-boot", "20", "--json")
    assert json.loads(res.stdout)["n_items"] == 4


def test_reconstruct_teaching_errors(eeg2, zuco, tmp_path):
    # a checkpoint folder that is not an ATM run: the GLIM run, or a folder without models
    res = _reconstruct("atm_things_eeg2.toml", eeg2["root"], zuco["run"], tmp_path / "o1", code=1)
    assert "checkpoint" in res.stderr and "GLIM" in res.stderr and "atm_things_eeg2" in res.stderr
    (tmp_path / "empty").mkdir()
    res = _reconstruct("atm_things_eeg2.toml", eeg2["root"], tmp_path / "empty", tmp_path / "o2", code=1)
    assert "no ATM model" in res.stderr and "Traceback" not in res.stderr
    res = _reconstruct("glim_zuco.toml", zuco["root"], eeg2["run"], tmp_path / "o3", code=1)
    assert "glim_zuco" in res.stderr and "sub-01: ATM" in res.stderr
    # a subject the run was not trained for
    res = _reconstruct("atm_things_eeg2.toml", eeg2["root"], eeg2["run"], tmp_path / "o4", "--subject", "sub-03",
                       code=1)
    assert "--subject" in res.stderr and "sub-01, sub-02" in res.stderr and "sub-03" in res.stderr
    res = _reconstruct("glim_zuco.toml", zuco["root"], zuco["run"], tmp_path / "o5", "--subject", "YAD", code=1)
    assert "zuco/YAC, zuco/YAG" in res.stderr and "Traceback" not in res.stderr
    assert not list(tmp_path.glob("o*/sub-*"))
    # a recipe [generate] table with an unknown key fails before any work
    res = _reconstruct("atm_things_eeg2.toml", eeg2["root"], eeg2["run"], tmp_path / "o6", "--set",
                       "generate.stepz=3", code=1)
    assert "stepz" in res.stderr and not list((tmp_path / "o6").glob("sub-*"))
    # NSD still needs exactly one --subject (bad usage)
    nsd = tmp_path / "nsd.toml"
    nsd.write_text('[data]\ndataset = "nsd"\n[decoder]\nname = "mindbridge"\n[generate]\ngenerator = "versatile"\n')
    res = _cli("reconstruct", "--pipeline", nsd, "--data", tmp_path, "--checkpoint", tmp_path, "--out",
               tmp_path / "o7", code=2)
    assert "--subject" in res.stderr


# ------------------------------------------------------------------------------------------- GLIM
def _zuco_test(root, code):
    """The test sentences of a subject as the tiny recipe reads them (16 channels, 16 Hz, 0.5-4 s, RAW)."""
    from neurodecode.data import load_zuco

    tr = load_zuco(root, code, version=2, task="NR", resample=16.0)
    dur = tr.lengths / 16.0
    tr = tr.subset((tr.split == "test") & (dur >= 0.5) & (dur <= 4.0))
    X = np.zeros((len(tr), 16, 64), np.float32)
    X[:, :, :tr.X.shape[2]] = tr.X[:, :16, :64]
    return X, tr.lengths, list(tr.texts), [int(i) for i in tr.stimulus_ids]


def test_glim_sentences_references_resume_and_text_evaluation(zuco, tmp_path):
    from neurodecode.metrics import evaluate_text
    from neurodecode.metrics._sources import read_text_truth
    from neurodecode.models import load_decoder

    out = tmp_path / "glim"
    summary = _reconstruct("glim_zuco.toml", zuco["root"], zuco["run"], out, "--json")
    model = load_decoder(zuco["run"])
    n_total, refs_by_hand = 0, {}
    for code in ("YAC", "YAG"):
        X, lengths, texts, idx = _zuco_test(zuco["root"], code)
        n_total += len(idx)
        files = sorted((out / f"sub-{code}" / "recon").iterdir())
        assert [f.name for f in files] == [f"sub-{code}_stim-NR{i:04d}_desc-glimzuco_recon.txt" for i in sorted(idx)]
        # from the EEG alone, greedy, with the recipe's max_new_tokens (8) and batch size (4)
        hand = model.generate(X, lengths, task="NR", dataset="zuco2", subject=f"zuco/{code}", max_new_tokens=8,
                              batch_size=4)
        assert [(out / f"sub-{code}" / "recon" / f"sub-{code}_stim-NR{i:04d}_desc-glimzuco_recon.txt")
                .read_text().strip() for i in idx] == [h.strip() for h in hand]
        refs_by_hand.update({(code, f"NR{i:04d}"): [t] for i, t in zip(idx, texts)})
    assert any(h.strip() for h in hand)  # the trained tiny model emits characters
    assert summary["n_items"] == summary["n_done"] == n_total > 4 and summary["outputs"] == "text"
    assert read_text_truth(out / "references.tsv") == refs_by_hand  # the sentence read, from the data
    run = json.loads((out / "provenance.json").read_text())["runs"][0]
    assert run["generator"]["teacher_forcing"] is False and run["decoder"]["class"] == "GLIM"

    # resume: a deleted item is redone identically (alone in its batch), the rest untouched
    txts = sorted(out.rglob("*_recon.txt"))
    before = {p: (p.read_text(), p.stat().st_mtime_ns) for p in txts}
    txts[1].unlink()
    again = _reconstruct("glim_zuco.toml", zuco["root"], zuco["run"], out, "--json")
    assert (again["n_done"], again["n_skipped"]) == (1, n_total - 1)
    assert txts[1].read_text() == before[txts[1]][0]
    assert all(p.stat().st_mtime_ns == before[p][1] for p in txts if p != txts[1])

    # one subject at a time into one folder: references.tsv gathers both
    part = tmp_path / "part"
    _reconstruct("glim_zuco.toml", zuco["root"], zuco["run"], part, "--subject", "YAG")
    assert not (part / "sub-YAC").exists() and {k[0] for k in read_text_truth(part / "references.tsv")} == {"YAG"}
    _reconstruct("glim_zuco.toml", zuco["root"], zuco["run"], part, "--subject", "zuco/YAC")
    assert read_text_truth(part / "references.tsv") == refs_by_hand

    # evaluate: the folder's references.tsv is the default truth
    res = _cli("evaluate", "--recons", out, "--json", "--n-boot", "100")
    data = json.loads(res.stdout)
    metrics = ("bleu1", "bleu2", "bleu3", "bleu4", "rouge1_p", "rouge1_r", "rouge1_f", "wer")
    assert set(data) == {*metrics, "n_items", "weights", "metrics_version"} and data["n_items"] == n_total
    for m in metrics:
        e = data[m]
        assert e["ci"][0] <= e["value"] <= e["ci"][1] and e["shuffled"] is not None, m
        assert 0.0 <= e["value"] <= (np.inf if m == "wer" else 1.0), m
    saved = json.loads((out / "metrics.json").read_text())
    hyps = [(out / f"sub-{i.split('/')[0][4:]}" / "recon" / f"{i.replace('/', '_')}_desc-glimzuco_recon.txt")
            .read_text().strip() for i in saved["item_ids"]]
    refs = [refs_by_hand[(i.split("/")[0][4:], i.split("stim-")[1])] for i in saved["item_ids"]]
    ref = evaluate_text(hyps, refs, metrics=list(metrics), n_boot=100)
    for m in metrics:
        assert data[m]["value"] == pytest.approx(ref[m]["value"]) and data[m]["shuffled"] == pytest.approx(
            ref[m]["shuffled"]), m
    html = (out / "report.html").read_text()
    assert "Decoded sentences" in html and "BLEU-1" in html and refs[0][0].split()[1] in html


def test_glim_each_file_gets_its_own_eeg_and_prompts(zuco, tmp_path, monkeypatch):
    # the tiny model says much the same thing for every sentence, so check the plumbing with a
    # decoder that writes out what it was given: rows of RAW EEG, lengths, task / dataset / subject prompts
    from neurodecode.models.glim import GLIM

    def echo(self, X, lengths=None, *, task=None, dataset=None, subject=None, max_new_tokens=None, num_beams=1,
             batch_size=64, **kw):
        X = np.asarray(X)
        assert isinstance(subject, str) and len(task) == len(dataset) == len(X) <= batch_size == 3
        return [f"{subject} {t} {d} {n} {X[i, :, :n].sum():.6e} {X[i, :, n:].any()} {max_new_tokens} {num_beams}"
                for i, (t, d, n) in enumerate(zip(task, dataset, lengths))]

    monkeypatch.setattr(GLIM, "generate", echo)
    out = tmp_path / "echo"
    _reconstruct("glim_zuco.toml", zuco["root"], zuco["run"], out, "--batch-size", "3", "--set",
                 "generate.num_beams=2")
    for code in ("YAG", "YAC"):
        X, lengths, _, idx = _zuco_test(zuco["root"], code)
        for i, x, n in zip(idx, X, lengths):
            text = (out / f"sub-{code}" / "recon" / f"sub-{code}_stim-NR{i:04d}_desc-glimzuco_recon.txt").read_text()
            assert text.strip() == f"zuco/{code} NR zuco2 {n} {x[:, :n].sum():.6e} False 8 2"
