"""Torch modules: subject adapters, the published decoders, shared losses and solvers."""

__all__: list[str] = []
