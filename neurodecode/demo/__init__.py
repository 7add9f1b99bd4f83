"""The embedded demo: ``neurodecode reconstruct`` with no arguments (simulated brains, shipped miniature models).

:func:`run_demo` runs it; :func:`load_demo_clip` and :func:`load_demo_diffusion` give the shipped
miniature CLIP (as a latent space) and pixel unCLIP diffusion model for your own experiments.
"""

from ._assets import demo_models_dir, load_demo_clip, load_demo_diffusion, verify_demo_models
from ._run import DemoSettings, restandardise, run_demo, summary_lines

__all__ = ["DemoSettings", "run_demo", "summary_lines", "restandardise", "load_demo_clip", "load_demo_diffusion",
           "demo_models_dir", "verify_demo_models"]
