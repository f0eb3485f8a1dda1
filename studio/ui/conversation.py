"""Panel 2, the conversation so far: earlier turns to play, reorder and remove, and a form to add one."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from studio.clips import load_clip
from studio.errors import InputError
from studio.inputs import MAX_CLIPS, SAMPLE_RATE, check_speaker
from studio.ui.style import COMPACT_PLAYER, PRIVATE, SHOWN_CARDS


def new_turn(path, text: str, speaker: int, seconds: float, voice: str | None = None) -> dict:
    """A turn of the conversation as the page keeps it (in a gr.State); `voice` names the speaker."""
    return {"id": uuid.uuid4().hex[:8], "path": str(path), "text": text, "speaker": int(speaker),
            "seconds": round(seconds, 2), "voice": voice}  # fmt: skip


def move_turn(turns: list, index: int, step: int) -> list:
    other = index + step
    if not 0 <= other < len(turns):
        return turns
    turns = list(turns)
    turns[index], turns[other] = turns[other], turns[index]
    return turns


def show_turns(turns: list, turns_state: gr.State, use_voice: Callable[[], tuple]) -> None:
    """The earlier turns, one row each (inside a gr.render). `use_voice()`: (handler, inputs, outputs) of
    "Use as voice", which gives the turn's speaker the turn's clip as its voice (asked for at render
    time: the page that wires it is made after this panel)."""
    if not turns:
        gr.Markdown("*No earlier turns yet: add a clip below, or add a generated result.*")
        return
    for i, turn in enumerate(turns):
        with gr.Row(elem_classes=["turn-row"], key=f"turn-{turn['id']}"):
            voice = f" · {turn['voice']}" if turn.get("voice") else ""
            gr.Markdown(f"**#{i + 1}** Speaker {turn['speaker']}{voice}", elem_classes=["turn-label"])
            gr.Audio(turn["path"], show_label=False, interactive=False, scale=3, min_width=260, buttons=[],
                     container=False, waveform_options=COMPACT_PLAYER)  # fmt: skip
            gr.Markdown(turn["text"], scale=3)
            up = gr.Button("↑", size="sm", elem_classes=["icon-button"], interactive=i > 0, scale=0)
            down = gr.Button("↓", size="sm", elem_classes=["icon-button"], interactive=i < len(turns) - 1, scale=0)
            remove = gr.Button("✕", size="sm", elem_classes=["icon-button"], scale=0)
            use = gr.Button(f"🎤 Speaker {turn['speaker']}'s voice", size="sm", scale=0, min_width=150,
                            elem_classes=["use-turn-voice"])  # fmt: skip
        handler, inputs, outputs = use_voice()
        use.click(lambda *values, t=turn: handler(t["speaker"], t["path"], t["text"], *values), inputs, outputs,
                  **PRIVATE)  # fmt: skip
        up.click(lambda t, i=i: move_turn(t, i, -1), turns_state, turns_state, **PRIVATE)
        down.click(lambda t, i=i: move_turn(t, i, +1), turns_state, turns_state, **PRIVATE)
        remove.click(lambda t, i=i: t[:i] + t[i + 1 :], turns_state, turns_state, **PRIVATE)
    gr.Button("Clear the conversation", size="sm").click(lambda: [], None, turns_state, **PRIVATE)


def add_earlier_turn(turns: list, path, text, speaker, voice: str | None, room_s: float) -> list:
    """The conversation with one more turn, or an InputError: a clip too long for the window is refused
    here, where it is added, rather than at Generate."""
    if len(turns) >= MAX_CLIPS:
        raise InputError(f"The conversation has {len(turns)} turns, the most a request reads: remove one first.")
    speaker = check_speaker(speaker, "The speaker of the turn")
    segment = load_clip(path, text, speaker, f"turn {len(turns) + 1}")
    seconds = len(segment.audio) / SAMPLE_RATE
    if seconds > room_s:
        raise InputError(
            f"The clip of turn {len(turns) + 1} is {seconds:.0f} s long, too long for the model's context: "
            f"about {room_s:.0f} s fit next to a reply. Use a shorter clip."
        )
    return turns + [new_turn(path, segment.text, speaker, seconds, voice)]


@dataclass
class ConversationPanel:
    clip: gr.Audio
    note: gr.Markdown
    transcript: gr.Textbox
    auto: gr.State  # the transcript last filled in automatically
    speaker: gr.Dropdown  # its choices follow the voice cards
    add: gr.Button


def conversation_panel(turns_state: gr.State, speaker_names: list, use_voice: Callable[[], tuple]) -> ConversationPanel:
    gr.Markdown(
        "### 2 · Conversation so far *(optional)*\n"
        "Earlier turns, oldest first: with the voices, they are the context of what is said next."
    )
    gr.render(inputs=turns_state)(lambda turns: show_turns(turns, turns_state, use_voice))
    with gr.Accordion("Add an earlier turn", open=False), gr.Row():
        clip = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Clip", scale=2,
                        elem_id="new-turn-audio")  # fmt: skip
        with gr.Column(scale=2):
            note = gr.Markdown("", elem_classes=["clip-note"], elem_id="new-turn-note")
            transcript = gr.Textbox(label="Transcript", lines=2, placeholder="The words spoken in the clip",
                                    elem_id="new-turn-text")  # fmt: skip
            auto = gr.State("")
            speaker = gr.Dropdown(speaker_names[:SHOWN_CARDS], value=0, label="Speaker", elem_id="new-turn-speaker")
            add = gr.Button("Add to the conversation", variant="secondary", elem_id="add-turn")
    return ConversationPanel(clip, note, transcript, auto, speaker, add)
