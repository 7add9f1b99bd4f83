"""MNE forward models for the M/EEG simulators: sensor layouts, sphere head model, discrete sources, noise.

- EEG: 63 channels of the 10-10 system (the actiCAP 64 layout of THINGS-EEG2 without its reference), or the
  EGI HydroCel 128 net reduced to 105 channels (ZuCo), positioned by MNE's template montages (``standard_1005``,
  called ``colin27_1005`` since MNE 1.13), or BioSemi 128 (``biosemi128``) with two mastoids (Broderick 2019); a
  4-shell sphere head model fitted to the electrodes (``mne.make_sphere_model("auto", "auto", info)``).
- MEG: MNE ships no 3-D CTF sensor file, so (as :mod:`neurodecode.testing` writes THINGS-MEG) the 2-D
  positions of MNE's ``CTF-275`` layout are projected onto a 12 cm helmet, each channel a CTF first-order
  axial gradiometer (MNE coil type ``FIFFV_COIL_CTF_GRAD``, 5 cm baseline) pointing radially; THINGS-MEG's 272
  channels minus one bad give 271. Plausible, not the real geometry. The head is a sphere centred in the
  helmet (a homogeneous sphere is all MEG needs).
- Sources: fixed-orientation dipoles at given positions (``mne.setup_volume_source_space(pos=...)``).
- Noise: separable spatio-temporal Gaussian noise: spatial covariance from background dipoles spread through
  the brain plus independent sensor noise, temporal AR(1) covariance; the Cholesky factors are kept so that
  the ideal observer can whiten exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["EEG63", "eeg_info", "ctf_info", "egi105_info", "biosemi128_info", "fixed_gain", "noise_factors", "ar1_cholesky", "draw_noise",
           "whiten"]

#: THINGS-EEG2 (ATM release) channel order: the 63 active electrodes of the 64-channel actiCAP 10-10 layout.
EEG63 = ("Fp1", "Fz", "F3", "F7", "FT9", "FC5", "FC1", "C3", "T7", "TP9", "CP5", "CP1", "Pz", "P3", "P7", "O1",
         "Oz", "O2", "P4", "P8", "TP10", "CP6", "CP2", "Cz", "C4", "T8", "FT10", "FC6", "FC2", "F4", "F8", "Fp2",
         "AF7", "AF3", "AFz", "F1", "F5", "FT7", "FC3", "C1", "C5", "TP7", "CP3", "P1", "P5", "PO7", "PO3", "POz",
         "PO4", "PO8", "P6", "P2", "CPz", "CP4", "TP8", "C6", "C2", "FC4", "FT8", "F6", "AF8", "AF4", "F2")


def _mne() -> Any:
    import mne

    return mne


def eeg_info(ch_names: tuple[str, ...] = EEG63, sfreq: float = 250.0) -> Any:
    """``mne.Info`` of EEG channels placed by the ``standard_1005`` montage."""
    mne = _mne()
    info = mne.create_info(list(ch_names), float(sfreq), "eeg")
    info.set_montage(_montage_1005(), verbose=False)
    return info


def _montage_1005() -> str:
    """MNE's 10-05 template montage name (``standard_1005``, renamed ``colin27_1005`` in MNE 1.13)."""
    mne = _mne()
    return "colin27_1005" if "colin27_1005" in mne.channels.get_builtin_montages() else "standard_1005"


def egi105_info(sfreq: float = 500.0) -> Any:
    """EGI HydroCel-128 net reduced to 105 channels (the 23 most inferior electrodes dropped, as ZuCo's
    preprocessing removes the outer ring; the exact ZuCo list is not reproduced)."""
    mne = _mne()
    montage = mne.channels.make_standard_montage("GSN-HydroCel-128")
    pos = montage.get_positions()["ch_pos"]
    names = [n for n in montage.ch_names if n in pos]
    z = np.array([pos[n][2] for n in names])
    keep = sorted(np.argsort(z)[23:])
    info = mne.create_info([names[i] for i in keep], float(sfreq), "eeg")
    info.set_montage(montage, verbose=False)
    return info


def biosemi128_info(sfreq: float = 128.0, *, mastoids: bool = True) -> Any:
    """BioSemi 128 (MNE's ``biosemi128`` montage, names ``A1`` ... ``D32``, a 9.5 cm sphere) plus, with
    ``mastoids``, ``M1`` / ``M2`` placed on the same sphere in the directions of the 10-05 montage's mastoids."""
    mne = _mne()
    montage = mne.channels.make_standard_montage("biosemi128")
    pos = montage.get_positions()
    ch_pos = dict(pos["ch_pos"])
    if mastoids:
        radius = float(np.median([np.linalg.norm(v) for v in ch_pos.values()]))
        ref = mne.channels.make_standard_montage(_montage_1005()).get_positions()["ch_pos"]
        for name in ("M1", "M2"):
            v = np.asarray(ref[name], dtype=np.float64)
            ch_pos[name] = radius * v / np.linalg.norm(v)
    dig = mne.channels.make_dig_montage(ch_pos=ch_pos, nasion=pos["nasion"], lpa=pos["lpa"], rpa=pos["rpa"],
                                        coord_frame="head")
    info = mne.create_info(list(ch_pos), float(sfreq), "eeg")
    info.set_montage(dig, verbose=False)
    return info


def ctf_info(ch_names: list[str], sfreq: float = 1200.0) -> Any:
    """CTF-like MEG ``mne.Info`` with the sensor geometry :func:`neurodecode.testing.write_things_meg_subject`
    writes (CTF-275 layout names projected onto a 12 cm helmet, radial CTF axial gradiometers)."""
    mne = _mne()
    from ..testing._things_meg import _set_ctf_geometry

    info = mne.create_info(list(ch_names), float(sfreq), "mag", verbose="error")
    _set_ctf_geometry(info)
    with info._unlock():
        info["dev_head_t"] = mne.transforms.Transform("meg", "head")
    return info


def head_sphere(info: Any) -> tuple[Any, np.ndarray]:
    """Sphere head model for ``info`` and its centre (head coordinates, metres)."""
    mne = _mne()
    if any(ch["kind"] == 2 for ch in info["chs"]):  # EEG: fit a 4-shell model to the electrodes
        sphere = mne.make_sphere_model("auto", "auto", info, verbose=False)
    else:
        sphere = mne.make_sphere_model(r0=(0.0, 0.0, 0.0), head_radius=None, verbose=False)  # helmet centre
    return sphere, np.asarray(sphere["r0"], dtype=np.float64)


def fixed_gain(info: Any, sphere: Any, pos: np.ndarray, ori: np.ndarray) -> np.ndarray:
    """Lead field (n_channels, n_sources) of fixed-orientation dipoles (V or T per A m)."""
    mne = _mne()
    ori = ori / np.linalg.norm(ori, axis=1, keepdims=True)
    src = mne.setup_volume_source_space(pos={"rr": pos, "nn": ori}, verbose=False)
    meg = not any(ch["kind"] == 2 for ch in info["chs"])
    fwd = mne.make_forward_solution(info, trans=None, src=src, bem=sphere, eeg=not meg, meg=meg, verbose=False)
    fwd = mne.convert_forward_solution(fwd, force_fixed=True, verbose=False)
    return np.asarray(fwd["sol"]["data"], dtype=np.float64)


def random_dipoles(rng: np.random.Generator, n: int, centre: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """``n`` dipoles uniformly inside a ball (positions, unit orientations)."""
    d = rng.standard_normal((n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    pos = centre + d * radius * rng.random((n, 1)) ** (1 / 3)
    ori = rng.standard_normal((n, 3))
    return pos, ori / np.linalg.norm(ori, axis=1, keepdims=True)


def noise_factors(gain_bg: np.ndarray, n_times: int, *, sensor_fraction: float = 0.2, rho: float = 0.8,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Cholesky factors (L_space, L_time) of unit-RMS separable noise.

    The spatial covariance is ``G_bg G_bg^T`` (background brain activity) scaled to unit mean variance, mixed
    with independent sensor noise (``sensor_fraction`` of the variance); the temporal one is AR(1) with
    coefficient ``rho`` (unit variance).
    """
    cs = gain_bg @ gain_bg.T
    cs /= np.trace(cs) / len(cs)
    cs = (1 - sensor_fraction) * cs + sensor_fraction * np.eye(len(cs))
    return np.linalg.cholesky(cs), ar1_cholesky(n_times, rho)


def ar1_cholesky(n: int, rho: float) -> np.ndarray:
    """Cholesky factor of the unit-variance AR(1) correlation matrix ``rho ** |i - j|``, in closed form.

    It is the recursion ``x_0 = z_0``, ``x_t = rho x_{t-1} + sqrt(1 - rho^2) z_t``:
    ``L[t, s] = rho^(t - s) * (1 if s == 0 else sqrt(1 - rho^2))`` for ``s <= t``.
    """
    t = np.arange(n)
    lags = t[:, None] - t[None, :]
    low = np.tril(rho ** np.clip(lags, 0, None))
    low[:, 1:] *= np.sqrt(1 - rho**2)
    return low


def draw_noise(rng: np.random.Generator, n: int, l_space: np.ndarray, l_time: np.ndarray, scale: float,
               ) -> np.ndarray:
    """``n`` noise epochs of shape (n_channels, n_times): ``scale * L_s Z L_t^T``."""
    c, t = len(l_space), len(l_time)
    z = rng.standard_normal((c, n * t))  # channels first: one big matmul per factor
    a = (l_space @ z).reshape(c, n, t).transpose(1, 0, 2).reshape(n * c, t)
    return (scale * (a @ l_time.T)).reshape(n, c, t)


def whiten(x: np.ndarray, l_space: np.ndarray, l_time: np.ndarray) -> np.ndarray:
    """Whiten epochs (n, n_channels, n_times) for noise ``L_s Z L_t^T``; returns shape (n, n_channels * n_times)."""
    from scipy.linalg import solve_triangular

    n, c, t = x.shape
    a = solve_triangular(l_space, x.transpose(1, 0, 2).reshape(c, n * t), lower=True)  # L_s^-1 X
    a = a.reshape(c, n, t).transpose(1, 0, 2)
    b = solve_triangular(l_time, a.transpose(2, 0, 1).reshape(t, n * c), lower=True)  # (L_t^-1 X^T)^T
    return b.reshape(t, n, c).transpose(1, 2, 0).reshape(n, c * t)
