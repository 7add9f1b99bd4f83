"""``neurodecode simulate``: write a known-answer dataset (tree + ``truth/`` + ``ceiling.json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._common import DATASETS, fail, handle_errors, parse_subjects, print_json

#: Subjects written when --subjects is not given: what the recipes' tiny presets train on.
DEFAULT_SUBJECTS: dict[str, list[Any]] = {"nsd": [1, 2], "things-eeg2": [1, 2], "things-meg": [1, 2],
                                          "zuco": ["YAC", "YAG"], "meg-masc": [1, 2], "bold5000": [1, 2],
                                          "broderick2019": [1, 2]}
#: What `neurodecode simulate` writes: the datasets, and the speech datasets not yet in DATASETS (issue #23).
SIMULATED: tuple[str, ...] = tuple(dict.fromkeys((*DATASETS, "broderick2019")))


def run_simulation(dataset: str, out: Path, *, subjects: list[Any] | None = None, snr: float = 1.0,
                   seed: int = 0, annotations: str = "shipped", encoder: Path | None = None,
                   n_train_concepts: int | None = None, images_per_concept: int | None = None,
                   n_sentences: int | None = None, n_test: int | None = None) -> Any:
    """Call the simulator of ``dataset`` with the CLI's options (library defaults for everything else;
    ``n_train_concepts``, ``images_per_concept`` and ``n_test``: things-eeg2's training-set size and test images,
    ``n_sentences``: zuco's number of sentences, ``None`` their defaults)."""
    from .._core.files import check_writable
    from .._core.validation import check_option

    check_option(dataset, "dataset", SIMULATED)
    check_writable(out)  # a read-only or full OUT fails now, not after simulating
    kwargs: dict[str, Any] = {"snr": snr, "seed": seed,
                              "subjects": list(DEFAULT_SUBJECTS[dataset] if subjects is None else subjects)}
    if dataset == "nsd":
        from ..simulate import simulate_nsd

        if annotations != "shipped":
            kwargs["annotations"] = annotations
        if encoder is not None:  # responses from a trained brain encoder instead of the hand-built model
            from ..simulate._from_encoder import simulate_nsd_from_encoder

            return simulate_nsd_from_encoder(out, encoder, **kwargs)
        return simulate_nsd(out, **kwargs)
    if dataset == "things-eeg2":
        from ..simulate import simulate_things_eeg2

        # the published pickled .npy files plus their pickle-free .npz twins: simulated data are ours, so
        # the recipes read them without allow_pickle (the pickled files keep the layout faithful)
        size = {k: v for k, v in (("n_train_concepts", n_train_concepts), ("images_per_concept", images_per_concept),
                                  ("n_test", n_test)) if v is not None}
        return simulate_things_eeg2(out, safe_copy=True, **kwargs, **size)
    if dataset == "things-meg":
        from ..simulate import simulate_things_meg

        return simulate_things_meg(out, **kwargs)
    if dataset == "bold5000":
        from ..simulate.bold5000 import simulate_bold5000

        return simulate_bold5000(out, **kwargs)
    if dataset == "meg-masc":
        from ..simulate.speech import simulate_meg_masc

        return simulate_meg_masc(out, **kwargs)
    if dataset == "broderick2019":
        from ..simulate.speech import simulate_broderick2019

        return simulate_broderick2019(out, **kwargs)
    from ..simulate import simulate_zuco

    if n_sentences is not None:
        kwargs["n_sentences"] = n_sentences
    return simulate_zuco(out, **kwargs)


def _pending_subjects(values: list[str] | None, dataset: str) -> list[int] | None:
    """``--subjects`` of a dataset not yet in DATASETS (numbers or ``Subject<k>`` ids, checked by its spec)."""
    from .._core.specs import load_spec
    from ..data._layout import parse_subject_number
    from ._common import split_subjects

    items = split_subjects(values)
    if not items:
        return None
    ds = load_spec(dataset)["dataset"]
    return list(dict.fromkeys(parse_subject_number(v, dataset, ds["subject_prefix"], int(ds["n_subjects"]))
                              for v in items))


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    @handle_errors
    def simulate(
        dataset: str = typer.Argument(..., help="One of: " + ", ".join(SIMULATED) + "."),
        out: Path = typer.Argument(..., help="Output folder: gets the dataset tree, truth/ and ceiling.json."),
        subjects: list[str] = typer.Option(None, "--subjects", "--subject", "-s",
                                           help="Subjects: `1 2`, `1,2` or repeated (numbers; ZuCo: codes). "
                                                "Default: what the recipes' tiny presets use (nsd, things-eeg2, "
                                                "things-meg: 1 2; zuco: YAC YAG)."),
        snr: float = typer.Option(1.0, "--snr", help="Signal-to-noise multiplier (1 = the documented default)."),
        seed: int = typer.Option(0, "--seed", help="Seed: the same seed writes identical data."),
        annotations: str = typer.Option("shipped", "--annotations",
                                         help="nsd: 'shipped' captions, or 'image': known-answer captions and depth "
                                              "maps computed from each image (docs/datasets/simulated.md)."),
        encoder: Path = typer.Option(None, "--encoder",
                                     help="nsd: a trained brain-encoder run (pipelines/brain_encoder_nsd.toml): "
                                          "its predicted responses replace the hand-built encoding model."),
        train_concepts: int = typer.Option(None, "--train-concepts", min=1,
                                           help="things-eeg2: training concepts (default 12; published 1,654), "
                                                "cycling over the training image classes."),
        images_per_concept: int = typer.Option(None, "--images-per-concept", min=1,
                                               help="things-eeg2: images per training concept (default 10, as "
                                                    "published)."),
        test_images: int = typer.Option(None, "--test-images", min=2,
                                        help="things-eeg2: test images, one per held-out test concept (default 30; "
                                             "published 200), drawn from 2 held-out image classes."),
        n_sentences: int = typer.Option(None, "--sentences", min=2,
                                        help="zuco: sentences generated (default 100; about 10% fall in the test "
                                             "split, by the SHA-256 of each sentence)."),
        json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
    ) -> None:
        """Write a known-answer dataset: real stimuli -> simulated brain responses in the published layout,
        with the ground truth (truth/) and the ideal observer's ceiling (ceiling.json)."""
        if dataset not in SIMULATED:
            from .._core.validation import format_error

            fail(format_error("DATASET", "one of " + ", ".join(SIMULATED), repr(dataset),
                              "Run `neurodecode simulate --help`"), 2)
        if annotations != "shipped" and dataset != "nsd":
            fail("--annotations applies to nsd only", 2)
        if encoder is not None and dataset != "nsd":
            fail("--encoder applies to nsd only (a brain encoder predicts NSD voxels)", 2)
        if encoder is not None and annotations != "shipped":
            fail("--encoder writes the shipped captions; --annotations cannot be combined with it", 2)
        if (train_concepts, images_per_concept, test_images) != (None, None, None) and dataset != "things-eeg2":
            fail("--train-concepts, --images-per-concept and --test-images apply to things-eeg2 only", 2)
        if n_sentences is not None and dataset != "zuco":
            fail("--sentences applies to zuco only", 2)
        parsed = parse_subjects(subjects, dataset) if dataset in DATASETS else _pending_subjects(subjects, dataset)
        result = run_simulation(dataset, out, subjects=parsed, snr=snr, seed=seed,
                                annotations=annotations, encoder=encoder, n_train_concepts=train_concepts,
                                images_per_concept=images_per_concept, n_sentences=n_sentences, n_test=test_images)
        if json_out:
            print_json({"dataset": result.dataset, "out": result.out, "root": result.root, "truth": result.truth,
                        "subjects": result.subjects, "ceiling": result.ceiling})
            return
        c = result.ceiling
        typer.echo(f"{result.dataset}: wrote {result.root} (truth: {result.truth})")
        typer.echo(f"ideal observer on {c['n_test']} test items: two-way {c['two_way_identification']:.3f}, "
                   f"top-1 {c['top1_retrieval']:.3f} (chance {c['chance']['top1_retrieval']:.3f})")
