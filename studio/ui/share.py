"""Sharing a session: its bundle to download, a link that reopens the page, opening a bundle, reproducing it.

The panel (`share_panel`), and what restoring the page from a bundle means (`page_state_of`): the
turns, takes, kept takes and ratings as studio/ui/turns.py keeps them. The events are in share_events.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import soundfile as sf

from csm.generator import FRAME_MS
from studio.errors import InputError
from studio.inputs import SAMPLE_RATE
from studio.jobs import TAKE_LABELS
from studio.outputs import OUTPUT_DIR
from studio.sessions import Session, SessionTurn, first_chunk_frames_of
from studio.ui.style import COPY_LINK
from studio.ui.turns import restitched

SHARE_HELP = (
    "A **session bundle** is one .zip: every take's WAV, the voices and clips as the model heard them, and "
    "`manifest.json` with what regenerates it (model, device, settings, seeds, kept takes, ratings). "
    "**Open** one to carry on where it was left; **Reproduce** makes every turn again and says, turn by turn, "
    "whether it is the same audio (bit for bit on the same device and dtype). The **link** reopens this page "
    "with the bundle made last: it lasts as long as the app's files (6 hours, or until the Space restarts)."
)


@dataclass
class SharePanel:
    make: gr.Button
    bundle: gr.File  # the session's .zip, to download
    token: gr.Textbox  # hidden: the bundle's name among the app's outputs, which a copied link carries
    link: gr.DeepLinkButton
    opened: gr.File  # a bundle to open
    reproduce: gr.Button
    report: gr.Markdown


def share_panel() -> SharePanel:
    with gr.Accordion("📦 Share, open or reproduce a session", open=False, elem_id="share"):
        gr.Markdown(SHARE_HELP)
        with gr.Row():
            make = gr.Button("📦 Make the session bundle", size="sm", elem_id="make-bundle")
            link = gr.DeepLinkButton(COPY_LINK, size="sm", visible=False)
        bundle = gr.File(label="Session bundle", interactive=False, visible=False, elem_id="session-bundle")
        token = gr.Textbox(visible=False)
        opened = gr.File(label="Open a session (.zip)", file_types=[".zip"], type="filepath", elem_id="open-session")
        reproduce = gr.Button("🔁 Reproduce it", size="sm", elem_id="reproduce")
        report = gr.Markdown("", elem_id="reproduce-report")
    return SharePanel(make, bundle, token, link, opened, reproduce, report)


# What a link may name: a bundle this app wrote into one of its run folders (see studio/bundle.py).
TOKEN = re.compile(r"^run-[0-9]{8}-[0-9]{6}-[0-9a-f]{8}/csm-studio-session-[0-9-]+\.zip$")


def bundle_token(path) -> str:
    """A bundle's name among the app's outputs: what a link carries instead of a server path."""
    path = Path(path).resolve()
    return f"{path.parent.name}/{path.name}"


def bundle_of_token(token) -> Path | None:
    """The bundle a link names, if it is one this app made and still has; None for anything else."""
    if not isinstance(token, str) or not TOKEN.fullmatch(token):
        return None
    path = (OUTPUT_DIR / token).resolve()
    return path if path.is_relative_to(OUTPUT_DIR.resolve()) and path.is_file() else None


def turn_state_of(turn: SessionTurn) -> dict:
    """A bundle's turn as the page keeps a result's turn (studio/ui/turns.py)."""
    takes, kept = [], 0
    given = [t for t in turn.takes if t.path]
    if len(given) > len(TAKE_LABELS):
        raise InputError(f"Turn {turn.index + 1} of this session has {len(given)} takes; at most {len(TAKE_LABELS)}.")
    for i, take in enumerate(given):
        info = sf.info(take.path)  # from anyone: a turn of this app's is a 24 kHz mono WAV
        if info.samplerate != SAMPLE_RATE or info.channels != 1:
            raise InputError(f"Turn {turn.index + 1}'s take {i + 1} in this session is not a 24 kHz mono WAV.")
        seconds = info.frames / info.samplerate
        ended = take.ended_by_model if take.ended_by_model is not None else turn.report.get("ended_by_model", True)
        takes.append({"label": TAKE_LABELS[i], "path": take.path, "seconds": round(seconds, 3), "seed": take.seed,
                      "frames": round(seconds * 1000 / FRAME_MS), "ended_by_model": ended, "rating": take.rating})  # fmt: skip
        kept = i if take.kept else kept
    # The seed its takes were drawn with, as the page had it: a Redo's, where one replaced the run's takes (the
    # manifest's turn seed stays the run's, which reproduce generates the session from).
    seed = given[kept].seed if given and isinstance(given[kept].seed, int) else turn.seed
    return {"index": turn.index, "speaker": turn.speaker, "text": turn.text, "voice": turn.voice, "seed": seed,
            "stopped": turn.partial, "kept": kept, "takes": takes, "order": list(range(len(takes))), "blind": False,
            "stale": None}  # fmt: skip


def page_state_of(session: Session) -> dict:
    """The result part of the page, from an opened bundle: the turns, their takes, the stitched conversation."""
    turns = [turn_state_of(turn) for turn in session.turns if any(take.path for take in turn.takes)]
    state = {"seed": session.settings.get("seed"), "run": Path(session.folder).name, "turns": turns,
             "script": len(turns) > 1 or len(session.script) > 1, "conversation": None,
             "first_chunk_frames": first_chunk_frames_of(session.settings)}  # a redo streams as the session did  # fmt: skip
    return restitched(state) if turns else state


def extra_of(state: dict, script_text: str | None) -> dict:
    """What the page adds to a run's bundle: each turn's takes as they stand (kept, rated), the script as typed."""
    takes = [
        [
            {
                "path": take["path"],
                "seed": turn["seed"],
                "kept": i == turn["kept"],
                "rating": take["rating"],
                "ended_by_model": take.get("ended_by_model"),
            }
            for i, take in enumerate(turn["takes"])
        ]  # fmt: skip
        for turn in state.get("turns", [])
    ]
    return {"takes": takes, "script_text": script_text or None}
