"""Contracts every registered component keeps, parametrised over the registries themselves.

- every decoder of ``DECODERS``: built tiny, fed asymmetric input, returns ``predict_latents`` keys and
  shapes equal to what it declares (``targets`` + its config), and survives a save/load round trip;
- every generator of ``GENERATORS``: built tiny, fed latents of the shapes it ``expects``, returns uint8
  images (or one caption per item);
- every tiny latent space: returns features of its declared ``shape``, deterministically;
- every estimator: sklearn's ``check_estimator`` (the checks that feed 2-D tabular data do not apply to
  epoched M/EEG or per-subject fMRI input; those must fail with our teaching error, never a traceback).

A completeness test fails when a registered name has no case here, so a new decoder, generator or space
cannot land without its contract.
"""

from __future__ import annotations

import numpy as np
import pytest

from neurodecode.generate import GENERATORS, get_generator
from neurodecode.latents import available_spaces, get_space
from neurodecode.models import DECODERS, decoder_class

RNG = np.random.default_rng(7)


# ------------------------------------------------------------------------------------------- decoders
def _mindbridge():
    from neurodecode.models import MindBridge, MindBridgeConfig

    model = MindBridge(MindBridgeConfig.tiny({"s1": 7, "s2": 9}, text_tokens=[5, 12]))
    return model, RNG.standard_normal((5, 9)).astype(np.float32), {"subject": "s2"}


def _mindeye2():
    from neurodecode.models import MindEye2, MindEye2Config

    model = MindEye2(MindEye2Config.tiny({"s1": 7, "s2": 9}))
    return model, RNG.standard_normal((5, 7)).astype(np.float32), {"subject": "s1", "use_prior": False}


def _brain_diffuser():
    from neurodecode.models import BrainDiffuser, BrainDiffuserConfig

    shapes = {"clip_image_tokens": (3, 8), "clip_text_tokens": (2, 8), "vae_latents": (11,)}
    model = BrainDiffuser(BrainDiffuserConfig.tiny(n_voxels=9, target_shapes=shapes, subject="s1"))
    X = RNG.standard_normal((23, 9)).astype(np.float32)
    model.fit(X, {k: RNG.standard_normal((23, *s)) for k, s in shapes.items()})
    return model, X[:5], {"subject": "s1"}


def _atm():
    from neurodecode.models import ATM, ATMConfig

    model = ATM(ATMConfig.tiny())
    c = model.config
    return model, RNG.standard_normal((5, c.n_channels, c.n_times)).astype(np.float32), {}


def _glim():
    from neurodecode.models import GLIM, GLIMConfig

    model = GLIM(GLIMConfig.tiny(subjects=["zuco/YAC"]))
    c = model.config
    X = RNG.standard_normal((5, c.n_channels, c.max_times)).astype(np.float32)
    return model, X, {"subject": "zuco/YAC", "lengths": [c.max_times, 30, 17, 9, c.max_times]}


def _simpleconv():
    from neurodecode.models import SimpleConv, SimpleConvConfig

    model = SimpleConv(SimpleConvConfig.tiny(n_channels=7, n_times=9, subjects=["meg-masc/sub-01"]))
    return model, RNG.standard_normal((5, 7, 9)).astype(np.float32), {"subject": "meg-masc/sub-01"}


def _meg_brain_module():
    from neurodecode.models import MEGBrainModule, MEGBrainModuleConfig

    model = MEGBrainModule(MEGBrainModuleConfig.tiny(subjects=["s1", "s2"]))
    c = model.config
    return model, RNG.standard_normal((5, c.n_channels, c.n_times)).astype(np.float32), {"subject": "s2"}


def _sttm():
    from neurodecode.models import STTM, STTMConfig

    model = STTM(STTMConfig.tiny({"s1": 7, "s2": 9}))
    return model, RNG.standard_normal((5, 9)).astype(np.float32), {"subject": "s2", "use_prior": False}


def _nvl():
    from neurodecode.models import NVL, NVLConfig

    model = NVL(NVLConfig.tiny(n_patches=7, patch_dim=8))
    return model, RNG.standard_normal((5, 7, 8)).astype(np.float32), {}


def _wave():
    from neurodecode.models.wave import WAVE, WAVEConfig

    return WAVE(WAVEConfig.tiny()), RNG.standard_normal((5, 7, 6)).astype(np.float32), {}


BUILDERS = {"wave": _wave, "simpleconv": _simpleconv, "mindbridge": _mindbridge, "mindeye2": _mindeye2,
            "brain_diffuser": _brain_diffuser, "atm": _atm, "glim": _glim, "meg_brain_module": _meg_brain_module,
            "sttm": _sttm, "nvl": _nvl}


def _declared_shapes(model) -> dict[str, tuple[int, ...]]:
    """What the decoder declares it predicts (per item), from its class declaration and its config."""
    c = model.config
    declared = getattr(type(model), "targets", None)
    if declared is not None:  # MindBridge, MindEye2: batch key -> (config field, latent key, required)
        out = {}
        for t in declared.values():
            shape = getattr(c, t.config_field)
            if shape is not None:
                out[t.latent_key or c.target_key] = tuple(int(s) for s in shape)
        return out
    if hasattr(c, "target_shapes"):  # Brain-Diffuser: one ridge per latent space
        return {k: tuple(int(s) for s in v) for k, v in c.target_shapes.items()}
    if type(model).__name__ == "SimpleConv":  # speech features over the segment
        return {"speech_features": (int(c.out_dim), int(c.n_times))}
    if type(model).__name__ == "WAVE":  # the fMRI embedding in the CLIP image space
        return {"clip_image_embeds": (int(c.clip_dim),)}
    if type(model).__name__ == "MEGBrainModule":  # the regressed image embedding
        return {c.latent_key: (int(c.latent_dim),)}
    if type(model).__name__ == "ATM":  # the projection into the image space
        return {"clip_image_embeds": (int(c.proj_dim),)}
    return {"text_embeds": (int(model.text_model.config.d_model),)}  # GLIM: its own T5's width


def test_every_registered_decoder_has_a_contract_case():
    assert set(BUILDERS) == set(DECODERS)


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_decoder_predicts_what_it_declares_and_round_trips(name, tmp_path):
    model, X, kwargs = BUILDERS[name]()
    assert isinstance(model, decoder_class(name))
    model.eval()
    pred = model.predict_latents(X, **kwargs)
    want = _declared_shapes(model)
    assert want and {k: v.shape[1:] for k, v in pred.items() if k in want} == want
    assert all(isinstance(v, np.ndarray) and len(v) == len(X) and np.isfinite(v).all() for v in pred.values())
    model.save_pretrained(tmp_path / name)
    again = decoder_class(name).from_pretrained(tmp_path / name)
    again.eval()
    back = again.predict_latents(X, **kwargs)
    assert back.keys() == pred.keys()
    for k in pred:
        np.testing.assert_allclose(back[k], pred[k], rtol=1e-5, atol=1e-6, err_msg=f"{name}:{k}")


# ----------------------------------------------------------------------------------------- generators
GENERATOR_KWARGS = {"retrieval": {"corpus": ["a cat on a mat", "two dogs", "a red car"]}}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generator_consumes_what_it_expects(name):
    gen = get_generator(name, weights="tiny", **GENERATOR_KWARGS.get(name, {}))
    gen.load()
    expects = gen.expects
    assert expects, f"{name} declares no input"
    latents = {k: RNG.standard_normal((2, *[s or 8 for s in shape[1:]])).astype(np.float32)
               for k, shape in expects.items()}
    gen.check_latents(latents)
    out = gen.generate(latents, seeds=[0, 1], steps=1)
    if isinstance(out, np.ndarray) and out.ndim == 3:  # depth maps (dpt-depth): float in [-1, 1]
        assert out.shape[0] == 2 and np.issubdtype(out.dtype, np.floating) and np.isfinite(out).all()
        assert out.min() >= -1 and out.max() <= 1
    elif isinstance(out, np.ndarray):
        assert out.dtype == np.uint8 and out.ndim == 4 and out.shape[0] == 2 and out.shape[-1] == 3
    else:
        assert len(out) == 2 and all(isinstance(t, str) for t in out)
    wrong = {k: v[:, :1] if v.ndim > 1 else v for k, v in latents.items()}  # a wrong space is refused
    if any(s is not None and s != 1 for shape in expects.values() for s in shape[1:2]):
        with pytest.raises(ValueError):
            gen.check_latents(wrong)


# ------------------------------------------------------------------------------------- latent spaces
TINY_SPACES = available_spaces(tiny=True)


def test_every_space_has_a_tiny_twin():
    # clip-custom is the user's own open_clip architecture: its "tiny" is whatever config the user gives
    real = set(available_spaces(tiny=False)) - {"clip-custom"}
    assert real and {f"{n}-tiny" for n in real} <= set(TINY_SPACES)


@pytest.mark.parametrize("name", TINY_SPACES)
def test_tiny_space_returns_its_declared_shape_deterministically(name):
    space = get_space(name)
    if space.modality == "image":
        stimuli = RNG.integers(0, 256, (3, 40, 36, 3), dtype=np.uint8)
        a, b = space.encode_images(stimuli), space.encode_images(stimuli[::-1])[::-1]
    else:
        stimuli = ["a cat on a mat", "two dogs", "a red car"]
        a, b = space.encode_texts(stimuli), space.encode_texts(stimuli[::-1])[::-1]
    assert a.shape == (3, *space.shape) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # an item's features do not depend on its batch


# ----------------------------------------------------------------------------------------- estimators
def _estimators():
    from neurodecode.estimators import ATMDecoder, NeuralDecoder, RidgeDecoder

    return {"RidgeDecoder": RidgeDecoder(), "NeuralDecoder": NeuralDecoder("mindbridge", epochs=1, batch_size=4),
            "ATMDecoder": ATMDecoder(epochs=1, batch_size=4)}


def test_every_public_estimator_has_a_contract_case():
    import neurodecode.estimators as est

    assert set(est.__all__) == set(_estimators())


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ["RidgeDecoder", "NeuralDecoder", "ATMDecoder"])
def test_sklearn_check_estimator(name):
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(_estimators()[name], on_fail=None)
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    # the API etiquette holds for all: __init__ only stores, params round-trip, clone, repr
    assert {"check_no_attributes_set_in_init", "check_get_params_invariance", "check_set_params",
            "check_parameters_default_constructible", "check_estimator_cloneable"} <= passed, passed
    failed = [r for r in results if r["status"] == "failed"]
    if name == "RidgeDecoder":  # takes 2-D arrays: every check applies
        assert not failed, [(r["check_name"], str(r["exception"])[:200]) for r in failed]
        return
    # epoched M/EEG (n, channels, times) or per-subject fMRI with target dicts: sklearn's tabular checks
    # do not apply; each must be refused with our teaching message (parameter, expected, got, fix)
    from neurodecode.errors import NeurodecodeError

    for r in failed:
        chain, exc = [], r["exception"]
        while exc is not None and len(chain) < 5:
            chain.append(exc)
            exc = exc.__cause__ or exc.__context__
        msg = " ".join(map(str, chain))
        ours = any(isinstance(e, NeurodecodeError) for e in chain) or any(
            f"raised {cls}" in msg for cls in ("ShapeMismatchError", "ValidationError"))
        assert ours and "expected" in msg, (r["check_name"], msg[:300])
