"""Errors a user can fix: each message names the key, the bad value and what is allowed."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad key or value; the message names it and the valid choices."""
