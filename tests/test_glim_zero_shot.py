"""GLIM's zero-shot classification, wired through the recipe: labels read from ZuCo's task_materials tables.

The runner's numbers are checked against an independent computation from the reference's recipe
(model/glim.py: label sentences "Relation classification: It is about <label>." embedded as given,
cosine similarity with the EEG embedding, accuracy over the labelled sentences).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from neurodecode.models import load_decoder
from neurodecode.recipes import load_recipe, train_from_recipe
from neurodecode.recipes._data import load_zuco_for_recipe
from neurodecode.simulate.text import simulate_zuco

RECIPE = Path(__file__).resolve().parents[1] / "pipelines" / "glim_zuco.toml"
#: GLIM's relation words, in its class order (data/__STEP2_text_variants_gen.ipynb)
RELATIONS = ["awarding", "education", "employment", "foundation", "job title", "nationality",
             "political affiliation", "visit", "marriage"]


def test_zero_shot_relation_and_corpus_scores_match_an_independent_computation(tmp_path):
    sim = simulate_zuco(tmp_path / "sim", subjects=("YAC",), task="TSR", n_sentences=60, space="minilm-l6-tiny")
    assert sorted((sim.root / "task_materials").glob("tsr_*.csv"))  # written as the release: one table per type
    recipe = load_recipe(RECIPE, preset="tiny", overrides=['data.tasks=["TSR"]', 'data.subjects=["zuco/YAC"]',
                                                            'evaluate.zero_shot=["relation", "corpus"]'])
    run = tmp_path / "run"
    train_from_recipe(recipe, sim.root, run, max_steps=2, device="cpu")
    metrics = json.loads((run / "metrics.json").read_text())
    scores = metrics.get("metrics", metrics)

    table = load_zuco_for_recipe(sim.root, recipe["data"], splits=("test",))
    rel = table["relation"]
    assert (rel != "").all() and set(rel) <= set(RELATIONS)  # every simulated TSR sentence has its type
    model = load_decoder(run)
    emb = model.embed_eeg(table["X"], table["lengths"], task=table["task"].tolist(),
                          dataset=table["dataset"].tolist(), subject=table["subject"].tolist())
    cand = model.embed_texts([f"Relation classification: It is about {r}." for r in RELATIONS], template="{}")
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    c = cand / np.linalg.norm(cand, axis=1, keepdims=True)
    order = np.argsort(-(e @ c.T), axis=1, kind="stable")
    truth = np.array([RELATIONS.index(r) for r in rel])
    rank = np.argmax(order == truth[:, None], axis=1)
    assert scores["test/zero_shot/relation/n_scored"] == len(rel)
    assert np.isclose(scores["test/zero_shot/relation/top1"], np.mean(rank < 1))
    assert np.isclose(scores["test/zero_shot/relation/top3"], np.mean(rank < 3))
    assert np.isclose(scores["test/zero_shot/relation/chance_top3"], 3 / 9)
    # corpus: TSR biographies are class 1 of ("movie, good or bad", "life experiences, relationship")
    cand = model.embed_texts(["The topic is about: movie, good or bad",
                              "The topic is about: life experiences, relationship"], template="{}")
    c = cand / np.linalg.norm(cand, axis=1, keepdims=True)
    assert np.isclose(scores["test/zero_shot/corpus/top1"], np.mean((e @ c.T).argmax(1) == 1))
