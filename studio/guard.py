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

# A request's JSON: 32 transcripts of 4,000 characters fit several times over, so an over-long argument
# still reaches the handler that names it; larger bodies are refused unread. Gradio keeps each session's
# last inputs, so this times SESSION_CAPACITY bounds that memory too.
MAX_BODY_BYTES = 1 << 20
MAX_UPLOAD_BYTES = 51 << 20  # one upload request: MAX_UPLOAD (50 MB) and the multipart framing
SESSION_CAPACITY = 300  # sessions whose state is kept (least recently used go first)
UPLOAD_LEFTOVER_S = float(os.environ.get("CSM_STUDIO_UPLOAD_LEFTOVER_S", 1800))  # an upload this old is abandoned
BODY_METHODS = {"POST", "PUT", "PATCH"}


def is_upload_route(path: str) -> bool:
    """gradio's upload route exactly: /gradio_api/call/upload is an API call, with a JSON body."""
    return path.rstrip("/").split("/")[-2:] == ["gradio_api", "upload"]


class BodyLimit:
    """ASGI middleware: a request body is at most `max_bytes` (an upload at most MAX_UPLOAD_BYTES), and
    says its length up front; anything else gets 411 or 413 before a byte of it is read."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            return await self.app(scope, receive, send)
        limit = MAX_UPLOAD_BYTES if is_upload_route(scope["path"]) else self.max_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is None or not declared.isdigit():
            return await self.refuse(send, 411, "The request must say its length (Content-Length).")
        if int(declared) > limit:
            return await self.refuse(send, 413, f"The request is larger than {limit >> 20} MB.")
        return await self.app(scope, receive, send)

    @staticmethod
    async def refuse(send, status: int, message: str) -> None:
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": message.encode()})


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
