"""Datasets: loaders for NSD, THINGS-EEG2, THINGS-MEG and ZuCo returning :class:`Trials`."""

from .._core.specs import DATASETS
from ._bold5000 import load_bold5000, load_bold5000_stimuli, read_atlas_labels, schaefer_networks
from ._brennan import load_brennan2019, load_brennan2019_audio
from ._broderick import load_broderick2019
from ._inputs import BrainArray, as_brain_array
from ._meg_masc import load_meg_masc, load_meg_masc_audio
from ._mous import load_mous, load_mous_audio
from ._nsd import load_nsd, load_nsd_stimuli, nsd_trial_table
from ._nsd_cache import prepare_nsd
from ._nsd_rois import noise_ceiling, nsd_atlases, nsd_voxel_labels, read_nsd_ncsnr, select_nsd_rois
from ._nsd_volumes import load_nsd_volumes, nsd_patch_grid, patches_to_volume, resample_volume, volume_patches
from ._things_eeg2 import convert_things_eeg2, load_things_eeg2
from ._things_meg import load_things_meg
from ._trials import Trials
from ._zuco import load_zuco

__all__ = ["DATASETS", "Trials", "load_nsd", "load_nsd_stimuli", "nsd_trial_table", "load_things_eeg2", "convert_things_eeg2",
           "load_things_meg", "load_zuco", "load_meg_masc", "load_meg_masc_audio", "prepare_nsd",
           "select_nsd_rois", "nsd_voxel_labels", "nsd_atlases", "read_nsd_ncsnr", "noise_ceiling",
           "load_nsd_volumes", "nsd_patch_grid", "patches_to_volume", "resample_volume", "volume_patches",
           "as_brain_array", "BrainArray", "load_bold5000", "load_bold5000_stimuli",
           "read_atlas_labels", "schaefer_networks", "load_broderick2019", "load_mous", "load_mous_audio",
           "load_brennan2019", "load_brennan2019_audio"]
