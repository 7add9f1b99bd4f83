"""sd-img2img, sd2-depth and sd-controlnet-depth at their published architectures (random weights, hub layout).

Each loads from a hub-cache fixture written by :func:`neurodecode.testing.write_hub_fixture` through both routes
(``weights=None`` and ``weights=<snapshot folder>``) and runs img2img at 64 px. Marked ``realarch`` and ``slow``;
the depth is ``NEURODECODE_REALARCH_DEPTH`` layers per block (default 1; ``full`` on a GPU machine).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from neurodecode.generate import get_generator
from neurodecode.testing import write_hub_fixture

_DEPTH_ENV = os.environ.get("NEURODECODE_REALARCH_DEPTH", "1")
DEPTH = None if _DEPTH_ENV == "full" else int(_DEPTH_ENV)
DEVICE = os.environ.get("NEURODECODE_REALARCH_DEVICE", "cpu")

RNG = np.random.default_rng(0)
CASES = [
    ("sd-img2img", ["sd-v1-4"], {"vae_latents": RNG.standard_normal((1, 4, 5, 5)).astype(np.float32),
                                 "clip_text_tokens": RNG.standard_normal((1, 77, 768)).astype(np.float32)},
     {"clip_text_tokens": (None, 77, 768)}),
    ("sd2-depth", ["sd2-depth"], {"vae_latents": RNG.standard_normal((1, 4, 5, 5)).astype(np.float32),
                                  "captions": ["a dog on a sofa"], "depth_maps": RNG.random((1, 24, 24))},
     {"clip_text_tokens": (None, 77, 1024), "depth_maps": (None, None, None)}),
    ("sd-controlnet-depth", ["lowlevel", "sd-controlnet-depth"],
     {"init_images": RNG.integers(0, 256, (1, 40, 48, 3)).astype(np.float32), "captions": ["a red bus"],
      "depth_maps": RNG.random((1, 20, 20))},
     {"clip_text_tokens": (None, 77, 768), "depth_maps": (None, None, None)}),
]


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    return root


@pytest.mark.parametrize(("name", "fixtures", "inputs", "expects"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.realarch
@pytest.mark.slow
def test_real_architecture_both_routes(name, fixtures, inputs, expects, hub_cache):
    snaps = [write_hub_fixture(f, hub_cache, layout="cache", depth=DEPTH, variant="full") for f in fixtures]
    outs = []
    for weights in (None, str(snaps[0])):
        gen = get_generator(name, weights=weights, device=DEVICE).load()
        assert {k: v for k, v in gen.expects.items() if k != "vae_latents"} == expects
        assert gen.expects["vae_latents"] == (None, 4, None, None)
        sched = gen.components_["scheduler"].config  # SD's DDIM conventions, whatever the repository's PNDM config says
        assert type(gen.components_["scheduler"]).__name__ == "DDIMScheduler"
        assert sched.steps_offset == 1 and not sched.clip_sample and not sched.set_alpha_to_one
        out = gen.generate(inputs, seeds=0, steps=2, size=64)
        assert out.shape == (1, 64, 64, 3) and out.dtype == np.uint8
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])  # the same files through either route


LEAN = [("sd-img2img", "sd-v1-4", None), ("sd2-depth", "sd2-depth", None),
        ("sd-controlnet-depth", "lowlevel", "sd-controlnet-depth")]


@pytest.mark.parametrize(("name", "main", "extra"), LEAN, ids=[c[0] for c in LEAN])
def test_declared_files_are_exactly_enough(tmp_path, name, main, extra):
    """A folder holding only the declared files (one alternative per group; tiny-size fixtures in the real layout)
    loads and runs: what ``neurodecode download`` fetches is what the loader reads."""
    import shutil

    from neurodecode.generate import generator_class
    from neurodecode.io.hub import group_choice

    def lean(component, groups, where):
        full = write_hub_fixture(component, tmp_path / f"full-{where}", variant="fp16", size="tiny")
        for group in groups:
            choice = group_choice(full, group)
            assert choice is not None, group
            (tmp_path / where / choice).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(full / choice, tmp_path / where / choice)
        return str(tmp_path / where)

    cls = generator_class(name)
    kw = {}
    if extra is not None:
        art = cls.extra_artefacts("bfloat16")[0]
        kw["controlnet"] = lean(extra, art.files, "controlnet")
    gen = get_generator(name, weights=lean(main, cls.hub_files("bfloat16"), "main"), dtype="bfloat16", **kw).load()
    rng = np.random.default_rng(0)
    inputs = {"vae_latents": rng.standard_normal((1, 4, 6, 6)).astype(np.float32), "captions": ["a cat"],
              "depth_maps": rng.random((1, 12, 12)).astype(np.float32)}
    if "depth_maps" not in gen.expects:
        del inputs["depth_maps"]
    out = gen.generate(inputs, seeds=0, steps=2)
    assert out.shape == (1, 32, 32, 3)
