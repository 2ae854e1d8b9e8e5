"""Two-stage Ctrl-C: the first stops the sweep after the running case, the second stops it at once."""

from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType
from typing import Callable, Iterator


class StopRequest:
    """A SIGINT handler for the duration of a ``with`` block.

    The first SIGINT sets ``requested`` and calls ``on_first``; the sweep loop checks
    ``requested`` after each case. The second raises KeyboardInterrupt, unless it
    arrives inside ``protected()``, in which case it is raised when that block ends.
    Outside the main thread no handler can be installed, and Ctrl-C keeps its default.
    """

    def __init__(self, on_first: Callable[[], None] | None = None):
        self.on_first = on_first
        self.requested = False
        """Whether a stop after the running case was requested."""
        self._protecting = False
        self._pending = False
        self._previous: object = None
        self._installed = False

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.requested:
            self.requested = True
            if self.on_first:
                self.on_first()
            return
        if self._protecting:
            self._pending = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def protected(self) -> Iterator[None]:
        """Hold back a second Ctrl-C until the block ends, so a record is never written halfway."""
        self._protecting = True
        try:
            yield
        finally:
            self._protecting = False
        if self._pending:
            self._pending = False
            raise KeyboardInterrupt
