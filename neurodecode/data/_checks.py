"""Check a local dataset tree against ``data_specs/`` and list every problem at once.

Each checker returns ``(report, problems, warnings)`` and raises nothing about the tree:
``problems`` are what would make a loader fail or give a wrong result (missing files or
sessions, holes in a download, NaN values, a mask of another subject, damaged files);
``warnings`` are what a user should know but may have chosen (fewer sessions than the
release, NaN samples the loader replaces and records). ``neurodecode check-data`` prints
both and exits 1 when there is a problem.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._core.specs import load_spec

__all__ = ["check_dataset", "check_nsd", "check_things_eeg2", "check_zuco"]

CheckResult = tuple[dict[str, Any], list[str], list[str]]

#: More than this fraction of a subject's nsdgeneral voxels with constant betas means the mask is wrong.
_CONSTANT_VOXEL_FRACTION = 0.01


def _attempt(problems: list[str], label: str, fn: Any) -> Any:
    try:
        return fn()
    except Exception as exc:  # every problem is collected, none stops the check
        problems.append(f"{label}: {exc}")
        return None


# ------------------------------------------------------------------------------------------------------ NSD
def check_nsd(root: str | os.PathLike[str], subjects: Sequence[int] | None = None, *,
              beta_version: str = "b3") -> CheckResult:
    """Check an NSD tree: design, stimuli, and per subject mask, sessions, NaN values and voxel counts.

    Parameters
    ----------
    root : path-like
        The NSD root.
    subjects : sequence of int or None
        Subjects to check (each must be present); None: every subject found.
    beta_version : str
        ``"b1"``, ``"b2"``, ``"b3"`` or the folder name.

    Returns
    -------
    report : dict
        ``{"subjects": {"<s>": {"sessions", "n_voxels", "nonfinite_per_session", ...}}}``.
    problems, warnings : list of str
    """
    from ..io.hdf5 import get_dataset, open_hdf5
    from ._layout import relative_path
    from ._nsd_files import (
        _max_sessions,
        _read_session_betas,
        nsd_beta_dir,
        nsd_missing_sessions,
        nsd_session_files,
        nsd_trial_table,
        read_nsd_mask,
    )

    root = Path(root)
    spec = load_spec("nsd")
    tps = int(spec["dataset"]["trials_per_session"])
    problems: list[str] = []
    warnings: list[str] = []
    report: dict[str, Any] = {"subjects": {}}
    beta_dir = _attempt(problems, "beta_version", lambda: nsd_beta_dir(beta_version))
    if beta_dir is None:
        return report, problems, warnings
    for key in ("expdesign", "stimuli"):
        if not (root / relative_path("nsd", key)).is_file():
            problems.append(f"missing {relative_path('nsd', key)} (expected under {root})")
    n_images = None
    if (root / relative_path("nsd", "stimuli")).is_file():
        def _stim() -> int:
            with open_hdf5(root / relative_path("nsd", "stimuli")) as f:
                return int(get_dataset(f, spec["keys"]["stimuli"], ndim=4).shape[0])
        n_images = _attempt(problems, "stimuli", _stim)
    n_design = None
    if (root / relative_path("nsd", "expdesign")).is_file():
        from ..io.matlab import load_mat

        design = _attempt(problems, "expdesign", lambda: load_mat(root / relative_path("nsd", "expdesign"),
                                                                 spec["keys"]["expdesign"]))
        if design is not None:
            n_design = int(np.asarray(design["masterordering"]).size)
            sim = np.asarray(design["subjectim"])
            if n_images is not None and sim.size and int(sim.max()) > n_images:
                problems.append(f"expdesign: subjectim refers to image {int(sim.max())} (1-based) but "
                                f"{relative_path('nsd', 'stimuli')} holds {n_images} images")
    found_subjects = sorted(
        s for s in range(1, int(spec["dataset"]["n_subjects"]) + 1)
        if (root / relative_path("nsd", "nsdgeneral", subject=s)).is_file()
        or (root / relative_path("nsd", "betas_nifti", subject=s, session=1, beta_dir=beta_dir)).parent.is_dir())
    if subjects is None:
        subjects = found_subjects
        if not subjects:
            problems.append(f"no subject found: missing {relative_path('nsd', 'nsdgeneral', subject=1)} and "
                            f"{relative_path('nsd', 'betas_nifti', subject=1, session=1, beta_dir=beta_dir)}")
    for s in subjects:
        label = f"subj{s:02d}"
        if s not in found_subjects:
            problems.append(f"{label}: not in this tree (subjects found: "
                            f"{', '.join(str(x) for x in found_subjects) or 'none'}); expected "
                            f"{relative_path('nsd', 'nsdgeneral', subject=s)}")
            continue
        mask = _attempt(problems, f"{label} mask", lambda s=s: read_nsd_mask(root, s))
        every = nsd_session_files(root, s, beta_dir, consecutive=False)
        info: dict[str, Any] = {"sessions": len(every)}
        report["subjects"][str(s)] = info
        if not every:
            problems.append(f"{label}: missing "
                            f"{relative_path('nsd', 'betas_nifti', subject=s, session=1, beta_dir=beta_dir)} (or .hdf5)")
            continue
        holes = nsd_missing_sessions(every)
        if holes:
            problems.append(f"{label}: missing session(s) {', '.join(f'{x:02d}' for x in holes)} "
                            f"({relative_path('nsd', 'betas_nifti', subject=s, session=holes[0], beta_dir=beta_dir)}"
                            f" or .hdf5) while sessions up to {max(every):02d} are present")
        expected = _max_sessions(s, n_design) if n_design is not None else 0
        if max(every) < expected:
            msg = (f"{label}: {max(every)} session(s) on disk, the design describes {expected} "
                   f"(sessions {max(every) + 1:02d}-{expected:02d} missing)")
            # the real design covers every session of the spec while downloads often hold fewer (the public
            # release withheld the last ones): only a warning there; a smaller design describes its tree exactly
            full_design = n_design is not None and n_design >= _max_sessions(s) * tps
            (warnings if full_design else problems).append(msg)
        if mask is not None:
            info["n_voxels"] = mask.n_voxels
            spec_voxels = int(spec["dataset"]["nsdgeneral_voxels"][s - 1])
            info["n_voxels_spec"] = spec_voxels
            if mask.n_voxels != spec_voxels:
                others = [i + 1 for i, n in enumerate(spec["dataset"]["nsdgeneral_voxels"]) if n == mask.n_voxels]
                if others:
                    problems.append(f"{label}: nsdgeneral has {mask.n_voxels} voxels, the count of subj"
                                    f"{others[0]:02d} (subj{s:02d} has {spec_voxels}): another subject's mask "
                                    f"at {relative_path('nsd', 'nsdgeneral', subject=s)}")
                elif mask.n_voxels > 5000:  # a full-size tree (small simulated trees have small masks)
                    problems.append(f"{label}: nsdgeneral has {mask.n_voxels} voxels, expected {spec_voxels} "
                                    f"(func1pt8mm): check {relative_path('nsd', 'nsdgeneral', subject=s)}")
            nonfinite: dict[str, int] = {}
            constant: dict[str, int] = {}
            for session, (fmt, path) in sorted(every.items()):
                raw = _attempt(problems, f"{label} session {session:02d} ({path})",
                               lambda fmt=fmt, path=path, mask=mask: _read_session_betas(fmt, path, mask, tps))
                if raw is None:
                    continue
                if np.issubdtype(raw.dtype, np.floating):
                    bad = ~np.isfinite(raw)
                    if bad.any():
                        nonfinite[f"{session:02d}"] = int(bad.sum())
                        cols = np.flatnonzero(bad.any(axis=0))
                        problems.append(f"{label} session {session:02d}: {int(bad.sum())} NaN/inf value(s) in "
                                        f"{len(cols)} voxel(s) (first voxel column {int(cols[0])}) in {path}; "
                                        "`neurodecode prepare` and load_nsd refuse them unless --nan-policy zero "
                                        "(nan_policy='zero')")
                with np.errstate(invalid="ignore"):
                    flat = np.nanmax(raw, axis=0) == np.nanmin(raw, axis=0) if raw.size else np.zeros(0, bool)
                n_const = int(np.sum(flat))
                if n_const:
                    constant[f"{session:02d}"] = n_const
            info["nonfinite_per_session"] = nonfinite
            info["constant_voxels_per_session"] = constant
            if constant:
                worst = max(constant.values())
                msg = (f"{label}: {worst} of {mask.n_voxels} nsdgeneral voxels have constant betas in a session "
                       f"(per session: {constant}): no signal there")
                if worst > _CONSTANT_VOXEL_FRACTION * mask.n_voxels:
                    problems.append(msg + f"; the mask {relative_path('nsd', 'nsdgeneral', subject=s)} may belong to "
                                    "another subject, or the beta files are damaged")
                else:
                    warnings.append(msg)
        consecutive = sorted(x for x in every if x <= (min(holes) - 1 if holes else max(every)))
        table = _attempt(problems, f"{label} design", lambda s=s, c=consecutive: nsd_trial_table(root, s, c))
        if table is not None:
            train = table["split"] == "train"
            info.update({
                "train_trials": int(train.sum()), "test_trials": int((~train).sum()),
                "train_images": int(len(np.unique(table["stimulus_id"][train]))),
                "test_images": int(len(np.unique(table["stimulus_id"][~train]))),
            })
    return report, problems, warnings


# ---------------------------------------------------------------------------------------------- THINGS-EEG2
def _eeg2_subjects(root: Path) -> dict[str, list[int]]:
    """Variant -> subject numbers with a folder under ``root`` (or ``root`` being the variant folder)."""
    spec = load_spec("things_eeg2")
    out: dict[str, list[int]] = {}
    for variant, v in spec["variants"].items():
        for base in (root / v["variant_dir"],):
            if base.is_dir():
                nums = sorted(int(m.group(1)) for p in base.glob("sub-*")
                              if (m := re.fullmatch(r"sub-0*(\d+)", p.name)) and p.is_dir())
                if nums:
                    out[variant] = nums
    if not out:  # root may be a variant folder itself: tell the variant from the channel count later
        nums = sorted(int(m.group(1)) for p in root.glob("sub-*")
                      if (m := re.fullmatch(r"sub-0*(\d+)", p.name)) and p.is_dir())
        if nums:
            out["?"] = nums
    return out


def check_things_eeg2(root: str | os.PathLike[str], subjects: Sequence[int] | None = None, *,
                      allow_pickle: bool = False) -> CheckResult:
    """Check a THINGS-EEG2 tree: every subject, both parts, channels, rate, damaged values.

    Parameters
    ----------
    root : path-like
        Dataset root (holding the variant folder) or the variant folder.
    subjects : sequence of int or None
        Subjects to check (each must be present); None: every subject found.
    allow_pickle : bool
        Read the published pickled ``.npy`` files (only for files you trust). Without it a
        subject with only pickled files is a problem that says how to proceed.
    """
    from .._core.errors import UnsafeCheckpointError
    from ._things_eeg2 import load_things_eeg2

    root = Path(root)
    spec = load_spec("things_eeg2")
    problems: list[str] = []
    warnings: list[str] = []
    report: dict[str, Any] = {"subjects": {}}
    found = _eeg2_subjects(root)
    if not found:
        problems.append(f"no subject found: expected {spec['paths']['training'].format(variant_dir='<variant>', subject=1)}"
                        f" under {root} (variants: "
                        + ", ".join(f"{k} -> {v['variant_dir']}" for k, v in spec["variants"].items()) + ")")
        return report, problems, warnings
    all_found = sorted({s for nums in found.values() for s in nums})
    wanted = list(subjects) if subjects is not None else all_found
    for s in wanted:
        variants = [v for v, nums in found.items() if s in nums]
        if not variants:
            problems.append(f"sub-{s:02d}: not in this tree (subjects found: {', '.join(map(str, all_found))})")
            continue
        for variant in variants:
            candidates = list(spec["variants"]) if variant == "?" else [variant]
            info: dict[str, Any] = {}
            for part in ("train", "test"):
                errors: list[str] = []
                trials = None
                for cand in candidates:
                    try:
                        trials = load_things_eeg2(root, s, variant=cand, split=part, allow_pickle=allow_pickle)
                        info["variant"] = cand
                        break
                    except UnsafeCheckpointError:
                        errors = [f"sub-{s:02d} {part}: only the published pickled .npy is present; pass "
                                  "--allow-pickle (allow_pickle=True) to check a copy you trust, or convert it once "
                                  "with neurodecode.data.convert_things_eeg2(root, subject, allow_pickle=True)"]
                        break
                    except Exception as exc:
                        errors.append(f"sub-{s:02d} {part} ({cand}): {exc}")
                if trials is None:
                    # with an unknown variant folder, report the error of the likeliest variant only
                    problems.extend(errors[:1] if variant == "?" else errors)
                    continue
                info[part] = {"n_trials": len(trials), "n_images": int(len(np.unique(trials.stimulus_ids)))}
                info.update({"n_channels": len(trials.ch_names or []), "sfreq": trials.sfreq})
            report["subjects"][str(s) if len(variants) == 1 else f"{s}/{variant}"] = info
    if subjects is None:
        holes = [x for x in range(1, max(all_found) + 1) if x not in all_found]
        if holes:
            warnings.append(f"subjects {', '.join(f'sub-{x:02d}' for x in holes)} are absent "
                            f"(found {', '.join(f'sub-{x:02d}' for x in all_found)})")
    return report, problems, warnings


# ----------------------------------------------------------------------------------------------------- ZuCo
def check_zuco(root: str | os.PathLike[str], subjects: Sequence[str] | None = None) -> CheckResult:
    """Check a ZuCo tree: every ``results<CODE>_<TASK>.mat``, subjects missing a task, NaN samples.

    Parameters
    ----------
    root : path-like
        Root of the ZuCo download (one version, or ``zuco1/`` and ``zuco2/`` side by side).
    subjects : sequence of str or None
        Subject codes to check (each must be present); None: every subject found.
    """
    from ._zuco import load_zuco

    root = Path(root)
    spec = load_spec("zuco")
    problems: list[str] = []
    warnings: list[str] = []
    report: dict[str, Any] = {"subjects": {}}
    version_of = {str(c): int(v) for v, vs in spec["versions"].items() for c in vs["subjects"]}
    files: dict[str, dict[str, Path]] = {}
    for f in sorted(root.rglob("results*_*.mat")):
        code, _, task = f.stem[len("results"):].partition("_")
        files.setdefault(code, {}).setdefault(task, f)
    if not files:
        problems.append(f"no results<SUBJECT>_<TASK>.mat file under {root} (expected e.g. "
                        f"{spec['paths']['results'].format(task_dir=spec['versions']['2']['task_dirs']['NR'], subject='YAC', task='NR')})")
        return report, problems, warnings
    wanted = list(subjects) if subjects is not None else sorted(files)
    for code in wanted:
        if code not in files:
            problems.append(f"zuco/{code}: no results{code}_<TASK>.mat under {root} (subjects found: "
                            f"{', '.join(sorted(files))})")
    for version in sorted({version_of.get(c, 0) for c in files}):
        codes = [c for c in files if version_of.get(c, 0) == version]
        tasks = sorted({t for c in codes for t in files[c]})
        for code in codes:
            if code not in wanted:
                continue
            lacking = [t for t in tasks if t not in files[code]]
            if lacking:
                problems.append(f"zuco/{code}: missing {', '.join(f'results{code}_{t}.mat' for t in lacking)} "
                                f"(other ZuCo {version}.0 subjects of this tree have these tasks)")
    for code in wanted:
        for task, path in sorted(files.get(code, {}).items()):
            zuco_version = version_of.get(code)
            if zuco_version is None:
                problems.append(f"{path}: {code} is not a ZuCo 1.0 or 2.0 subject code")
                continue
            try:
                t = load_zuco(path.parent.parent, code, version=zuco_version, task=task, nan_policy="zero")
            except Exception as exc:
                problems.append(f"{path}: {exc}")
                continue
            p = t.provenance
            report["subjects"].setdefault(code, {})[task] = {
                "sentences": len(t), "n_channels": int(t.X.shape[1]), "dropped_no_eeg": p["n_dropped_no_eeg"],
                "nonfinite_samples": p["n_nonfinite_set_to_zero"],
            }
            if p["n_nonfinite_set_to_zero"]:
                warnings.append(f"{path}: {p['n_nonfinite_set_to_zero']} NaN/inf sample(s) in "
                                f"{p['n_sentences_with_nonfinite']} sentence(s) (channels "
                                f"{', '.join(list(p['nonfinite_per_channel'])[:5])}); the loader replaces them by 0 "
                                "and records it (nan_policy='zero'), or refuses them with nan_policy='raise'")
    return report, problems, warnings


# --------------------------------------------------------------------------------------------------- every dataset
#: The datasets ``check-data`` knows, in the order its messages list them.
_DATASETS = ("nsd", "things-eeg2", "things-meg", "zuco", "meg-masc", "bold5000", "broderick2019", "mous",
             "brennan2019")
#: Checkers of the loaders' own modules (imported when asked for): each returns ``(report, problems)`` with the
#: warnings inside the report; the three above return ``(report, problems, warnings)``.
_MODULE_CHECKERS = {"things-meg": ("._things_meg", "check_things_meg"), "bold5000": ("._bold5000", "check_bold5000"),
                    "broderick2019": ("._broderick", "check_broderick2019"), "mous": ("._mous", "check_mous"),
                    "brennan2019": ("._brennan", "check_brennan2019"), "meg-masc": ("._meg_masc", "check_meg_masc")}


def check_dataset(dataset: str, root: str | os.PathLike[str], subjects: Sequence[Any] | None = None, *,
                  allow_pickle: bool = False) -> dict[str, Any]:
    """Check a dataset tree and return one report: ``subjects``, ``problems``, ``warnings``, ``ok``.

    Parameters
    ----------
    dataset : {"nsd", "things-eeg2", "things-meg", "zuco", "meg-masc", "bold5000", "broderick2019", "mous", \
"brennan2019"}
    root : path-like
        The dataset root.
    subjects : sequence or None
        Subject numbers (ZuCo: codes) to check; None: every subject found.
    allow_pickle : bool
        THINGS-EEG2: read the published pickled files (only for files you trust).
    """
    import importlib

    from .._core.validation import check_option

    check_option(dataset, "dataset", _DATASETS)
    if dataset == "nsd":
        report, problems, warnings = check_nsd(root, subjects)
    elif dataset == "things-eeg2":
        report, problems, warnings = check_things_eeg2(root, subjects, allow_pickle=allow_pickle)
    elif dataset == "zuco":
        report, problems, warnings = check_zuco(root, subjects)
    else:
        module, name = _MODULE_CHECKERS[dataset]
        report, problems = getattr(importlib.import_module(module, __package__), name)(root, subjects)
        warnings = report.pop("warnings", [])
    report.update(dataset=dataset, root=str(root), problems=problems, warnings=warnings, ok=not problems)
    return report
