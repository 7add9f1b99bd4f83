"""How a neural decoder declares what it is trained on, and building one from its target shapes.

Read by the recipe runners, the estimators and the contract tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from .._core.errors import ValidationError
from .._core.validation import check_option, format_error

__all__ = ["DecoderTarget", "build_decoder"]


class DecoderTarget(NamedTuple):
    """One training target of a decoder, under its batch key (the key of ``targets`` on the class).

    Attributes
    ----------
    config_field : str
        The config field holding the shape of one target (read from the latent space).
    latent_key : str or None
        The key of ``predict_latents``' output that predicts it (None: the config's ``target_key``).
    required : bool
        Whether the decoder needs it (an optional target left out turns its head off).
    """

    config_field: str
    latent_key: str | None
    required: bool


def build_decoder(name: str, *, subjects: Mapping[str, int], target_shapes: Mapping[str, Any],
                  base: str = "default", **fields: Any) -> Any:
    """Build decoder ``name`` for ``subjects`` with its target shapes taken from the latent spaces.

    Parameters
    ----------
    name : {"mindbridge", "mindeye2"}
    subjects : dict of str to int
        Subject id -> number of voxels.
    target_shapes : dict of str to tuple of int
        Batch key -> shape of one target (e.g. ``{"image_tokens": (257, 768)}``); optional keys
        left out turn their head off.
    base : {"default", "tiny", "low_compute"}
        The config preset the fields override.
    **fields
        Config fields (a shape field given here must agree with ``target_shapes``).

    Returns
    -------
    model : torch.nn.Module
    """
    from . import decoder_class

    cls: Any = decoder_class(name)
    cfg_cls = cls.config_class
    for key, target in cls.targets.items():
        shape = target_shapes.get(key)
        if shape is None:
            if target.required:
                raise ValidationError(format_error(f"latents.{key}", f"a latent space for {name}'s {key}", "none",
                                                   f"Add [latents.{key}] with a space name to the recipe"))
            fields[target.config_field] = None
            continue
        shape = [int(v) for v in shape]
        given = fields.get(target.config_field)
        if given is not None and [int(v) for v in given] != shape:
            raise ValidationError(format_error(
                f"decoder.{target.config_field}", f"the latent space's shape {shape}", list(given),
                f"Drop decoder.{target.config_field} (it is read from the space) or change the space"))
        fields[target.config_field] = shape
    subjects = {str(k): int(v) for k, v in subjects.items()}
    check_option(base, "decoder.base", ("default", "tiny", "low_compute"))
    if base == "tiny":
        config = cfg_cls.tiny(subjects, **fields)
    elif base == "low_compute":
        if not hasattr(cfg_cls, "low_compute"):
            raise ValidationError(format_error("decoder.base", f"'default' or 'tiny' for {name}", "'low_compute'"))
        config = cfg_cls.low_compute(subjects=subjects, **fields)
    else:
        config = cfg_cls.from_dict({"subjects": subjects, **fields})
    return cls(config)
