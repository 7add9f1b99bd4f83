"""``neurodecode embed``: fill the feature cache of a latent space.

Also runs under a launcher, each process computing its own shards::

    torchrun --nproc_per_node 8 --no-python neurodecode embed --space clip-vit-l-14-tokens \\
        --stimuli nsd_stimuli.hdf5 --out cache/clip-l-tokens --device cuda --dtype bfloat16

(``accelerate launch`` works the same way: every process reads ``RANK`` / ``WORLD_SIZE``.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._common import handle_errors, print_json


def run_embed(space: str, stimuli: str, out: Path, *, weights: str | None = None, device: str = "auto",
              dtype: str = "float32", batch_size: int = 32, store_dtype: str = "float16", shard_size: int = 1024,
              overwrite: bool = False, normalize: str | None = None, compile: bool = False) -> dict[str, Any]:
    """What ``neurodecode embed`` does, as a function returning its JSON summary."""
    import time

    from ..latents import embed_to_cache, get_space
    from ..latents._sharding import local_device, process_index

    options: dict[str, Any] = {}
    if normalize:
        options["normalize"] = normalize
    if compile:
        options["compile"] = True
    from .._core.files import check_writable

    t0 = time.perf_counter()
    check_writable(out)  # a read-only or full --out fails now, not after loading the model
    latent = get_space(space, weights=weights, device=local_device(device), dtype=dtype, batch_size=batch_size,
                       **options)
    cache = embed_to_cache(latent, stimuli, out, batch_size=batch_size, dtype=store_dtype, shard_size=shard_size,
                           overwrite=overwrite)
    rank, world = process_index()
    man = cache.manifest if cache.complete else {}
    return {
        "space": latent.name, "shape": list(latent.shape), "out": str(out), "complete": cache.complete,
        "n": man.get("n"), "n_shards": man.get("n_shards"), "key_hash": man.get("key_hash"),
        "weights": latent.weights, "device": latent.device, "dtype": latent.dtype, "store_dtype": store_dtype,
        "process": rank, "world_size": world, "seconds": round(time.perf_counter() - t0, 3),
    }


def register(app: typer.Typer) -> None:
    @app.command("embed")
    @handle_errors
    def embed(
        space: str = typer.Option(..., "--space", help="Latent space name, e.g. clip-vit-l-14-tokens (add -tiny for the offline twin)."),
        stimuli: str = typer.Option(..., "--stimuli", help="nsd_stimuli.hdf5, an image folder, or a .txt of sentences."),
        out: Path = typer.Option(..., "--out", help="Cache folder (created; re-runs resume)."),
        weights: str = typer.Option(None, "--weights", help="Local folder / .safetensors / 'random' (default: published)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        dtype: str = typer.Option("float32", "--dtype", help="Compute dtype: float32, bfloat16 or float16."),
        batch_size: int = typer.Option(32, "--batch-size", min=1, help="Stimuli per forward pass."),
        store_dtype: str = typer.Option("float16", "--store-dtype", help="Storage dtype: float16 or float32."),
        shard_size: int = typer.Option(1024, "--shard-size", min=1, help="Stimuli per shard file."),
        normalize: str = typer.Option(None, "--normalize", help="'vd' (token spaces) or 'l2' (pooled spaces)."),
        compile: bool = typer.Option(False, "--compile", help="torch.compile the encoder (GPU)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a cache computed with another key."),
        json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
    ) -> None:
        """Fill the feature cache for a latent space (checksummed shards, resumable, multi-process)."""
        summary = run_embed(space, stimuli, out, weights=weights, device=device, dtype=dtype, batch_size=batch_size,
                            store_dtype=store_dtype, shard_size=shard_size, overwrite=overwrite,
                            normalize=normalize, compile=compile)
        if json_out:
            print_json(summary)
            return
        state = "complete" if summary["complete"] else "partial (other processes still running or interrupted)"
        typer.echo(f"{summary['space']} {tuple(summary['shape'])}: cache at {summary['out']} is {state} "
                   f"({summary['n']} stimuli, {summary['seconds']} s)")
