"""Placeholder until the socket feature lands."""

__all__: list[str] = []
