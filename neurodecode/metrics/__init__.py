"""Score decoded images, latents and sentences the way the literature does (specs/metrics.md).

Pure metric functions take NumPy arrays and return per-item scores (the published
number is their mean), so every score gets a bootstrap CI and a shuffled control;
:func:`evaluate_reconstructions` and :func:`evaluate_text` run whole protocols
(``protocol="mindeye2"`` / ``"brain-diffuser"`` for images, ``"corpus"`` / ``"glim"`` for
sentences) and :func:`write_report` turns a result into a self-contained HTML page.

Every ranking score (k-way, top-k, retrieval, identification) goes through one tie rule,
:func:`true_rank` / :func:`topk_identification`: a tie is a miss.
"""

from ._ablation import YEO7_NETWORKS, ablation_masks, network_ablation
from ._brain_correlation import (
    BRAIN_CORRELATION_PROTOCOLS,
    brain_correlation,
    encoding_accuracy,
    noise_ceiling_from_ncsnr,
    roi_masks,
)
from ._captions import (
    CAPTION_DEFAULT_METRICS,
    CAPTION_METRICS,
    cider_d,
    clip_score,
    coco_bleu,
    coco_meteor,
    coco_rouge_l,
    coco_tokenize,
    evaluate_captions,
    spice_scores,
)
from ._controls import noise_input_control, noise_inputs, shuffled_control, shuffled_pairing
from ._deps import MissingDependencyError
from ._depth import (
    DEPTH_ALIGN,
    DEPTH_METRICS,
    abs_rel,
    align_depth,
    depth_correlation,
    evaluate_depth,
    scale_invariant_log_error,
)
from ._evaluate import (
    IMAGE_METRICS,
    IMAGE_PROTOCOLS,
    METRICS_VERSION,
    TEXT_DEFAULT_METRICS,
    evaluate_reconstructions,
    summarize,
)
from ._identification import correlation_distance, two_way_identification
from ._image import pixcorr, pixcorr_brain_diffuser, ssim, ssim_brain_diffuser
from ._latents_io import read_predicted_latents, save_predicted_latents
from ._references import merge_paraphrases, read_paraphrases, read_references, write_references
from ._report import render_report, write_report
from ._retrieval import (
    identification_top1,
    identification_with_control,
    kway_topk,
    retrieval_top1,
    topk_identification,
    true_rank,
)
from ._segments import SPEECH_PAPER_RESULTS, segment_retrieval
from ._stats import bootstrap_ci, chance_level, derangement
from ._text import (
    TEXT_PROTOCOLS,
    bleu_scores,
    embedding_similarity,
    evaluate_text,
    rouge_scores,
    word_error_rate,
    word_tokenize,
)
from ._text_ranking import (
    ZERO_SHOT_TASKS,
    block_retrieval,
    other_sentence_pairing,
    retrieval_blocks,
    zero_shot_classification,
    zero_shot_prompts,
    zero_shot_targets,
)

__all__ = [
    "network_ablation",
    "ablation_masks",
    "YEO7_NETWORKS",
    "derangement",
    "IMAGE_METRICS",
    "TEXT_DEFAULT_METRICS",
    "METRICS_VERSION",
    "IMAGE_PROTOCOLS",
    "TEXT_PROTOCOLS",
    "pixcorr",
    "ssim",
    "pixcorr_brain_diffuser",
    "ssim_brain_diffuser",
    "two_way_identification",
    "correlation_distance",
    "retrieval_top1",
    "kway_topk",
    "true_rank",
    "topk_identification",
    "identification_top1",
    "identification_with_control",
    "block_retrieval",
    "other_sentence_pairing",
    "retrieval_blocks",
    "ZERO_SHOT_TASKS",
    "zero_shot_prompts",
    "zero_shot_targets",
    "zero_shot_classification",
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
    "word_tokenize",
    "embedding_similarity",
    "evaluate_text",
    "CAPTION_METRICS",
    "CAPTION_DEFAULT_METRICS",
    "evaluate_captions",
    "coco_tokenize",
    "coco_bleu",
    "coco_rouge_l",
    "cider_d",
    "coco_meteor",
    "spice_scores",
    "clip_score",
    "DEPTH_METRICS",
    "DEPTH_ALIGN",
    "evaluate_depth",
    "scale_invariant_log_error",
    "abs_rel",
    "depth_correlation",
    "align_depth",
    "read_references",
    "write_references",
    "read_paraphrases",
    "merge_paraphrases",
    "save_predicted_latents",
    "read_predicted_latents",
    "render_report",
    "write_report",
    "MissingDependencyError",
    "BRAIN_CORRELATION_PROTOCOLS",
    "brain_correlation",
    "encoding_accuracy",
    "noise_ceiling_from_ncsnr",
    "roi_masks",
    "segment_retrieval",
    "SPEECH_PAPER_RESULTS",
]
