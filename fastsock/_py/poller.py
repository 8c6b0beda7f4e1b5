"""Placeholder until the poller feature lands."""

__all__: list[str] = []
