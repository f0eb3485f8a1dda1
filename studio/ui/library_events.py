"""Voices kept in the browser, and "Use as voice": a part of the Page (studio/ui/events.py), one concern."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from studio.clips import read_clip
from studio.errors import InputError, user_message
from studio.jobs import CLIP_WORK
from studio.library import SAVED_PREFIX, add_entry, checked_library, entry_file, find_entry, new_entry, remove_entry
from studio.ui.style import PRIVATE, UI_ONLY
from studio.ui.turns import spoken_turns
from studio.ui.voices import OWN_VOICE, describe_library, voice_choices, voice_views


class LibraryEvents:
    """Mixed into the Page: it has studio, cards, pickers, my_voices, result, last_result and shown."""

    def pick_voice(self, choice, library) -> list:
        """A card's voice picker changed: a preset is previewed; a saved voice fills the card's own clip."""
        views = list(voice_views(self.studio.presets, choice))
        entry = find_entry(library, choice) if (choice or "").startswith(SAVED_PREFIX) else None
        if entry is None:
            return [*views, gr.update(), gr.update()]
        try:
            return [*views, str(entry_file(entry)), entry["transcript"]]
        except InputError as e:
            gr.Warning(str(e))
            return [*views, gr.update(), gr.update()]

    def library_views(self, library, picks) -> list:
        """The pickers offer the saved voices (a card on a deleted one keeps its clip, as an own voice),
        then the list and the delete picker."""
        library = checked_library(library)
        choices = voice_choices(self.studio.presets, library)
        offered = {value for _, value in choices}
        pickers = [gr.update(choices=choices, value=pick if pick in offered else OWN_VOICE) for pick in picks]
        return [*pickers, describe_library(library), gr.update(choices=[(e["name"], e["id"]) for e in library],
                                                                value=None)]  # fmt: skip

    def wire_library(self) -> None:
        my, views = self.my_voices, [*self.pickers, self.my_voices.listing, self.my_voices.pick]
        for card in self.cards:
            card.save.click(self.save_voice, [my.library, card.own_audio, card.own_text, card.save_name, *self.pickers],
                            [my.library, *views, card.save_name], **PRIVATE, **CLIP_WORK)  # fmt: skip
        my.delete.click(self.delete_voice, [my.library, my.pick, *self.pickers], [my.library, *views], **UI_ONLY)
        r = self.result
        r.use_voice.click(self.result_voice, [self.last_result, r.use_turn, r.use_speaker, self.shown],
                          self.card_clips, **PRIVATE)  # fmt: skip
        pick_turn = lambda last, i: (  # none offered (blind turns wait): None
            gr.update(value=spoken_turns(last)[i]["speaker"]) if spoken_turns(last) and i is not None else gr.update()
        )  # noqa: E731
        r.use_turn.change(pick_turn, [self.last_result, r.use_turn], r.use_speaker, **UI_ONLY)

    def save_voice(self, library, path, text, name, *picks) -> list:
        try:
            # No name typed: the clip's file name, which the user can change by saving again under another.
            name = name if (name or "").strip() or not path else Path(path).stem.replace("_", " ").replace("-", " ")
            entry = new_entry(name, read_clip(path, "the clip").numpy(), text)
            library = add_entry(library, entry)
        except Exception as e:
            gr.Warning(user_message(e))
            return [gr.update()] * (len(picks) + 4)
        gr.Info(f"Saved “{entry['name']}” in this browser: every speaker's voice list offers it now.")
        return [library, *self.library_views(library, picks), ""]

    def delete_voice(self, library, entry_id, *picks) -> list:
        if not entry_id:
            gr.Warning("Pick the saved voice to delete first.")
            return [gr.update()] * (len(picks) + 3)
        library = remove_entry(library, entry_id)
        return [library, *self.library_views(library, picks)]

    @property
    def card_clips(self) -> list:
        return [x for card in self.cards for x in (card.picker, card.own_audio, card.own_text)]

    @property
    def turn_voice_event(self) -> tuple:
        """A conversation turn's "Use as voice": (handler, inputs, outputs) for its button."""
        return self.use_as_voice, [self.shown], self.card_clips

    def use_as_voice(self, speaker: int, path, text: str, count: int) -> list:
        """Every card's (picker, clip, transcript): speaker's card takes the clip as its own voice."""
        updates = [gr.update()] * len(self.card_clips)
        if speaker not in range(count):
            gr.Warning(f"Speaker {speaker} has no voice card on the page: press “+ Add speaker” first.")
            return updates
        updates[3 * speaker : 3 * speaker + 3] = [gr.update(value=OWN_VOICE), str(path), text]
        gr.Info(f"Speaker {speaker} now uses this clip as its voice: it is in the speaker's card, to save or change.")
        return updates

    def result_voice(self, last: dict, turn, speaker, count) -> list:
        turns = spoken_turns(last)
        if not turns:
            gr.Warning("There is no finished turn to take a voice from: generate one first.")
            return [gr.update()] * len(self.card_clips)
        chosen = turns[turn if isinstance(turn, int) and 0 <= turn < len(turns) else 0]
        return self.use_as_voice(int(speaker), chosen["path"], chosen["text"], count)
