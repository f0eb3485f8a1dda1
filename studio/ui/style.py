"""The page's look and the event options every panel uses."""

from __future__ import annotations

import shutil

import gradio as gr

CSS = """
#status-banner { border-radius: 8px; padding: 2px 16px; }
#status-banner.banner-note { background: var(--color-accent-soft); border-left: 4px solid var(--color-accent); }
#status-banner.banner-error { background: var(--error-background-fill); border-left: 4px solid var(--error-border-color);
                              color: var(--error-text-color); }
#status-banner h3 { margin: 10px 0 4px 0; }
.turn-row { align-items: center !important; }
.turn-label { min-width: 90px; }
.icon-button { min-width: 42px !important; max-width: 48px; font-size: 1.1em !important; }
.preset-transcript p { font-style: italic; color: var(--body-text-color-subdued); font-size: 0.9em; margin: 0; }
#text-counter p { font-size: 0.85em; color: var(--body-text-color-subdued); margin: 2px 8px; }
.context-meter { display: flex; height: 10px; border-radius: 5px; overflow: hidden; margin: 6px 0 2px 0;
                 background: var(--border-color-primary); }
.meter-part { display: block; height: 100%; }
#context-meter small { color: var(--body-text-color-subdued); }
#use-voice, #my-voices-delete { align-self: flex-end; max-height: 44px; }
.clip-note p { font-size: 0.95em; color: var(--body-text-color); margin: 4px 8px; }
"""

INTRO = """
# 🗣️ CSM Studio
Conversational speech with [Sesame CSM-1B](https://huggingface.co/sesame/csm-1b): give each speaker a voice,
add the conversation so far if you like, then type the next line or a whole script. Each turn is spoken
in the context of the voices and the turns before it, and plays while it is being generated.
"""

STREAMING = shutil.which("ffmpeg") is not None  # gradio encodes streamed audio with ffmpeg
COMPACT_PLAYER = gr.WaveformOptions(show_recording_waveform=False)  # the browser's own one-line player
MAX_CARDS = 4  # speaker cards on the page (speakers 0-3); scripts and the API take ids up to 9
SHOWN_CARDS = 2  # cards shown at first
# Buttons shown and hidden by events: an update names the label too, because a copied link (gr.DeepLinkButton)
# keeps a component as its last update left it, and a button left without a label comes back as "Run".
ADD_SPEAKER, REMOVE_SPEAKER, ADD_TO_CONVERSATION = "+ Add speaker", "− Remove speaker", "+ Add to the conversation"
COPY_LINK = "🔗 Copy a link to it"


def shown_button(label: str, visible: bool) -> dict:
    return gr.update(value=label, visible=visible)


PRIVATE = {"api_visibility": "private"}  # UI-only events: the API is /generate and /generate_script
# Quick UI-only events skip the queue: a queue full of generations must not stall a page load or a click.
# (Events that change the conversation's gr.State stay queued: gr.render missed un-queued State changes.)
UI_ONLY = {**PRIVATE, "queue": False}
