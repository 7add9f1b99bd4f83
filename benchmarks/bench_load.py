"""Peak host memory and load time of real-architecture weights, bf16 vs fp32: the cost of loading in the dtype.

For each component (Versatile Diffusion, SDXL-Turbo, OpenCLIP ViT-bigG/14), a hub fixture is written once
(:func:`neurodecode.testing.write_hub_fixture`: the published architecture, random weights, fp16 variant files
and full files as the hub has them), then loaded in a fresh process through the library (``weights=<folder>``)
in ``float32`` and in ``bfloat16``. Each load reports its wall time and the child's peak resident memory
(``ru_maxrss``); the result is the bf16 / fp32 ratio of both. Before the change, every load materialised fp32
weights on the host first (VD ~12 GB, SDXL ~14 GB, bigG 10 GB), so the ratios were about 1.

``--depth`` reduces the layers per block (widths stay the published ones) so that it runs on small machines; the
default (1) fits the 24 GB CPU box. Writes ``benchmarks/results/load.json``.

    python benchmarks/bench_load.py [--depth 1|full] [--components versatile sdxl-turbo clip-bigg-14]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = r"""
import json, resource, sys, time
component, folder, dtype = sys.argv[1:4]
t0 = time.perf_counter()
if component == "clip-bigg-14":
    from huggingface_hub import constants
    constants.HF_HUB_CACHE = sys.argv[4]
    from neurodecode.latents import get_space
    obj = get_space("clip-bigg-14-tokens", dtype=dtype)
    n = sum(p.numel() for p in obj.model.parameters())
else:
    from neurodecode.generate import get_generator
    kw = {"uncond": "encoded"} if component == "versatile" else {}
    if component == "sdxl-turbo":
        kw["ip_adapter"] = sys.argv[5]
    obj = get_generator(component, weights=folder, dtype=dtype, **kw).load()
    n = sum(p.numel() for m in obj.components_.values() if hasattr(m, "named_parameters") for p in m.parameters())
seconds = time.perf_counter() - t0
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_rss_gb": peak_kb / 2**20, "parameters": n}))
"""


def _load(component: str, folder: Path, dtype: str, extra: list[str]) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NEURODECODE_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", _CHILD, component, str(folder), dtype, *extra], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", default="1", help="layers per block ('full' = the published depth)")
    parser.add_argument("--components", nargs="+", default=["versatile", "sdxl-turbo", "clip-bigg-14"])
    parser.add_argument("--variant", default="full", choices=["full", "fp16"],
                        help="weight files written (the hub's VD has full files; SDXL-Turbo has both)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "load.json"))
    args = parser.parse_args()
    depth = None if args.depth == "full" else int(args.depth)

    from neurodecode.testing import write_hub_fixture

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for component in args.components:
            root = Path(tmp) / component
            extra: list[str] = []
            t0 = time.perf_counter()
            if component == "clip-bigg-14":
                folder = write_hub_fixture(component, root, layout="cache", depth=depth, variant=args.variant)
                extra = [str(root)]
            else:
                folder = write_hub_fixture(component, root, depth=depth, variant=args.variant)
                if component == "sdxl-turbo":
                    extra = ["", str(write_hub_fixture("ip-adapter", Path(tmp) / "ip", depth=depth,
                                                       variant=args.variant))]
            write_s = time.perf_counter() - t0
            fp32 = _load(component, folder, "float32", extra)
            bf16 = _load(component, folder, "bfloat16", extra)
            row = {"component": component, "depth": args.depth, "variant": args.variant,
                   "parameters": fp32["parameters"], "fixture_write_s": round(write_s, 1),
                   "fp32": fp32, "bf16": bf16,
                   "peak_rss_ratio_bf16_over_fp32": round(bf16["peak_rss_gb"] / fp32["peak_rss_gb"], 3),
                   "load_time_ratio_bf16_over_fp32": round(bf16["seconds"] / fp32["seconds"], 3)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    import platform

    import torch

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
                                          "torch": torch.__version__, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
