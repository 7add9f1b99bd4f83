import numpy as np
import pytest

from neurodecode._core.errors import ShapeMismatchError
from neurodecode.metrics import noise_input_control, noise_inputs


def test_noise_inputs_match_channel_statistics_and_keep_padding():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(7, 8, 9)) * np.arange(1, 9)[None, :, None] + 5
    lengths = np.array([9, 9, 9, 9, 9, 9, 4])
    X[6, :, 4:] = 0
    noise = noise_inputs(X, lengths=lengths, random_state=1)
    assert noise.shape == X.shape and noise.dtype == X.dtype
    assert np.all(noise[6, :, 4:] == 0)
    valid = np.arange(9)[None, :] < lengths[:, None]
    big = noise_inputs(np.repeat(X, 200, axis=0), lengths=np.repeat(lengths, 200), random_state=2)
    v = np.broadcast_to(np.repeat(valid, 200, axis=0)[:, None, :], big.shape)
    std = np.array([big[:, c][v[:, c]].std() for c in range(8)])
    ref = np.array([X[:, c][np.broadcast_to(valid, (7, 9))].std() for c in range(8)])
    np.testing.assert_allclose(std, ref, rtol=0.1)
    assert not np.allclose(noise_inputs(X, random_state=1), noise_inputs(X, random_state=2))
    with pytest.raises(ShapeMismatchError):
        noise_inputs(np.zeros((7, 8)))


def test_noise_control_flags_a_decoder_that_ignores_the_brain_and_one_that_reads_it():
    refs = ["the red coat is warm", "a small bag on a chair", "she wears blue shoes", "an old dress hangs here"]
    X = np.stack([np.full((3, 5), float(i)) for i in range(4)])

    def reads_brain(x):  # decodes the sentence from the (integer) signal; noise gives garbage indices
        return [refs[int(round(v))] if 0 <= round(v) < 4 and abs(v - round(v)) < 1e-9 else "noise noise"
                for v in x[:, 0, 0]]

    def ignores_brain(x):
        return ["a small coat"] * len(x)

    good = noise_input_control(reads_brain, X, refs, metrics=("bleu1", "wer"), n_boot=50)
    assert good["beats_noise"] == {"bleu1": True, "wer": True}
    assert good["brain"]["bleu1"]["value"] == pytest.approx(1.0)
    flat = noise_input_control(ignores_brain, X, refs, metrics=("bleu1",), n_boot=50)
    assert flat["beats_noise"] == {"bleu1": False}
    assert flat["hypotheses"] == flat["noise_hypotheses"]
