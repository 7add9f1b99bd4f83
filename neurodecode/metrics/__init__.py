"""Score decoded images, latents and sentences the way the literature does (specs/metrics.md).

Pure metric functions take NumPy arrays and return per-item scores (the published
number is their mean), so every score gets a bootstrap CI and a shuffled control;
:func:`evaluate_reconstructions` and :func:`evaluate_text` run whole protocols and
:func:`write_report` turns a result into a self-contained HTML page.
"""

from ._controls import noise_input_control, noise_inputs, shuffled_control, shuffled_pairing
from ._evaluate import METRICS_VERSION, evaluate_reconstructions, summarize
from ._identification import correlation_distance, two_way_identification
from ._image import pixcorr, ssim
from ._report import render_report, write_report
from ._retrieval import kway_topk, retrieval_top1
from ._stats import bootstrap_ci, chance_level
from ._text import bleu_scores, embedding_similarity, evaluate_text, rouge_scores, word_error_rate

__all__ = [
    "METRICS_VERSION",
    "pixcorr",
    "ssim",
    "two_way_identification",
    "correlation_distance",
    "retrieval_top1",
    "kway_topk",
    "bootstrap_ci",
    "chance_level",
    "summarize",
    "shuffled_control",
    "shuffled_pairing",
    "noise_inputs",
    "noise_input_control",
    "evaluate_reconstructions",
    "bleu_scores",
    "rouge_scores",
    "word_error_rate",
    "embedding_similarity",
    "evaluate_text",
    "render_report",
    "write_report",
]
