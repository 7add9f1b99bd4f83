"""`neurodecode evaluate` on decoded sentences: pairing with references.tsv / JSON, metrics, controls, report."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from neurodecode.cli import app
from neurodecode.metrics import evaluate_text

runner = CliRunner()

REFS = {  # (sub, stim) -> the sentence read
    ("01", "NR0003"): "the old farmer packed a black dress",
    ("01", "NR0011"): "a tired doctor ironed the blue shirt",
    ("01", "00012"): "little boys painted red sneakers at noon",
    ("02", "NR0003"): "the old farmer packed a black dress",
    ("02", "SR0007"): "she sold her bike before the long trip",
    ("02", "SR0020"): "rain fell on the quiet harbour all night",
    ("02", "NR0011"): "a tired doctor ironed the blue shirt",
}
HYPS = {
    ("01", "NR0003"): "the old farmer packed a red dress",
    ("01", "NR0011"): "a tired doctor ironed the blue <b>coat</b>",
    ("01", "00012"): "little boys painted red sneakers",
    ("02", "NR0003"): "an old farmer packed a black dress",
    ("02", "SR0007"): "she sold the bike before a trip",
    ("02", "SR0020"): "rain fell on the harbour",
    ("02", "NR0011"): "tired doctors ironed blue shirts",
}
METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "rouge1_p", "rouge1_r", "rouge1_f", "wer")


def _derivative(tmp_path, refs=REFS, tsv=True):
    out = tmp_path / "recon"
    for (sub, stim), text in HYPS.items():
        d = out / f"sub-{sub}" / "recon"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"sub-{sub}_stim-{stim}_desc-glimzuco_recon.txt").write_text(text + "\n")
    if tsv:  # rows in another order than the files; "12" pairs with stim-00012
        rows = [f"{sub}\t{'12' if stim == '00012' else stim}\tzuco/X\t{text}" for (sub, stim), text in
                reversed(list(refs.items()))]
        (out / "references.tsv").write_text("sub\tstim\tsubject\treference\n" + "\n".join(rows) + "\n")
    return out


def _by_hand(refs):
    keys = sorted(HYPS, key=lambda k: f"sub-{k[0]}/sub-{k[0]}_stim-{k[1]}")  # the files' order
    return [HYPS[k] for k in keys], [refs[k] for k in keys]


def test_text_outputs_pair_with_references_tsv_and_score_above_control(tmp_path):
    out = _derivative(tmp_path)
    res = runner.invoke(app, ["evaluate", "--recons", str(out), "--json", "--n-boot", "200"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert set(data) == {*METRICS, "n_items", "weights", "metrics_version"} and data["n_items"] == 7
    hyps, refs = _by_hand(REFS)
    ref = evaluate_text(hyps, refs, metrics=list(METRICS), n_boot=200)
    for m in METRICS:
        assert data[m]["value"] == pytest.approx(ref[m]["value"]) and data[m]["ci"] == pytest.approx(ref[m]["ci"]), m
        assert data[m]["ci"][0] <= data[m]["value"] <= data[m]["ci"][1]
    # the true pairing beats other items' references (the shuffled-pairing control)
    assert data["bleu1"]["value"] > data["bleu1"]["shuffled"] + 0.3
    assert data["rouge1_f"]["value"] > data["rouge1_f"]["shuffled"] + 0.3
    assert data["wer"]["value"] < data["wer"]["shuffled"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["outputs"] == "text" and saved["item_ids"][0] == "sub-01/stim-12"
    assert saved["hypotheses"][0] == HYPS[("01", "00012")] and saved["references"][0] == [REFS[("01", "00012")]]
    assert saved["provenance"]["truth"].startswith("file:") and saved["provenance"]["truth"].endswith("references.tsv")
    html = (out / "report.html").read_text()
    assert "Decoded sentences" in html and "&lt;b&gt;coat&lt;/b&gt;" in html and "<b>coat</b>" not in html
    assert "BLEU-1" in html and "WER (lower is better)" in html

    plain = runner.invoke(app, ["evaluate", "--recons", str(out), "--n-boot", "50", "--metrics", "bleu1,wer",
                                "--out", str(tmp_path / "elsewhere")])
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.splitlines()[0].startswith("bleu1") and "shuffled" in plain.stdout
    assert (tmp_path / "elsewhere" / "report.html").is_file()


def test_json_truth_with_paraphrases_and_subject_keys(tmp_path):
    out = _derivative(tmp_path, tsv=False)
    para = {f"stim-{stim}" if sub == "01" else f"sub-{sub}/stim-{stim}": [text, text.replace("the ", "a ")]
            for (sub, stim), text in REFS.items() if not (sub == "02" and stim == "NR0003")}
    truth = tmp_path / "para.json"
    truth.write_text(json.dumps(para))  # sub-02/stim-NR0003 falls back to the subject-free stim-NR0003
    res = runner.invoke(app, ["evaluate", "--recons", str(out), "--truth", str(truth), "--json", "--n-boot", "50",
                              "--metrics", "bleu1,rouge1_f"])
    assert res.exit_code == 0, res.output
    refs = {k: [v, v.replace("the ", "a ")] for k, v in REFS.items()}
    hyps, lists = _by_hand(refs)
    ref = evaluate_text(hyps, lists, metrics=["bleu1", "rouge1_f"], n_boot=50)
    data = json.loads(res.stdout)
    assert data["bleu1"]["value"] == pytest.approx(ref["bleu1"]["value"])
    assert json.loads((out / "metrics.json").read_text())["protocol"]["n_references"] == 2


def test_text_evaluation_errors(tmp_path):
    out = _derivative(tmp_path, refs={k: v for k, v in REFS.items() if k != ("02", "SR0020")})
    miss = runner.invoke(app, ["evaluate", "--recons", str(out)])
    assert miss.exit_code == 1 and "truth" in miss.stderr and "sub-02/stim-SR0020" in miss.stderr
    assert "Traceback" not in miss.stderr
    mixed = runner.invoke(app, ["evaluate", "--recons", str(out), "--metrics", "bleu1,ssim"])
    assert mixed.exit_code == 2 and "mixed" in mixed.stderr
    unknown = runner.invoke(app, ["evaluate", "--recons", str(out), "--metrics", "bleu9"])
    assert unknown.exit_code == 2 and "bleu9" in unknown.stderr and "wer" in unknown.stderr
    (tmp_path / "bad.tsv").write_text("stim\tsentence\nNR0003\tx\n")
    bad = runner.invoke(app, ["evaluate", "--recons", str(out), "--truth", str(tmp_path / "bad.tsv")])
    assert bad.exit_code == 1 and "'reference'" in bad.stderr
    (tmp_path / "images").mkdir()
    no_truth = runner.invoke(app, ["evaluate", "--recons", str(tmp_path / "images")])
    assert no_truth.exit_code == 2 and "--truth" in no_truth.stderr


def test_glim_protocol_with_a_paraphrase_table(tmp_path):
    out = _derivative(tmp_path)
    # a user-supplied paraphrase table keyed by the sentence read (e.g. GLIM's, exported to CSV)
    table = tmp_path / "para.tsv"
    rows = [f"{text}\t{text.replace('the ', 'a ')}\t{' '.join(text.split()[::-1])}" for text in REFS.values()]
    table.write_text("sentence\tparaphrase_1\tparaphrase_2\n" + "\n".join(rows) + "\n")
    res = runner.invoke(app, ["evaluate", "--recons", str(out), "--protocol", "glim", "--paraphrases", str(table),
                              "--json", "--n-boot", "50", "--metrics", "bleu1,bleu2,rouge1_f,wer"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    keys = {"bleu1@paraphrases", "bleu1@raw", "bleu2@paraphrases", "bleu2@raw", "rouge1_f@paraphrases",
            "rouge1_f@raw", "wer@raw"}
    assert keys <= set(data)
    hyps, lists = _by_hand({k: [v, v.replace("the ", "a "), " ".join(v.split()[::-1])] for k, v in REFS.items()})
    ref = evaluate_text(hyps, lists, metrics="bleu1,bleu2,rouge1_f,wer", protocol="glim", n_boot=50)
    for k in keys:
        assert data[k]["value"] == pytest.approx(ref[k]["value"]), k
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["protocol"]["name"] == "glim" and saved["provenance"]["paraphrases"].endswith("para.tsv")
    html = (out / "report.html").read_text()
    assert "BLEU-1 @paraphrases" in html and "GLIM (released test outputs)" in html
    plain = runner.invoke(app, ["evaluate", "--recons", str(out), "--protocol", "glim", "--n-boot", "20",
                                "--metrics", "bleu1"])  # no paraphrases: the @paraphrases row says why
    assert plain.exit_code == 0, plain.output
    assert "no paraphrases" in plain.stdout
    bad = runner.invoke(app, ["evaluate", "--recons", str(out), "--protocol", "mindeye2"])
    assert bad.exit_code == 2 and "corpus or glim" in bad.stderr
