"""Safe readers and writers: checkpoints, hub resolution, and the raw formats of each dataset."""

from .checkpoints import PretrainedMixin, load_state_dict, save_state_dict
from .hub import resolve_model_dir

__all__ = ["PretrainedMixin", "load_state_dict", "save_state_dict", "resolve_model_dir"]
