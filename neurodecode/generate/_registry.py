"""The registry of generators: a name -> ``"module:Class"`` (imported only when asked for)."""

from __future__ import annotations

import importlib

__all__ = ["GENERATORS", "generator_class"]

#: Generator name -> "module:Class" (imported only when asked for).
GENERATORS: dict[str, str] = {
    "versatile": "neurodecode.generate._versatile:VersatileGenerator",
    "versatile-image": "neurodecode.generate._versatile_image:VersatileImageVariation",
    "unclip": "neurodecode.generate._unclip:UnCLIPGenerator",
    "sdxl-turbo": "neurodecode.generate._sdxl_turbo:SDXLTurboGenerator",
    "sdxl-unclip": "neurodecode.generate._sdxl_unclip:SDXLUnCLIPGenerator",
    "lowlevel": "neurodecode.generate._lowlevel:LowLevelGenerator",
    "vdvae": "neurodecode.generate._vdvae:VDVAEGenerator",
    "git": "neurodecode.generate._captions:GitCaptioner",
    "retrieval": "neurodecode.generate._captions:CaptionRetriever",
    "blip": "neurodecode.generate._blip:BlipCaptioner",
    "dpt-depth": "neurodecode.generate._depth:DptDepthDecoder",
    "sd-img2img": "neurodecode.generate._sd_img2img:SDImg2ImgGenerator",
    "sd2-depth": "neurodecode.generate._depth2img:Depth2ImgGenerator",
    "sd-controlnet-depth": "neurodecode.generate._controlnet:ControlNetDepthGenerator",
}


def generator_class(name: str) -> type:
    """The generator class registered under ``name``."""
    from .._core.validation import check_option

    check_option(name, "generator", list(GENERATORS))
    module, cls = GENERATORS[name].split(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]
