"""Panel 1, the voices: one card per speaker with a preset (previewed with its transcript), an own clip, or none."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio.library import MAX_NAME_CHARS, MAX_SAVED_VOICES, SAVED_PREFIX, library_choices
from studio.presets import PresetLibrary
from studio.service import Studio, Voice
from studio.ui.style import ADD_SPEAKER, COMPACT_PLAYER, MAX_CARDS, REMOVE_SPEAKER, SHOWN_CARDS

OWN_VOICE = "own"
NO_VOICE = "none"


def voice_choices(presets: PresetLibrary, library: list | None = None) -> list[tuple[str, str]]:
    """The presets, the voices saved in this browser, an own clip, or none."""
    return (
        [(p.name, p.id) for p in presets.all()]
        + library_choices(library)
        + [
            ("Own voice: upload or record a clip", OWN_VOICE),
            ("No voice prompt (random voice)", NO_VOICE),
        ]
    )


def default_voice(presets: PresetLibrary, speaker: int) -> str:
    available = presets.all()
    return available[speaker].id if speaker < len(available) else NO_VOICE


def is_own_clip(choice: str | None) -> bool:
    """An own clip, uploaded or recorded, or one of the voices saved in this browser (its clip, filled in)."""
    return choice == OWN_VOICE or (choice or "").startswith(SAVED_PREFIX)


def voice_name(presets: PresetLibrary, choice: str | None) -> str:
    """What the page calls a speaker's voice: "Maple", "own voice", "my voice", "no voice"."""
    if choice == OWN_VOICE:
        return "own voice"
    if is_own_clip(choice):
        return "my voice"
    preset = presets.get(choice) if choice else None
    return preset.short_name if preset else "no voice"


def speaker_choices(presets: PresetLibrary, picks: list[str]) -> list[tuple[str, int]]:
    """The shown speakers by name, for the speaker pickers: ("1 · Maple", 1)."""
    return [(f"{speaker} · {voice_name(presets, pick)}", speaker) for speaker, pick in enumerate(picks)]


def voice_views(presets: PresetLibrary, choice: str):
    """Updates for a speaker card after its voice picker changes: preset preview, own-voice inputs."""
    preset = presets.get(choice) if choice and not is_own_clip(choice) and choice != NO_VOICE else None
    return (
        gr.update(value=str(preset.path) if preset else None, visible=preset is not None),
        gr.update(value=f"“{preset.transcript}”" if preset else "", visible=preset is not None),
        gr.update(visible=is_own_clip(choice)),
    )


@dataclass
class SpeakerCard:
    speaker: int
    column: gr.Column
    picker: gr.Dropdown
    preview: gr.Audio
    preview_text: gr.Markdown
    own_group: gr.Group
    own_audio: gr.Audio
    own_note: gr.Markdown
    own_text: gr.Textbox
    own_clean: gr.Audio  # the prompt as the model will hear it: cleaned up
    own_auto: gr.State  # the transcript last filled in automatically: replaced on the next clip, typed text is not
    save_name: gr.Textbox
    save: gr.Button

    @property
    def views(self) -> list:
        return [self.preview, self.preview_text, self.own_group]

    def voice(self, data: dict) -> Voice | None:
        """The voice this card asks for, read from an event's input values."""
        choice = data[self.picker]
        if is_own_clip(choice):
            return Voice(self.speaker, path=data[self.own_audio], transcript=data[self.own_text])
        return Voice(self.speaker, preset_id=choice) if choice and choice != NO_VOICE else None


def speaker_card(studio: Studio, speaker: int) -> SpeakerCard:
    presets = studio.presets
    choice = default_voice(presets, speaker)
    preset = presets.get(choice)
    with gr.Column(visible=speaker < SHOWN_CARDS, min_width=260) as column, gr.Group():
        picker = gr.Dropdown(voice_choices(presets), value=choice, label=f"Speaker {speaker}",
                             elem_id=f"voice-{speaker}", interactive=True)  # fmt: skip
        preview = gr.Audio(str(preset.path) if preset else None, visible=preset is not None, label="Preset clip",
                           show_label=False, interactive=False, buttons=[], container=False,
                           waveform_options=COMPACT_PLAYER)  # fmt: skip
        preview_text = gr.Markdown(f"“{preset.transcript}”" if preset else "", visible=preset is not None,
                                   elem_classes=["preset-transcript"], padding=True)  # fmt: skip
        with gr.Group(visible=False) as own_group:
            own_audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Your clip (5 to 20 s of clear speech is best)",
                                 elem_id=f"own-audio-{speaker}")  # fmt: skip
            own_note = gr.Markdown("", elem_classes=["clip-note"], elem_id=f"own-note-{speaker}")
            own_clean = gr.Audio(label="What the model will hear: cleaned up", interactive=False, visible=False,
                                 buttons=[], elem_id=f"own-clean-{speaker}", waveform_options=COMPACT_PLAYER)  # fmt: skip
            own_auto = gr.State("")
            own_text = gr.Textbox(label="Its transcript", lines=2, placeholder="Exactly the words spoken in the clip",
                                  elem_id=f"own-text-{speaker}")  # fmt: skip
            with gr.Row(equal_height=True):
                save_name = gr.Textbox(placeholder="A name for this voice", show_label=False, scale=3, container=False,
                                       max_length=MAX_NAME_CHARS, elem_id=f"save-name-{speaker}")  # fmt: skip
                save = gr.Button("☆ Save to my voices", size="sm", scale=2, elem_id=f"save-voice-{speaker}")
    return SpeakerCard(speaker, column, picker, preview, preview_text, own_group, own_audio, own_note, own_text,
                       own_clean, own_auto, save_name, save)  # fmt: skip


@dataclass
class MyVoices:
    """The voices saved in this browser: the library itself (gr.BrowserState), its list, and delete."""

    library: gr.BrowserState
    listing: gr.Markdown
    pick: gr.Dropdown
    delete: gr.Button


def my_voices_panel(library: gr.BrowserState) -> MyVoices:
    with gr.Accordion("★ My voices, kept in this browser", open=False, elem_id="my-voices"):
        listing = gr.Markdown(describe_library([]), elem_id="my-voices-list")
        with gr.Row(equal_height=True):
            pick = gr.Dropdown([], label="Saved voice", scale=3, elem_id="my-voices-pick")
            delete = gr.Button("🗑 Delete", size="sm", variant="stop", scale=1, elem_id="my-voices-delete")
    return MyVoices(library, listing, pick, delete)


def describe_library(library: list) -> str:
    if not library:
        return (f"*None saved yet.* Save an own clip with its transcript from a speaker card (up to "
                f"{MAX_SAVED_VOICES}, 20 s each); it stays in this browser, also after a restart, and appears "
                "in every speaker's voice list.")  # fmt: skip
    rows = [f"- **{e['name']}** · {e.get('seconds', '?')} s · “{e['transcript'][:80]}”" for e in library]
    return "\n".join(rows) + f"\n\n<small>{len(library)} of {MAX_SAVED_VOICES} saved in this browser.</small>"


def voices_panel(studio: Studio) -> tuple[list[SpeakerCard], gr.Button, gr.Button]:
    gr.Markdown(
        "### 1 · Voices\nEach speaker imitates the voice, pace and tone of its prompt clip. The "
        "*synthetic* presets are robotic espeak-ng stand-ins: a real recording gives far better results."
    )
    cards = []
    for first in range(0, MAX_CARDS, 2):
        with gr.Row():
            cards += [speaker_card(studio, speaker) for speaker in range(first, min(first + 2, MAX_CARDS))]
    with gr.Row():
        add_speaker = gr.Button(ADD_SPEAKER, size="sm")
        remove_speaker = gr.Button(REMOVE_SPEAKER, size="sm", visible=False)
    return cards, add_speaker, remove_speaker
