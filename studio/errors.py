"""How failures reach people: bad input gets its own message, anything else a short one and a log line."""

from __future__ import annotations

import logging
from contextlib import contextmanager

import gradio as gr
import torch

log = logging.getLogger("csm-studio")

# Messages may start with an API argument's name; those keep their spelling ("context_text must ...").
ARGUMENT_NAMES = {
    "text", "speaker", "script", "voices", "context_audio", "context_text", "context_speakers",
    "temperature", "topk", "max_seconds", "seed",
}  # fmt: skip


class InputError(ValueError):
    """A request the app cannot serve as given; the message tells the user what to change."""


def capitalized(text: str) -> str:
    """ "speaker 0's voice" -> "Speaker 0's voice": only the first letter changes."""
    return text[:1].upper() + text[1:]


def sentence(message: str) -> str:
    """`message` with a capital first letter, unless it starts with an argument's or a file's name."""
    first = message.split(" ", 1)[0].strip("`:,.")
    if not message or first in ARGUMENT_NAMES or any(c in first for c in "._/"):
        return message
    return capitalized(message)


def user_message(error: Exception) -> str:
    """What to tell the user about `error`; unexpected errors are logged with their traceback."""
    if isinstance(error, gr.Error):
        return str(error.message)
    if isinstance(error, ValueError):  # InputError, and csm's own input checks
        return sentence(str(error))
    if isinstance(error, torch.cuda.OutOfMemoryError):
        log.error("Out of GPU memory", exc_info=error)
        return "The GPU ran out of memory: lower the max length or use shorter context clips."
    log.error("Generation failed", exc_info=error)
    return f"Generation failed unexpectedly ({type(error).__name__}). The app is still running: try again."


@contextmanager
def user_facing_errors():
    """Any failure -> a gr.Error with a message a person can act on. The app keeps serving."""
    try:
        yield
    except gr.Error:
        raise
    except Exception as e:
        raise gr.Error(user_message(e), print_exception=False) from None
