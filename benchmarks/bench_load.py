"""Peak host memory and load time of real-architecture weights, bf16 vs fp32: the cost of loading in the dtype.

For each component (Versatile Diffusion, SDXL-Turbo, OpenCLIP ViT-bigG/14), a hub fixture is written once
(:func:`neurodecode.testing.write_hub_fixture`: the published architecture, random weights, fp16 variant files
and full files as the hub has them), then loaded in a fresh process through the library (``weights=<folder>``)
in ``float32``, in ``bfloat16`` (loaded in that dtype) and, for reference, the former path (``float32``
then every module cast to ``bfloat16``), and every weight is read once (as moving it to a GPU would; an untouched
memory-mapped safetensors file costs no memory yet). Each load reports its wall time and the child's peak resident
memory (``VmHWM``, memory-mapped file pages included) and its peak anonymous memory (``RssAnon`` sampled every
5 ms: its own allocations, without the reclaimable page cache of the weight files); the result is the bf16 / fp32
ratio of each. Before the change, every load materialised fp32
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
import json, sys, threading, time
component, folder, dtype = sys.argv[1:4]
cast = dtype == "cast"  # the former path: load in float32, then cast every module to bfloat16
dtype = "float32" if cast else dtype

def _status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))

peak_anon = [0]
done = threading.Event()
def _sample():
    while not done.is_set():
        peak_anon[0] = max(peak_anon[0], _status("RssAnon"))
        time.sleep(0.005)
sampler = threading.Thread(target=_sample, daemon=True)
sampler.start()
t0 = time.perf_counter()
if component == "clip-bigg-14":
    from huggingface_hub import constants
    constants.HF_HUB_CACHE = sys.argv[4]
    from neurodecode.latents import get_space
    obj = get_space("clip-bigg-14-tokens", dtype=dtype)
    if cast:
        import torch
        obj.model.to(torch.bfloat16)
    params = list(obj.model.parameters())
else:
    from neurodecode.generate import get_generator
    kw = {"uncond": "encoded"} if component == "versatile" else {}
    if component == "sdxl-turbo":
        kw["ip_adapter"] = sys.argv[5]
    obj = get_generator(component, weights=folder, dtype=dtype, **kw).load()
    if cast:
        import torch
        for m in obj.components_.values():
            if isinstance(m, torch.nn.Module):
                m.to(torch.bfloat16)
    params = [p for m in obj.components_.values() if hasattr(m, "named_parameters") for p in m.parameters()]
# every weight read once (as moving them to a GPU would): memory-mapped fp32 files count when touched
checksum = sum(float(p.detach().sum()) for p in params)
n = sum(p.numel() for p in params)
seconds = time.perf_counter() - t0
done.set()
sampler.join()
peak_anon[0] = max(peak_anon[0], _status("RssAnon"))
# VmHWM: this process's own peak, memory-mapped file pages included (ru_maxrss would carry the parent's size
# over fork + exec); RssAnon sampled every 5 ms: the process's own allocations (page cache excluded)
print(json.dumps({"seconds": seconds, "peak_rss_gb": _status("VmHWM") / 2**20,
                  "peak_anon_gb": peak_anon[0] / 2**20, "parameters": n}))
"""


def _load(component: str, folder: Path, dtype: str, extra: list[str]) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NEURODECODE_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", _CHILD, component, str(folder), dtype, *extra], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _write(component: str, root: Path, layout: str, depth: int | None, variant: str) -> str:
    """Write the fixture in a child process (the loads' parent stays small)."""
    code = ("import sys; from neurodecode.testing import write_hub_fixture as w; "
            "d = None if sys.argv[4] == 'full' else int(sys.argv[4]); "
            "print(w(sys.argv[1], sys.argv[2], layout=sys.argv[3], depth=d, variant=sys.argv[5]))")
    out = subprocess.run([sys.executable, "-c", code, component, str(root), layout,
                          "full" if depth is None else str(depth), variant], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", default="1", help="layers per block ('full' = the published depth)")
    parser.add_argument("--components", nargs="+", default=["versatile", "sdxl-turbo", "clip-bigg-14"])
    parser.add_argument("--variant", default="full", choices=["full", "fp16"],
                        help="weight files written (the hub's VD has full files; SDXL-Turbo has both)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "load.json"))
    args = parser.parse_args()
    depth = None if args.depth == "full" else int(args.depth)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for component in args.components:
            root = Path(tmp) / component
            extra: list[str] = []
            t0 = time.perf_counter()
            layout = "cache" if component == "clip-bigg-14" else "folder"
            folder = Path(_write(component, root, layout, depth, args.variant))
            if component == "clip-bigg-14":
                extra = [str(root)]
            elif component == "sdxl-turbo":
                extra = ["", _write("ip-adapter", Path(tmp) / "ip", "folder", depth, args.variant)]
            write_s = time.perf_counter() - t0
            fp32 = _load(component, folder, "float32", extra)
            bf16 = _load(component, folder, "bfloat16", extra)
            cast = _load(component, folder, "cast", extra)
            row = {"component": component, "depth": args.depth, "variant": args.variant,
                   "parameters": fp32["parameters"], "fixture_write_s": round(write_s, 1),
                   "fp32": fp32, "bf16": bf16, "fp32_then_cast_to_bf16": cast,
                   "peak_rss_ratio_bf16_over_fp32": round(bf16["peak_rss_gb"] / fp32["peak_rss_gb"], 3),
                   "peak_anon_ratio_bf16_over_fp32": round(bf16["peak_anon_gb"] / fp32["peak_anon_gb"], 3),
                   "load_time_ratio_bf16_over_fp32": round(bf16["seconds"] / fp32["seconds"], 3),
                   "peak_anon_ratio_bf16_over_cast": round(bf16["peak_anon_gb"] / cast["peak_anon_gb"], 3),
                   "peak_rss_ratio_bf16_over_cast": round(bf16["peak_rss_gb"] / cast["peak_rss_gb"], 3)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    import platform

    import torch

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
                                          "torch": torch.__version__, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
