"""Safe readers and writers: checkpoints, hub resolution, and the raw formats of each dataset.

Format modules (imported on use, each lazy about its heavy dependency):
:mod:`~neurodecode.io.hdf5`, :mod:`~neurodecode.io.nifti`, :mod:`~neurodecode.io.matlab`,
:mod:`~neurodecode.io.npy`, :mod:`~neurodecode.io.meeg`.
"""

from .checkpoints import PretrainedMixin, load_state_dict, save_state_dict
from .hub import resolve_model_dir
from .matlab import load_mat
from .nifti import load_nifti
from .npy import load_npy

__all__ = ["PretrainedMixin", "load_state_dict", "save_state_dict", "resolve_model_dir", "load_mat",
           "load_nifti", "load_npy"]
