"""neurodecode.simulate (being built)."""

__all__: list[str] = []
