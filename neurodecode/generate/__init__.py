"""neurodecode.generate (being built)."""

__all__: list[str] = []
