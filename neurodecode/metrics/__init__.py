"""neurodecode.metrics (being built)."""

__all__: list[str] = []
