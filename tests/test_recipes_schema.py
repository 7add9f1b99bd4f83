"""The typed recipe schema: one reading of every table for train and reconstruct, every problem at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from neurodecode.errors import ValidationError
from neurodecode.recipes import RUNNERS, load_recipe, validate_recipe

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
ALL = sorted(p.name for p in PIPELINES.glob("*.toml"))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("preset", [None, "tiny"])
def test_every_shipped_recipe_validates(name, preset):
    recipe = validate_recipe(load_recipe(PIPELINES / name, preset=preset))
    assert recipe["decoder"]["name"] in RUNNERS
    # defaults are filled in, so both verbs read the same values
    assert "dataset" in recipe["data"] and "subjects" in recipe["data"]


def _mb(*overrides):
    return load_recipe(PIPELINES / "mindbridge_nsd.toml", preset="tiny", overrides=list(overrides))


def test_misspelt_keys_are_all_refused_at_once_with_close_matches():
    with pytest.raises(ValidationError) as err:
        validate_recipe(_mb("data.subjcts=[1]", "trian.epochs=1", "train.epohcs=2", "decoder.mse_weigth=3.0"))
    msg = str(err.value)
    assert "4 problem(s)" in msg
    assert "data.subjcts" in msg and "'subjects'" in msg
    assert "trian" in msg and "'train'" in msg
    assert "train.epohcs" in msg and "'epochs'" in msg
    assert "decoder.mse_weigth" in msg and "'mse_weight'" in msg
    assert "nothing was run" in msg


@pytest.mark.parametrize("override, where, hint", [
    ("train.batch_size=8.5", "train.batch_size", "whole number"),
    ('train.lr="3e-4"', "train.lr", "without quotes"),
    ("data.average_test_repeats=3", "data.average_test_repeats", "true or false"),
    ('data.beta_version="b4"', "data.beta_version", "'b1', 'b2', 'b3'"),
    ('latents.dtype="float64"', "latents.dtype", "float16"),
])
def test_wrong_types_get_a_teaching_error(override, where, hint):
    with pytest.raises(ValidationError) as err:
        validate_recipe(_mb(override))
    assert where in str(err.value) and hint in str(err.value)


def test_none_and_all_are_normalised_in_one_place():
    r = validate_recipe(_mb('data.zscore="none"', 'data.sessions="all"', 'data.betas="b2"', 'data.nan_policy="zero"'))
    assert r["data"]["zscore"] is None
    assert r["data"]["sessions"] is None
    assert r["data"]["beta_version"] == "b2" and "betas" not in r["data"]
    assert r["data"]["nan_policy"] == "zero"
    # a single subject becomes a list; a list stays one
    assert validate_recipe(_mb("data.subjects=3"))["data"]["subjects"] == [3]


def test_unknown_decoder_and_dataset_mismatch():
    with pytest.raises(ValidationError, match="decoder.name"):
        validate_recipe(_mb('decoder.name="mindbrige"'))
    with pytest.raises(ValidationError, match="data.dataset"):
        validate_recipe(_mb('data.dataset="zuco"'))


def test_unknown_section_and_latent_table():
    with pytest.raises(ValidationError) as err:
        validate_recipe(_mb("generat.steps=3", "latents.imagetokens.space=\"x\""))
    msg = str(err.value)
    assert "generat" in msg and "'generate'" in msg
    assert "latents.imagetokens" in msg and "'image_tokens'" in msg


def test_validation_is_idempotent_and_keeps_the_source():
    once = validate_recipe(_mb())
    assert validate_recipe(once) == once
    assert once["_source"]["name"] == "mindbridge_nsd" and once["_source"]["preset"] == "tiny"
