"""Known-answer datasets: simulated brain responses to real stimuli, in the published layouts.

Each simulator turns real images (or sentences) into brain responses through a documented encoding model,
writes them through the :mod:`neurodecode.testing` writers in the dataset's exact layout, saves the ground
truth beside the tree (``OUT/truth/``) and the ideal observer's scores on the test split
(``OUT/ceiling.json``): the best any decoder could do on these data.

- :func:`simulate_nsd` (fMRI, NSD), :func:`simulate_things_eeg2`, :func:`simulate_things_meg` (M/EEG, MNE
  forward models), :func:`simulate_zuco` (sentence-level EEG driven by all-MiniLM-L6-v2);
- :func:`simulate_meg_masc`, :func:`simulate_broderick2019` (speech: eSpeak NG sentences, MEG-MASC / Broderick
  2019 EEG layouts, auditory encoding model through the MNE forward model);
- :func:`known_answer_captions`, :func:`known_answer_depth`, :func:`load_simulated_depth` (NSD captions and
  depth maps that are functions of the image: ``simulate_nsd(..., annotations="image")``);
- :func:`load_stimuli` (shipped Fashion-MNIST subset and scikit-image photographs), :func:`load_truth`;
- :func:`ideal_observer` and :func:`identification_scores` (the ceiling's scoring).
"""

from ._annotations import known_answer_captions, known_answer_depth, load_simulated_depth
from ._common import SimulationResult, load_truth
from ._ideal import ideal_observer, identification_scores
from .fmri import simulate_nsd
from .meeg import simulate_things_eeg2, simulate_things_meg
from .speech import simulate_broderick2019, simulate_meg_masc
from .stimuli import load_stimuli
from .text import make_sentences, simulate_zuco

__all__ = ["SimulationResult", "load_stimuli", "load_truth", "simulate_nsd", "simulate_things_eeg2",
           "simulate_things_meg", "simulate_zuco", "simulate_meg_masc", "simulate_broderick2019", "make_sentences", "ideal_observer", "identification_scores",
           "known_answer_captions", "known_answer_depth", "load_simulated_depth"]
