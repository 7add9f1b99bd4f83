"""Speech feature spaces (Défossez et al. 2023): wav2vec 2.0 XLSR-53 transformer layers and a mel spectrogram.

Unlike the image and text spaces, a speech space turns a whole wav file into a *time series* of features at the
brain's sampling rate, ``(dim, T)``; a decoder's target for a 3 s brain segment is a window of it
(:func:`speech_windows`). Features are cached per wav file (:class:`SpeechFeatureCache`).

``wav2vec2-xlsr-53``
    ``facebook/wav2vec2-large-xlsr-53`` (24 transformer layers of width 1024, self-supervised on 53 languages):
    the mean of the hidden states of transformer layers 14 to 18 (transformers' ``hidden_states[14:19]``;
    index 0 is the input of layer 1), ``(1024, T)``. Audio: mono, resampled to 16 kHz (polyphase),
    normalised to zero mean and unit variance (the model's ``Wav2Vec2FeatureExtractor`` with
    ``do_normalize=True``). The model's ~49.9 Hz frames are resampled to ``rate`` (default 120 Hz) by
    nearest-neighbour interpolation over the file's duration, as the reference (brainmagick ``features/audio.py``,
    ``F.interpolate`` default mode); ``resample="linear"`` is offered as a named option.
``mel``
    Log10 mel spectrogram (the paper's simpler regression target): 40 mel bands (HTK scale, no band
    normalisation), 512-point FFT, hop 128 at 16 kHz, Hann window, power 2, window-normalised STFT, centred
    frames with reflect padding, ``log10(S + 1e-5)``, audio standardised first; then resampled to ``rate``
    (nearest), ``(40, T)``: the reference's torchaudio ``MelSpectrogram`` settings, computed here in NumPy.

Tiny twins run the same code: ``wav2vec2-xlsr-53-tiny`` is a random ``Wav2Vec2Config`` with the real conv
feature encoder's kernels and strides (so the same 320x downsampling) but 18 layers of width 20 (layers 14-18
exist) and 12-channel convs, ``(20, T)``; ``mel-tiny`` has 12 bands, ``(12, T)``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import DataIntegrityError, ValidationError
from .._core.logging import logger, progress
from .._core.validation import check_option, format_error

__all__ = ["WAV2VEC2_HUB", "WAV2VEC2_XLSR53_CONFIG", "TINY_WAV2VEC2_CONFIG", "SPEECH_SPACES", "Wav2Vec2Space",
           "MelSpace", "get_speech_space", "SpeechFeatureCache", "speech_windows", "wav2vec2_artefacts"]

WAV2VEC2_HUB = "facebook/wav2vec2-large-xlsr-53"

#: ``facebook/wav2vec2-large-xlsr-53``'s ``config.json`` (architecture keys): ``Wav2Vec2Config`` arguments.
WAV2VEC2_XLSR53_CONFIG: dict[str, Any] = {
    "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
    "hidden_act": "gelu", "conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2], "conv_bias": True, "feat_extract_norm": "layer",
    "feat_extract_activation": "gelu", "do_stable_layer_norm": True, "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16, "layer_norm_eps": 1e-5,
}

#: The tiny twin: the real conv strides (same frame rate), a width no other tiny space uses (20 is GIT's
#: token width there but not a speech width; the decoder tests check 20 != 1024 and != the mel-tiny 12).
TINY_WAV2VEC2_CONFIG: dict[str, Any] = {
    **WAV2VEC2_XLSR53_CONFIG, "hidden_size": 20, "num_hidden_layers": 18, "num_attention_heads": 2,
    "intermediate_size": 40, "conv_dim": [12] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2,
}

#: name -> (kind, options). Every name has a ``-tiny`` twin.
SPEECH_SPACES: dict[str, tuple[str, dict[str, Any]]] = {
    "wav2vec2-xlsr-53": ("wav2vec2", {"layers": (14, 15, 16, 17, 18)}),
    "mel": ("mel", {"n_mels": 40}),
}


def _config_key(cfg: Any) -> dict[str, Any]:
    d = cfg.to_diff_dict() if hasattr(cfg, "to_diff_dict") else dict(cfg)
    for k in ("transformers_version", "_name_or_path", "architectures", "torch_dtype", "dtype"):
        d.pop(k, None)
    return d


def _resample_frames(feats: np.ndarray, n_out: int, mode: str) -> np.ndarray:
    """(dim, T_in) -> (dim, n_out). ``nearest``: torch's ``F.interpolate`` nearest rule, index floor(i * T_in / n_out)."""
    t_in = feats.shape[1]
    if n_out < 1 or t_in < 1:
        return np.zeros((feats.shape[0], max(n_out, 0)), dtype=np.float32)
    if mode == "nearest":
        idx = np.minimum(np.floor(np.arange(n_out) * (t_in / n_out)).astype(np.int64), t_in - 1)
        return feats[:, idx].astype(np.float32)
    src = (np.arange(n_out) + 0.5) * (t_in / n_out) - 0.5  # align_corners=False
    src = np.clip(src, 0, t_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, t_in - 1)
    w = (src - lo)[None, :]
    return ((1 - w) * feats[:, lo] + w * feats[:, hi]).astype(np.float32)


def _to_16k(wave: Any, sr: int, target: int = 16000) -> np.ndarray:
    from fractions import Fraction

    from scipy.signal import resample_poly

    x = np.asarray(wave, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=0 if x.shape[0] < x.shape[1] else 1)
    if x.ndim != 1 or not len(x):
        raise ValidationError(format_error("wave", "a non-empty mono (n_samples,) or stereo waveform", x.shape))
    if not np.isfinite(x).all():
        raise ValidationError(format_error("wave", "finite samples", "NaN/inf in the waveform"))
    if int(sr) != target:
        f = Fraction(target, int(sr))
        x = resample_poly(x, f.numerator, f.denominator)
    return x


class _SpeechSpace:
    """Common part: name, feature dimension, output rate, cache key."""

    kind = ""

    def __init__(self, name: str, *, dim: int, rate: float, resample: str, key: dict[str, Any]) -> None:
        if rate <= 0:
            raise ValidationError(format_error("rate", "a positive rate in Hz", rate))
        self.name = name
        self.dim = int(dim)
        self.rate = float(rate)
        self.resample = check_option(resample, "resample", ("nearest", "linear"))
        self._key = key

    def cache_key(self) -> dict[str, Any]:
        """Everything that changes the features (space, weights, options, library versions)."""
        from .._core.versions import package_versions

        return {"space": self.name, "kind": self.kind, "dim": self.dim, "rate": self.rate, "resample": self.resample,
                **self._key, "versions": package_versions(("numpy", "scipy", "torch", "transformers"))}

    def encode(self, wave: Any, sr: int) -> np.ndarray:
        """Features of one waveform at ``rate``: shape (dim, round(duration * rate)), float32.

        Parameters
        ----------
        wave : ndarray of shape (n_samples,) (or (2, n_samples) stereo, averaged)
        sr : int
            Its sampling rate in Hz.
        """
        x = _to_16k(wave, sr)
        frames = self._frames(x)
        n_out = int(round(len(x) / 16000.0 * self.rate))
        return _resample_frames(frames, n_out, self.resample)

    def _frames(self, x16k: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}: ({self.dim}, T) at {self.rate:g} Hz>"


class Wav2Vec2Space(_SpeechSpace):
    """wav2vec 2.0 hidden states averaged over ``layers`` (see the module docstring)."""

    kind = "wav2vec2"

    def __init__(self, name: str, *, model: Any, layers: Sequence[int], rate: float, resample: str, weights: str,
                 normalize: bool = True, device: Any = "cpu") -> None:
        from .._core.device import resolve_device

        n = int(model.config.num_hidden_layers)
        layers = tuple(int(i) for i in layers)
        if not layers or not all(1 <= i <= n for i in layers):
            raise ValidationError(format_error("layers", f"transformer layers in 1..{n} (hidden_states indices)",
                                               layers, "The paper averages layers 14-18 of the 24"))
        super().__init__(name, dim=int(model.config.hidden_size), rate=rate, resample=resample,
                         key={"weights": weights, "layers": list(layers), "normalize": bool(normalize),
                              "model_config": _config_key(model.config)})
        self.layers = layers
        self.normalize = bool(normalize)
        self.weights = weights
        self._device = resolve_device(device)
        self.model = model.to(self._device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def _frames(self, x16k: np.ndarray) -> np.ndarray:
        import torch

        x = x16k.astype(np.float64)
        if self.normalize:  # Wav2Vec2FeatureExtractor(do_normalize=True): (x - mean) / sqrt(var + 1e-7)
            x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        inp = torch.as_tensor(x, dtype=torch.float32, device=self._device)[None]
        with torch.no_grad():
            out = self.model(inp, output_hidden_states=True)
        hs = torch.stack([out.hidden_states[i] for i in self.layers]).mean(0)[0]  # (T, dim)
        return hs.T.float().cpu().numpy()


class MelSpace(_SpeechSpace):
    """Log mel spectrogram (see the module docstring)."""

    kind = "mel"

    def __init__(self, name: str, *, n_mels: int, rate: float, resample: str, n_fft: int = 512,
                 log_eps: float = 1e-5) -> None:
        super().__init__(name, dim=n_mels, rate=rate, resample=resample,
                         key={"n_mels": int(n_mels), "n_fft": int(n_fft), "hop": int(n_fft) // 4,
                              "log_eps": float(log_eps), "mel_scale": "htk", "power": 2.0,
                              "normalized": "window", "audio": "standardised"})
        self.n_fft = int(n_fft)
        self.hop = self.n_fft // 4
        self.log_eps = float(log_eps)
        self.fbank = mel_filterbank(n_mels, self.n_fft, 16000)

    def _frames(self, x16k: np.ndarray) -> np.ndarray:
        x = (x16k - x16k.mean()) / (1e-8 + x16k.std(ddof=1))
        pad = self.n_fft // 2
        x = np.pad(x, pad, mode="reflect") if len(x) > pad else np.pad(x, pad)
        win = np.hanning(self.n_fft + 1)[:-1]  # periodic Hann (torch.hann_window)
        n_frames = 1 + (len(x) - self.n_fft) // self.hop
        idx = np.arange(self.n_fft)[None, :] + self.hop * np.arange(n_frames)[:, None]
        spec = np.fft.rfft(x[idx] * win, axis=1) / np.sqrt((win ** 2).sum())
        power = (np.abs(spec) ** 2).T  # (n_freqs, n_frames)
        return np.log10(self.fbank @ power + self.log_eps).astype(np.float32)


def mel_filterbank(n_mels: int, n_fft: int, sr: int) -> np.ndarray:
    """Triangular HTK mel filters (n_mels, n_fft // 2 + 1), no area normalisation (torchaudio's defaults)."""
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    pts = 700.0 * (10 ** (np.linspace(mel(0.0), mel(sr / 2), n_mels + 2) / 2595.0) - 1.0)
    lower, centre, upper = pts[:-2, None], pts[1:-1, None], pts[2:, None]
    up = (freqs[None] - lower) / (centre - lower)
    down = (upper - freqs[None]) / (upper - centre)
    return np.maximum(0.0, np.minimum(up, down))


def wav2vec2_artefacts(weights: Any = None) -> list[Any]:
    """What ``wav2vec2-xlsr-53`` reads (config, weights; the feature extractor's settings are fixed here)."""
    from ..io.hub import ExternalArtefact, HubArtefact, transformers_model_files

    target = WAV2VEC2_HUB if weights is None else str(weights)
    if target in ("random", "tiny"):
        return [ExternalArtefact("wav2vec2-xlsr-53", "random", "random init (seeded), nothing to fetch")]
    if Path(target).expanduser().exists():
        return [ExternalArtefact(target, "folder", "speech space wav2vec2-xlsr-53: a local folder (read as is)")]
    return [HubArtefact(target, transformers_model_files("", None, sharded=False), "Apache-2.0",
                        "speech space wav2vec2-xlsr-53 (Conneau et al. 2020)")]


def get_speech_space(name: str, *, weights: Any = None, rate: float = 120.0, resample: str = "nearest",
                     device: Any = "cpu", seed: int = 0, **options: Any) -> Wav2Vec2Space | MelSpace:
    """Build a speech space: ``wav2vec2-xlsr-53`` / ``mel`` (real) or their ``-tiny`` twins.

    Parameters
    ----------
    name : str
        A key of :data:`SPEECH_SPACES`, optionally with ``-tiny``.
    weights : str or None
        wav2vec2: a hub id or a local folder (default :data:`WAV2VEC2_HUB`, read with ``local_files_only`` when
        ``NEURODECODE_OFFLINE=1``); ``"random"``: random init at the real size. Ignored by ``mel``.
    rate : float
        Output rate in Hz (the brain's: 120).
    resample : {"nearest", "linear"}
        How the model's frames reach ``rate`` (the reference: nearest).
    device : str
    seed : int
        Seed of a random initialisation.
    **options
        ``layers`` (wav2vec2), ``n_mels`` (mel).
    """
    tiny = name.endswith("-tiny")
    base = name[: -len("-tiny")] if tiny else name
    if base not in SPEECH_SPACES:
        known = sorted(SPEECH_SPACES) + [f"{k}-tiny" for k in sorted(SPEECH_SPACES)]
        raise ValidationError(format_error("name", "one of " + ", ".join(known), repr(name)))
    kind, defaults = SPEECH_SPACES[base]
    opts = {**defaults, **options}
    if kind == "mel":
        return MelSpace(name, n_mels=12 if tiny and "n_mels" not in options else int(opts["n_mels"]), rate=rate,
                        resample=resample)
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from ._base import seeded

    if tiny or weights == "random":
        config = Wav2Vec2Config(**(TINY_WAV2VEC2_CONFIG if tiny else WAV2VEC2_XLSR53_CONFIG))
        with seeded(seed):
            model = Wav2Vec2Model(config)
        tag = f"random-init:seed={seed}"
    else:
        from ..io.hub import resolve_files, transformers_model_files

        target = WAV2VEC2_HUB if weights is None else str(weights)
        folder = resolve_files(target, transformers_model_files("", None, sharded=False),
                               what="wav2vec2-large-xlsr-53 weights")
        # the release holds pytorch_model.bin: transformers reads it with torch.load(weights_only=True)
        model = Wav2Vec2Model.from_pretrained(str(folder), local_files_only=True)
        tag = f"folder:{folder}" if Path(target).expanduser().is_dir() else f"hub:{target}"
    logger.info("speech space %s: %s", name, tag)
    return Wav2Vec2Space(name, model=model.float(), layers=opts["layers"], rate=rate, resample=resample,
                         weights=tag, device=device)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class SpeechFeatureCache:
    """Features of wav files, one safetensors file per wav, keyed by the space and the wav's content.

    Layout: ``folder/<key hash>/key.json`` and ``folder/<key hash>/<wav stem>.safetensors`` (tensor
    ``features`` (dim, T), metadata ``sha256`` of the wav bytes). A wav whose bytes changed is recomputed;
    writes are atomic, so a killed run keeps what it finished.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def features(self, space: Any, sounds: Mapping[str, str | os.PathLike[str]], *, verbose: Any = None,
                 reader: Any = None) -> dict[str, np.ndarray]:
        """``{name: (dim, T) features}`` for ``sounds`` (``{name: wav path}``), computing only what is missing.

        ``reader(path) -> (wave, sr)`` reads a wav (default: :func:`neurodecode.data.load_meg_masc_audio`'s
        reader at its native rate).
        """
        from safetensors.numpy import load_file, save_file

        from .._core.files import atomic_path, write_json

        key = space.cache_key()
        khash = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        sub = self.folder / khash
        sub.mkdir(parents=True, exist_ok=True)
        if not (sub / "key.json").is_file():
            write_json(sub / "key.json", key)
        read = reader or _read_wav
        out: dict[str, np.ndarray] = {}
        for name, path in progress(sorted(sounds.items()), desc=f"{space.name} features", unit="wav",
                                   verbose=verbose):
            path = Path(path)
            digest = _sha256(path)
            target = sub / (Path(name).stem + ".safetensors")
            if target.is_file():
                from safetensors import safe_open

                try:
                    with safe_open(str(target), "np") as fh:
                        same = (fh.metadata() or {}).get("sha256") == digest
                    if same:
                        out[name] = load_file(str(target))["features"]
                        continue
                except Exception as exc:  # a damaged cache file is recomputed, never trusted
                    logger.info("speech cache: recomputing %s (%s)", target, exc)
            wave, sr = read(path)
            feats = space.encode(wave, sr)
            if feats.shape[0] != space.dim:
                raise DataIntegrityError(format_error("features", f"{space.dim} rows", feats.shape))
            with atomic_path(target, suffix=".safetensors") as tmp:
                save_file({"features": np.ascontiguousarray(feats, dtype=np.float32)}, str(tmp),
                          metadata={"sha256": digest, "wav": str(name)})
            out[name] = feats
        return out


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    from scipy.io import wavfile

    rate, data = wavfile.read(path)
    x = np.asarray(data)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    return x.astype(np.float32), int(rate)


def speech_windows(features: Mapping[str, np.ndarray], sounds: Sequence[str], onsets: Any, *, rate: float,
                   tmin: float, n_times: int, offset: float = 0.15) -> np.ndarray:
    """Targets of brain segments: the speech features heard ``offset`` s before each brain window.

    A brain segment starts at ``onset + tmin`` in its wav's time (``onsets``: word onsets in the wav, s); the
    brain lags the sound by ``offset`` (the paper: 150 ms), so its target is the feature window starting at
    ``onset + tmin - offset``, ``n_times`` frames at ``rate``; frames outside the wav are zeros.

    Returns
    -------
    targets : ndarray of shape (n_segments, dim, n_times), float32
    """
    onsets = np.asarray(onsets, dtype=np.float64)
    if len(onsets) != len(sounds):
        raise ValidationError(format_error("onsets", f"one per sound ({len(sounds)})", len(onsets)))
    dims = {f.shape[0] for f in features.values()}
    if len(dims) != 1:
        raise ValidationError(format_error("features", "one feature dimension", sorted(dims)))
    out = np.zeros((len(sounds), dims.pop(), int(n_times)), dtype=np.float32)
    for k, (snd, on) in enumerate(zip(sounds, onsets)):
        if snd not in features:
            raise ValidationError(format_error("sounds", "wav files with computed features", repr(snd)))
        f = features[snd]
        start = int(round((on + tmin - offset) * rate))
        a, b = max(start, 0), min(start + int(n_times), f.shape[1])
        if b > a:
            out[k, :, a - start:b - start] = f[:, a:b]
    return out
