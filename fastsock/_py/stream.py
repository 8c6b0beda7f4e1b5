"""Placeholder until the stream feature lands."""

__all__: list[str] = []
