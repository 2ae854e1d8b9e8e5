"""Exceptions that meobench reports to the user without a traceback."""

from __future__ import annotations


class MeobenchError(Exception):
    """An error caused by the user's input or environment, shown as one message.

    The CLI prints the message and exits with ``exit_code``: 2, a usage error,
    unless a subclass sets another.
    """

    exit_code = 2


class ScenarioError(MeobenchError):
    """A scenario file that cannot be read or does not match the schema."""


class ConfigError(MeobenchError):
    """A layer or case configuration that cannot be built."""
