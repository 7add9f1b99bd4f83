"""The unCLIP generator's additions for NVL: a text prompt per item and the ``(1 - beta) z + beta noise`` start."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodecode._core.errors import ValidationError
from neurodecode.generate import get_generator
from neurodecode.generate._base import item_generators, randn_items

RNG = np.random.default_rng(0)
LAT = {"clip_image_embeds": RNG.standard_normal((3, 24)).astype(np.float32)}
VAE = RNG.standard_normal((3, 4, 16, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def gen():
    return get_generator("unclip", weights="tiny").load()


def test_no_prompt_is_the_empty_prompt_and_a_prompt_changes_only_its_item(gen):
    plain = gen.generate(LAT, seeds=[3, 4, 5], steps=2)
    np.testing.assert_array_equal(plain, gen.generate(LAT, seeds=[3, 4, 5], steps=2, prompts=["", "", ""]))
    prompts = ["a red bus on a street", "", "two cats on a sofa"]
    said = gen.generate(LAT, seeds=[3, 4, 5], steps=2, prompts=prompts, batch_size=2)
    diff = np.abs(said.astype(int) - plain).reshape(3, -1).max(1)
    assert diff[0] > 5 and diff[2] > 5 and diff[1] == 0
    other = gen.generate(LAT, seeds=[3, 4, 5], steps=2, prompts=["a blue boat", "", "two cats on a sofa"])
    assert np.abs(other[0].astype(int) - said[0]).max() > 5 and np.abs(other[2].astype(int) - said[2]).max() <= 1
    single = np.concatenate([gen.generate({k: v[i:i + 1] for k, v in LAT.items()}, seeds=[3 + i], steps=2,
                                          prompts=[p]) for i, p in enumerate(prompts)])
    assert np.abs(single.astype(int) - said).max() <= 1  # batched == one at a time
    with pytest.raises(ValidationError, match="prompts"):
        gen.generate(LAT, seeds=0, steps=2, prompts=["only one"])
    with pytest.raises(ValidationError, match="prompts"):
        gen.generate(LAT, seeds=0, steps=2, prompts="not a list")


def test_init_mix_starts_from_the_papers_mixture(gen):
    """beta = 1 is pure noise over the full schedule (= no VAE latent); the start is (1 - beta) z + beta noise."""
    noise_only = gen.generate(LAT, seeds=[1, 2, 3], steps=3, height=32, width=32)
    beta_one = gen.generate({**LAT, "vae_latents": VAE}, seeds=[1, 2, 3], steps=3, init_mix=1.0)
    assert np.abs(beta_one.astype(int) - noise_only).max() <= 1
    mixed = gen.generate({**LAT, "vae_latents": VAE}, seeds=[1, 2, 3], steps=3, init_mix=0.5)
    img2img = gen.generate({**LAT, "vae_latents": VAE}, seeds=[1, 2, 3], steps=3, strength=0.5)
    assert np.abs(mixed.astype(int) - noise_only).mean() > 1 and np.abs(mixed.astype(int) - img2img).mean() > 1
    sched = type(gen.components_["scheduler"]).from_config(gen.components_["scheduler"].config)
    start, timesteps = gen._mixed_start(sched, VAE[:2], item_generators([7, 8]), steps=4, beta=0.93)
    z = torch.from_numpy(VAE[:2]) * gen.components_["vae"].config.scaling_factor
    noise = randn_items((4, 16, 16), item_generators([7, 8]), device="cpu", dtype=torch.float32)
    torch.testing.assert_close(start, 0.07 * z + 0.93 * noise)
    assert len(timesteps) == 4  # the whole schedule, not the last 93 %
    with pytest.raises(ValidationError, match="init_mix"):
        gen.generate({**LAT, "vae_latents": VAE}, seeds=0, steps=2, init_mix=1.5)
