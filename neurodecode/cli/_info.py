"""``neurodecode info``: versions, devices, backends, offline mode, folders."""

from __future__ import annotations

import platform
from typing import Any

import typer

from ._common import handle_errors, print_json


def collect_info() -> dict[str, Any]:
    """Everything ``neurodecode info`` reports, as a JSON-ready dict."""
    import os

    from .._core.config import cache_dir, home_dir, is_offline
    from .._core.device import backend_report
    from .._core.versions import package_versions

    backends = backend_report()
    return {
        "neurodecode": package_versions(("neurodecode",))["neurodecode"],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "device": "cuda" if backends["cuda_available"] else "cpu",
        "backends": backends,
        "offline": is_offline(),
        "env": {k: os.environ.get(k) for k in ("NEURODECODE_HOME", "NEURODECODE_CACHE", "NEURODECODE_OFFLINE",
                                                 "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME")},
        "folders": {"home": str(home_dir()), "cache": str(cache_dir())},
    }


def register(app: typer.Typer) -> None:
    @app.command("info")
    @handle_errors
    def info(json_out: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
        """Versions of the key packages, device, CUDA/bf16/SDPA backends, offline mode, cache folders."""
        data = collect_info()
        if json_out:
            print_json(data)
            return
        typer.echo(f"neurodecode {data['neurodecode']}  (Python {data['python']}, {data['platform']})")
        typer.echo("packages:")
        for name, ver in data["packages"].items():
            typer.echo(f"  {name:<16} {ver or 'not installed'}")
        b = data["backends"]
        typer.echo(f"device: {data['device']}  cuda={b['cuda_available']} {b['cuda_devices']} bf16={b['bf16_supported']} "
                   f"sdpa(flash={b['sdpa_flash']}, mem_efficient={b['sdpa_mem_efficient']}, math={b['sdpa_math']}) "
                   f"threads={b['num_threads']}")
        typer.echo(f"offline: {data['offline']}")
        typer.echo(f"home: {data['folders']['home']}\ncache: {data['folders']['cache']}")
