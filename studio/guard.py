"""What protects the server as a whole: the size of a request, uploads left behind, stored sessions.

The per-request limits on clips, text and audio are in studio/inputs.py; these are the ones that
gradio's server applies before any handler runs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger("csm-studio")

# A request's JSON: 32 transcripts of 4,000 characters fit many times over, so an over-long argument still
# reaches the handler that names it; far larger bodies are refused unread. Uploads have their own limit.
MAX_BODY_BYTES = 4 << 20
SESSION_CAPACITY = 500  # sessions whose state is kept (least recently used go first): ~0.2 MB each
UPLOAD_LEFTOVER_S = float(os.environ.get("CSM_STUDIO_UPLOAD_LEFTOVER_S", 1800))  # an upload this old is abandoned


class BodyLimit:
    """ASGI middleware: a request other than an upload carries at most `max_bytes`, or gets 413 unread."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].endswith("/upload"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_bytes:
            return await self.refuse(send)
        received = 0

        async def counted():  # a body sent in chunks is counted as it arrives
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise ValueError(f"request body over {self.max_bytes} bytes")
            return message

        return await self.app(scope, counted, send)

    async def refuse(self, send) -> None:
        body = f"The request is larger than {self.max_bytes >> 20} MB; files go through the upload route.".encode()
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})


def sweep_abandoned_uploads(folder: Path, older_than_s: float = UPLOAD_LEFTOVER_S) -> int:
    """Delete the temporary files of uploads that were cut off (gradio keeps them); returns how many.

    A finished upload's temporary file is moved into a cache folder at once, so a `tmp*` file left at
    the top of the upload folder for this long belongs to a request that never finished.
    """
    removed, now = 0, time.time()
    for path in folder.glob("tmp*"):
        try:
            if path.is_file() and now - path.stat().st_mtime > older_than_s:
                path.unlink()
                removed += 1
        except OSError:  # gone meanwhile, or not ours to delete
            continue
    return removed


def start_upload_sweeper(folder: Path, older_than_s: float = UPLOAD_LEFTOVER_S) -> threading.Thread:
    def sweep_forever():
        while True:
            time.sleep(max(1.0, min(60.0, older_than_s / 2)))
            if removed := sweep_abandoned_uploads(folder, older_than_s):
                log.info("Removed %d abandoned upload(s) from %s", removed, folder)

    thread = threading.Thread(target=sweep_forever, name="upload-sweeper", daemon=True)
    thread.start()
    return thread
