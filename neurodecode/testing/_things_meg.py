"""Write THINGS-MEG BIDS runs (``_meg.fif`` + ``_events.tsv`` + ``_channels.tsv`` + ``_meg.json``).

The published dataset (OpenNeuro ds004212) stores CTF ``.ds`` folders; MNE cannot write CTF,
so the writer stores each run as BIDS FIF (``..._meg.fif``, which the loader reads through the
same code path). Channel names follow the CTF 275 layout that MNE ships
(``mne.channels.read_layout("CTF-275")``) with THINGS-MEG's system suffix ``-1609``
(``MLC11-1609``...). The real system records 272 of those 275 sensors; which 3 are absent
is not available offline, so fixtures take an evenly spread subset that always includes the
known-bad ``MRO11-1609``. Sensor positions are the layout's 2D positions projected onto a
12 cm sphere with radial orientation and CTF axial-gradiometer coil type: plausible for
plotting, not the real geometry.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.errors import ShapeMismatchError, ValidationError
from .._core.specs import load_spec
from .._core.validation import check_array, format_error
from ._bids import check_channels, write_root_files, write_tsv

__all__ = ["write_things_meg_subject", "make_things_meg_fixture", "ctf_channel_names", "things_meg_path"]

_BIDS_TYPES = {"mag": "MEGGRADAXIAL", "ref_meg": "MEGREFGRADAXIAL", "grad": "MEGGRADPLANAR", "eeg": "EEG",
               "eog": "EOG", "ecg": "ECG", "misc": "MISC", "stim": "TRIG"}
_UNITS = {"mag": "T", "ref_meg": "T", "grad": "T/m", "eeg": "V", "eog": "V", "ecg": "V", "misc": "V", "stim": "n/a"}
_CONCEPTS = ["aardvark", "abacus", "accordion", "acorn", "air_conditioner", "airplane", "alligator", "altar",
             "anchor", "ant", "apple", "apron", "aquarium", "arch", "armchair", "artichoke"]


def _spec() -> dict[str, Any]:
    return load_spec("things_meg")


def _subject_number(subject: Any) -> int:
    """1-based subject number from ``1``, ``"1"`` or ``"sub-BIGMEG1"`` (testing may not import data)."""
    m = re.fullmatch(r"(?:things-meg/)?(?:sub-)?(?:BIGMEG)?0*(\d+)", str(subject).strip())
    n = int(_spec()["dataset"]["n_subjects"])
    if isinstance(subject, bool) or not m or not 1 <= int(m.group(1)) <= n:
        raise ValidationError(format_error("subject", f"a subject 1..{n} or an id like sub-BIGMEG1", repr(subject)))
    return int(m.group(1))


def things_meg_path(root: str | os.PathLike[str], key: str, *, subject: Any, session: int = 1,
                    run: int = 1) -> Path:
    """Absolute path of THINGS-MEG file ``key`` (``raw_fif``, ``events``, ``channels``, ``sidecar``...)."""
    rel = _spec()["paths"][key].format(subject=_subject_number(subject), session=int(session), run=int(run))
    return Path(root) / rel


def ctf_channel_names(n_channels: int | None = None) -> list[str]:
    """Names of CTF-275 sensors with THINGS-MEG's ``-1609`` suffix (the bad ``MRO11-1609`` always included).

    Parameters
    ----------
    n_channels : int or None
        How many (at most 275). ``None``: the spec's 272 recorded channels. Fewer than 275
        are spread evenly over the helmet.

    Returns
    -------
    names : list of str, length n_channels
    """
    import mne

    names = [n.split("-")[0] + "-1609" for n in mne.channels.read_layout("CTF-275").names]
    n = int(_spec()["dataset"]["n_channels_recorded"]) if n_channels is None else int(n_channels)
    if not 1 <= n <= len(names):
        raise ValidationError(format_error("n_channels", f"between 1 and {len(names)}", n))
    idx = np.unique(np.round(np.linspace(0, len(names) - 1, n)).astype(int))
    bad = names.index(_spec()["dataset"]["bad_channels"][0])
    if bad not in idx:
        idx[np.argmin(np.abs(idx - bad))] = bad
    return [names[i] for i in sorted(idx)]


def _set_ctf_geometry(info: Any) -> None:
    """Put MEG channels on a 12 cm sphere from the CTF-275 2D layout (radial axial gradiometers)."""
    import mne
    from mne.io.constants import FIFF

    lay = mne.channels.read_layout("CTF-275")
    pos2d = {n.split("-")[0]: p[:2] + p[2:4] / 2 for n, p in zip(lay.names, lay.pos)}
    for ch in info["chs"]:
        if ch["kind"] != FIFF.FIFFV_MEG_CH:
            continue
        xy = pos2d.get(ch["ch_name"].split("-")[0])
        if xy is None:
            continue
        x, y = (xy[0] - 0.5) * 2, (xy[1] - 0.5) * 2
        theta, phi = min(np.hypot(x, y), 1.0) * np.pi / 2, np.arctan2(y, x)
        ez = np.array([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)])
        ex = np.cross([0.0, 0.0, 1.0], ez) if theta > 1e-6 else np.array([1.0, 0.0, 0.0])
        ex /= np.linalg.norm(ex)
        ey = np.cross(ez, ex)
        ch["loc"] = np.concatenate([0.12 * ez, ex, ey, ez])
        ch["coil_type"] = FIFF.FIFFV_COIL_CTF_GRAD


def _fmt(x: float) -> str:
    return f"{x:.6f}".rstrip("0").rstrip(".") if x else "0"


def write_things_meg_subject(
    root: str | os.PathLike[str],
    subject: Any,
    *,
    data: Any,
    sfreq: float,
    ch_names: Sequence[str],
    onsets: Any,
    image_ids: Sequence[str],
    is_test: Any | None = None,
    is_catch: Any | None = None,
    concepts: Sequence[str] | None = None,
    session: int = 1,
    run: int = 1,
    ch_types: str | Sequence[str] = "mag",
    bads: Sequence[str] = (),
    image_duration: float = 0.5,
) -> Path:
    """Write one THINGS-MEG run in BIDS: ``sub-BIGMEG<s>/ses-<SS>/meg/..._run-<RR>_meg.fif`` and sidecars.

    Also writes (or completes) ``dataset_description.json`` and ``participants.tsv`` at the
    root. A ``UPPT001`` trigger channel with pulses of 64 at the onsets is appended, as on
    the real system.

    Parameters
    ----------
    root : path-like
        BIDS root.
    subject : int or str
        1..4, or ``"sub-BIGMEG1"``.
    data : ndarray of shape (n_channels, n_samples)
        Continuous sensor data of the run, in tesla for MEG channels (real data: about 1e-13..1e-12).
        NaN/inf values are written as given, to test how readers handle them.
    sfreq : float
        Sampling rate in Hz (THINGS-MEG: 1200).
    ch_names : sequence of str, length n_channels
        Channel names, e.g. :func:`ctf_channel_names`.
    onsets : ndarray of float, shape (n_events,)
        Image onsets in seconds from the start of the recording (rounded to the nearest
        sample; written to both ``onset`` and ``sample`` of the events file).
    image_ids : sequence of str, length n_events
        Image file stems such as ``"aardvark_01b"`` (training exemplars) or
        ``"aardvark_13s"`` (test images); catch events may use any stem.
    is_test : ndarray of bool, shape (n_events,) or None
        Test-image events (``trial_type`` ``"test"``); None: none.
    is_catch : ndarray of bool, shape (n_events,) or None
        Catch events (``trial_type`` ``"catch"``, dropped by the loader); None: none.
        Every other event is a training event (``"exp"``).
    concepts : sequence of str, length n_events, or None
        Concept of each image, used as the image's folder in ``image_path``
        (``images_meg/<concept>/<stem>.jpg``, ``images_test_meg/<concept>/<stem>.jpg``);
        default: the stem without its last ``_xx`` part.
    session, run : int
        1-based session (1..12) and run numbers.
    ch_types : str or sequence of str
        MNE channel type(s): ``"mag"`` (CTF axial gradiometers, as MNE reads them),
        ``"ref_meg"``, ``"eog"``, ``"misc"``...
    bads : sequence of str
        Channels marked bad (``info["bads"]`` and ``status`` ``bad`` in ``_channels.tsv``).
    image_duration : float
        ``duration`` column of the events (s).

    Returns
    -------
    path : pathlib.Path
        The ``_meg.fif`` written.
    """
    import mne

    from .._core.files import atomic_path, write_json

    spec = _spec()
    s = _subject_number(subject)
    sfreq = float(sfreq)
    data, names = check_channels(data, ch_names, bads)  # NaN/inf are written as given (bad-input tests)
    types = [ch_types] * len(names) if isinstance(ch_types, str) else list(ch_types)
    if len(types) != len(names):
        raise ShapeMismatchError(format_error("ch_types", f"{len(names)} types", f"{len(types)}"))
    onsets = check_array(onsets, "onsets", ndim=1).astype(np.float64)
    n_ev = len(onsets)
    samples = np.round(onsets * sfreq).astype(np.int64)
    if n_ev and (samples.min() < 0 or samples.max() >= data.shape[1]):
        raise ValidationError(format_error("onsets", f"times within the recording (0 to {data.shape[1] / sfreq:g} s)",
                                           f"values in [{onsets.min():g}, {onsets.max():g}] s"))
    ids = [str(x) for x in image_ids]
    flags = {}
    for name, arr in (("is_test", is_test), ("is_catch", is_catch)):
        flags[name] = np.zeros(n_ev, bool) if arr is None else np.asarray(arr, dtype=bool).ravel()
        if len(flags[name]) != n_ev:
            raise ShapeMismatchError(format_error(name, f"one flag per onset ({n_ev})", f"{len(flags[name])}"))
    if len(ids) != n_ev:
        raise ShapeMismatchError(format_error("image_ids", f"one id per onset ({n_ev})", f"{len(ids)}"))
    cons = [i.rsplit("_", 1)[0] for i in ids] if concepts is None else [str(c) for c in concepts]
    if len(cons) != n_ev:
        raise ShapeMismatchError(format_error("concepts", f"one concept per onset ({n_ev})", f"{len(cons)}"))
    stim_name = str(spec["dataset"]["stim_channel"])
    stim = np.zeros((1, data.shape[1]))
    for smp in samples:
        stim[0, smp: smp + 3] = 64.0
    info = mne.create_info(names + [stim_name], sfreq, types + ["stim"], verbose="error")
    info["line_freq"] = float(spec["dataset"]["power_line_frequency"])
    info["bads"] = list(bads)
    _set_ctf_geometry(info)
    raw = mne.io.RawArray(np.vstack([data.astype(np.float64), stim]), info, verbose="error")

    path = things_meg_path(root, "raw_fif", subject=s, session=session, run=run)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix="_meg.fif") as tmp:
        raw.save(tmp, overwrite=True, verbose="error")

    ttype = np.where(flags["is_catch"], spec["events"]["catch_type"],
                     np.where(flags["is_test"], spec["events"]["test_type"], spec["events"]["train_type"]))
    rows = []
    for k in range(n_ev):
        folder = "images_test_meg" if ttype[k] == spec["events"]["test_type"] else (
            "images_catch_meg" if ttype[k] == spec["events"]["catch_type"] else "images_meg")
        rows.append([_fmt(samples[k] / sfreq), _fmt(image_duration), ttype[k], 64, int(samples[k]),
                     f"{folder}/{cons[k]}/{ids[k]}.jpg"])
    write_tsv(things_meg_path(root, "events", subject=s, session=session, run=run),
              ["onset", "duration", "trial_type", "value", "sample", "image_path"], rows)
    all_types = types + ["stim"]
    write_tsv(things_meg_path(root, "channels", subject=s, session=session, run=run),
              ["name", "type", "units", "sampling_frequency", "status"],
              [[n, _BIDS_TYPES.get(t, "MISC"), _UNITS.get(t, "n/a"), _fmt(sfreq), "bad" if n in bads else "good"]
               for n, t in zip(names + [stim_name], all_types)])
    write_json(things_meg_path(root, "sidecar", subject=s, session=session, run=run), {
        "TaskName": "main", "Manufacturer": "CTF", "SamplingFrequency": sfreq,
        "PowerLineFrequency": float(spec["dataset"]["power_line_frequency"]), "DewarPosition": "upright",
        "SoftwareFilters": "n/a", "DigitizedLandmarks": False, "DigitizedHeadPoints": False,
        "MEGChannelCount": int(sum(t == "mag" for t in types)),
        "MEGREFChannelCount": int(sum(t == "ref_meg" for t in types)),
        "RecordingDuration": round(data.shape[1] / sfreq, 6), "RecordingType": "continuous",
    })
    write_root_files(root, spec, s, bids_version="1.6.0", references=[spec["dataset"]["url"]])
    return path


def make_things_meg_fixture(
    root: str | os.PathLike[str],
    *,
    subjects: Sequence[Any] = (1,),
    n_sessions: int = 2,
    runs_per_session: int = 1,
    n_train_concepts: int = 3,
    n_test_images: int = 2,
    n_catch: int = 1,
    n_channels: int = 8,
    sfreq: float | None = None,
    soa: float = 1.2,
    seed: int = 0,
) -> Path:
    """A random THINGS-MEG BIDS tree with the real design at small scale.

    As in THINGS-MEG, session ``k`` shows exemplar ``k`` of every training concept once
    (``<concept>_<kk>b``), every test image once (so each test image is repeated
    ``n_sessions`` times; test images come from the first training concepts, as in the
    release) and ``n_catch`` catch images, in a random order split over the runs.
    Channels: :func:`ctf_channel_names` (``n_channels`` of them, ``MRO11-1609`` marked bad,
    so ``n_channels - 1`` usable) plus the trigger channel. Data: Gaussian noise around
    1e-13 T. The sampling rate defaults to the spec's 1200 Hz.

    Returns
    -------
    root : pathlib.Path
        The BIDS root.
    """
    spec = _spec()
    rng = np.random.default_rng(seed)
    sf = float(spec["dataset"]["sfreq"]) if sfreq is None else float(sfreq)
    names = ctf_channel_names(n_channels)
    bad = [n for n in names if n in spec["dataset"]["bad_channels"]]
    concepts = [(_CONCEPTS[i] if i < len(_CONCEPTS) else f"concept{i:04d}") for i in range(n_train_concepts)]
    if n_test_images > n_train_concepts:
        raise ValidationError(format_error("n_test_images", f"at most n_train_concepts ({n_train_concepts})",
                                           n_test_images))
    for subject in subjects:
        for ses in range(1, n_sessions + 1):
            ids = [f"{c}_{ses:02d}b" for c in concepts] + [f"{c}_{13 + i:02d}s" for i, c in
                                                          enumerate(concepts[:n_test_images])]
            ids += [f"catch_{i + 1:02d}" for i in range(n_catch)]
            test = np.array([False] * n_train_concepts + [True] * n_test_images + [False] * n_catch)
            catch = np.array([False] * (n_train_concepts + n_test_images) + [True] * n_catch)
            order = rng.permutation(len(ids))
            for r, chunk in enumerate(np.array_split(order, runs_per_session)):
                n_s = int(round((len(chunk) + 2) * soa * sf))
                data = rng.normal(0.0, 1e-13, size=(len(names), n_s))
                onsets = (1.0 + soa * np.arange(len(chunk))).round(6)
                write_things_meg_subject(root, subject, data=data, sfreq=sf, ch_names=names, onsets=onsets,
                                         image_ids=[ids[i] for i in chunk], is_test=test[chunk],
                                         is_catch=catch[chunk], session=ses, run=r + 1, bads=bad)
    return Path(root)

