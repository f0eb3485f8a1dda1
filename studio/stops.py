"""Stop: one flag per browser session, set by the Stop button and read by the running job between chunks.

A flag rather than gradio's `cancels`: cancelling kills the event, and with it every turn done so far.
"""

from __future__ import annotations

import threading


class StopSignals:
    def __init__(self):
        self._flags: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def arm(self, session: str) -> None:
        """At a Generate click, before the job is queued: a Stop from now on stops this job.

        A flag not yet set is kept: a second click while a job is pending or running (gradio runs the
        job once) must not leave that job with a flag that Stop no longer reaches. A set one is stale.
        """
        with self._lock:
            if session not in self._flags or self._flags[session].is_set():
                self._flags[session] = threading.Event()

    def stop(self, session: str) -> None:
        with self._lock:
            if session in self._flags:
                self._flags[session].set()

    def flag(self, session: str) -> threading.Event:
        with self._lock:
            return self._flags.setdefault(session, threading.Event())

    def release(self, session: str, flag: threading.Event | None = None) -> None:
        """The job is over, or the page is closed: forget the session's flag (unless a newer one replaced it)."""
        with self._lock:
            if flag is None or self._flags.get(session) is flag:
                self._flags.pop(session, None)

    def __len__(self) -> int:
        return len(self._flags)
