"""Fixture writers: small trees in the exact published layouts of each dataset.

The loaders in :mod:`neurodecode.data` read these through the same code a lab uses on
the real download. Writers take data arrays (so simulations can write known answers);
``make_*_fixture`` fill them with random but structurally faithful values.
"""

from ._bold5000 import make_bold5000_fixture, write_bold5000_stimuli, write_bold5000_subject, write_schaefer_atlas
from ._brennan import (
    brennan2019_path,
    make_brennan2019_fixture,
    write_brennan2019_proc,
    write_brennan2019_raw,
    write_brennan2019_wav,
    write_brennan2019_words,
)
from ._broderick import make_broderick2019_fixture, write_broderick2019_run, write_broderick2019_words
from ._hub import realarch_depth, write_hub_fixture
from ._meg_masc import (
    kit_channel_names,
    make_meg_masc_fixture,
    meg_masc_path,
    write_meg_masc_recording,
    write_meg_masc_wav,
)
from ._mous import (
    make_mous_fixture,
    mous_channel_names,
    mous_path,
    mous_sound_events,
    write_mous_recording,
    write_mous_textgrid,
    write_mous_wav,
)
from ._nsd import make_nsd_fixture, nsd_path, write_nsd_tree
from ._things_eeg2 import make_things_eeg2_fixture, write_things_eeg2_subject
from ._things_meg import ctf_channel_names, make_things_meg_fixture, things_meg_path, write_things_meg_subject
from ._zuco import make_zuco_fixture, write_zuco_labels, write_zuco_subject, zuco_path

__all__ = ["write_nsd_tree", "make_nsd_fixture", "nsd_path", "write_things_eeg2_subject", "make_things_eeg2_fixture",
           "write_things_meg_subject", "make_things_meg_fixture", "things_meg_path", "ctf_channel_names",
           "write_zuco_subject", "write_zuco_labels", "make_zuco_fixture", "zuco_path", "write_hub_fixture", "realarch_depth",
           "write_meg_masc_recording", "write_meg_masc_wav", "make_meg_masc_fixture", "meg_masc_path",
           "kit_channel_names", "write_bold5000_subject", "write_bold5000_stimuli", "write_schaefer_atlas",
           "make_bold5000_fixture", "make_broderick2019_fixture", "write_broderick2019_run",
           "write_broderick2019_words", "make_mous_fixture", "write_mous_recording", "write_mous_wav",
           "write_mous_textgrid", "mous_sound_events", "mous_path", "mous_channel_names", "make_brennan2019_fixture",
           "write_brennan2019_raw", "write_brennan2019_proc", "write_brennan2019_words", "write_brennan2019_wav",
           "brennan2019_path"]
