"""Speech spaces: wav2vec2-xlsr-53 (layers 14-18 of transformers' own hidden states), mel, cache, windows."""

import numpy as np
import pytest

from neurodecode._core.errors import ValidationError
from neurodecode.latents.wav2vec2 import (
    TINY_WAV2VEC2_CONFIG,
    WAV2VEC2_XLSR53_CONFIG,
    SpeechFeatureCache,
    get_speech_space,
    mel_filterbank,
    speech_windows,
)

SR = 16000


def _wave(seconds=1.3, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def test_tiny_wav2vec2_is_the_mean_of_transformers_hidden_states_14_to_18():
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    space = get_speech_space("wav2vec2-xlsr-53-tiny", rate=120.0)
    assert space.dim == 20 and space.dim != get_speech_space("mel-tiny").dim
    x = _wave()
    feats = space.encode(x, SR)
    n_out = int(round(len(x) / SR * 120))
    assert feats.shape == (20, n_out) and feats.dtype == np.float32
    # independent: a fresh model with the same seed and config, normalised input, hidden_states[14..18]
    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config(**TINY_WAV2VEC2_CONFIG)).eval()
    norm = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    with torch.no_grad():
        hs = model(torch.tensor(norm)[None], output_hidden_states=True).hidden_states
    assert len(hs) == 19  # embeddings + 18 layers
    ref = torch.stack(hs[14:19]).mean(0)[0].numpy().T  # (dim, frames at ~49.9 Hz)
    assert ref.shape[1] == 64  # 1.3 s at 16 kHz through strides 5*2^6 = 320 and the kernels
    idx = np.floor(np.arange(n_out) * ref.shape[1] / n_out).astype(int)  # torch nearest interpolation
    np.testing.assert_allclose(feats, ref[:, idx], rtol=1e-4, atol=1e-5)
    ref_t = torch.nn.functional.interpolate(torch.tensor(ref)[None], n_out)[0].numpy()
    np.testing.assert_allclose(feats, ref_t, rtol=1e-4, atol=1e-5)
    lin = get_speech_space("wav2vec2-xlsr-53-tiny", rate=120.0, resample="linear").encode(x, SR)
    ref_l = torch.nn.functional.interpolate(torch.tensor(ref)[None], n_out, mode="linear")[0].numpy()
    np.testing.assert_allclose(lin, ref_l, rtol=1e-4, atol=1e-5)


def test_real_size_wav2vec2_parameter_count_on_meta():
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    with torch.device("meta"):
        model = Wav2Vec2Model(Wav2Vec2Config(**WAV2VEC2_XLSR53_CONFIG))
    n = sum(p.numel() for p in model.parameters())
    # Baevski et al. 2020 (wav2vec 2.0) LARGE: 317 M parameters (with the quantiser, absent from Wav2Vec2Model)
    assert abs(n - 317e6) / 317e6 < 0.015, n
    assert WAV2VEC2_XLSR53_CONFIG["hidden_size"] == 1024 and WAV2VEC2_XLSR53_CONFIG["num_hidden_layers"] == 24


def test_real_code_path_reads_a_saved_folder(tmp_path):
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(3)
    Wav2Vec2Model(Wav2Vec2Config(**TINY_WAV2VEC2_CONFIG)).save_pretrained(tmp_path / "w2v")
    a = get_speech_space("wav2vec2-xlsr-53", weights=str(tmp_path / "w2v"))
    assert a.weights.startswith("folder:") and a.dim == 20
    x = _wave(0.7)
    torch.manual_seed(3)
    b = Wav2Vec2Model(Wav2Vec2Config(**TINY_WAV2VEC2_CONFIG)).eval()
    with torch.no_grad():
        hs = b(torch.tensor((x - x.mean()) / np.sqrt(x.var() + 1e-7))[None], output_hidden_states=True).hidden_states
    ref = torch.stack(hs[14:19]).mean(0)[0].numpy().T
    f = a.encode(x, SR)
    idx = np.floor(np.arange(f.shape[1]) * ref.shape[1] / f.shape[1]).astype(int)
    np.testing.assert_allclose(f, ref[:, idx], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValidationError, match="layers"):
        get_speech_space("wav2vec2-xlsr-53-tiny", layers=(14, 19))


def test_mel_matches_an_independent_scipy_stft():
    from scipy.signal import stft

    space = get_speech_space("mel", rate=31.25)  # the STFT hop (128 at 16 kHz = 125 Hz) / 4
    x = _wave(1.0).astype(np.float64)
    feats = space.encode(x, SR)
    assert feats.shape == (40, 31)
    xs = (x - x.mean()) / (1e-8 + x.std(ddof=1))
    win = np.hanning(513)[:-1]
    _, _, z = stft(np.pad(xs, 256, mode="reflect"), nperseg=512, noverlap=384, window=win, boundary=None,
                   padded=False, scaling="spectrum")
    power = np.abs(z * win.sum() / np.sqrt((win ** 2).sum())) ** 2  # undo scipy's 1/sum(win): window-normalised
    fb = mel_filterbank(40, 512, SR)
    # HTK mel scale: the band centres are equally spaced in 2595 log10(1 + f / 700) between 0 and 8 kHz
    mel_max = 2595 * np.log10(1 + 8000 / 700)
    centres = 700 * (10 ** (mel_max * np.arange(1, 41) / 41 / 2595) - 1)
    tone = np.sin(2 * np.pi * 1000 * np.arange(SR) / SR)
    loudest = get_speech_space("mel", rate=10.0).encode(tone, SR)[:, 5].argmax()
    assert loudest == np.argmin(np.abs(centres - 1000))
    ref = np.log10(fb @ power + 1e-5)
    idx = np.floor(np.arange(31) * ref.shape[1] / 31).astype(int)
    np.testing.assert_allclose(feats, ref[:, idx], rtol=1e-4, atol=1e-4)


def test_cache_is_per_wav_and_content_keyed(tmp_path):
    from scipy.io import wavfile

    wavfile.write(tmp_path / "a.wav", SR, (_wave(0.5) * 30000).astype(np.int16))
    wavfile.write(tmp_path / "b.wav", SR, (_wave(0.8, 1) * 30000).astype(np.int16))
    space = get_speech_space("mel-tiny")
    cache = SpeechFeatureCache(tmp_path / "cache")
    calls = []
    orig = space.encode
    space.encode = lambda w, sr: calls.append(1) or orig(w, sr)
    f1 = cache.features(space, {"a": tmp_path / "a.wav", "b": tmp_path / "b.wav"})
    assert len(calls) == 2 and f1["a"].shape == (12, 60) and f1["b"].shape == (12, 96)
    f2 = cache.features(space, {"a": tmp_path / "a.wav", "b": tmp_path / "b.wav"})
    assert len(calls) == 2 and np.array_equal(f1["b"], f2["b"])
    wavfile.write(tmp_path / "b.wav", SR, (_wave(0.8, 2) * 30000).astype(np.int16))  # new content: recomputed
    f3 = cache.features(space, {"b": tmp_path / "b.wav"})
    assert len(calls) == 3 and not np.array_equal(f3["b"], f1["b"])


def test_windows_follow_the_150_ms_lag_and_pad_with_zeros():
    f = {"s": np.arange(2 * 50, dtype=np.float32).reshape(2, 50)}  # 2 dims, 50 frames at 10 Hz
    t = speech_windows(f, ["s", "s"], [1.0, 0.1], rate=10.0, tmin=-0.5, n_times=7, offset=0.2)
    # first: starts at (1.0 - 0.5 - 0.2) * 10 = 3 -> frames 3..9
    np.testing.assert_array_equal(t[0], f["s"][:, 3:10])
    # second: starts at (0.1 - 0.7) * 10 = -6 -> six zero frames, then frame 0
    np.testing.assert_array_equal(t[1][:, :6], 0)
    np.testing.assert_array_equal(t[1][:, 6], f["s"][:, 0])


@pytest.mark.slow
@pytest.mark.realarch
def test_real_widths_depth_1_folder_loads_and_embeds(tmp_path):
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(**{**WAV2VEC2_XLSR53_CONFIG, "num_hidden_layers": 1})).save_pretrained(tmp_path / "r")
    space = get_speech_space("wav2vec2-xlsr-53", weights=str(tmp_path / "r"), layers=(1,))
    assert space.dim == 1024 and space.model.config.do_stable_layer_norm
    f = space.encode(_wave(0.5), SR)
    assert f.shape == (1024, 60) and np.isfinite(f).all()


def test_release_layout_pytorch_model_bin_loads(tmp_path):
    # facebook/wav2vec2-large-xlsr-53 ships config.json + pytorch_model.bin (read with weights_only=True)
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(5)
    model = Wav2Vec2Model(Wav2Vec2Config(**TINY_WAV2VEC2_CONFIG))
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    model.config.save_pretrained(tmp_path)
    space = get_speech_space("wav2vec2-xlsr-53", weights=str(tmp_path))
    got, ref = space.model.state_dict(), model.state_dict()
    assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)
