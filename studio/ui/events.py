"""The one place that wires the page's events: the panels build components, this connects them to the Studio."""

from __future__ import annotations

import gradio as gr
import numpy as np

from studio.api import ONE_AT_A_TIME
from studio.errors import user_message
from studio.inputs import SAMPLE_RATE, TURN_GAP_S, Settings, check_line, parse_script
from studio.jobs import Chunk, Job, TurnDone
from studio.outputs import wav_bytes
from studio.report import Result
from studio.service import StopSignals, Studio
from studio.ui.compose import Compose
from studio.ui.conversation import new_turn
from studio.ui.result import ResultPanel, describe_result
from studio.ui.style import MAX_CARDS, PRIVATE, SHOWN_CARDS, STREAMING, UI_ONLY
from studio.ui.voices import SpeakerCard, default_voice, speaker_choices, voice_choices, voice_views


class Page:
    """The page's components, as the panels built them, and the events between them."""

    def __init__(self, studio: Studio, cards: list[SpeakerCard], add_speaker, remove_speaker, compose: Compose,
                 turns_state, turn_speaker, result: ResultPanel):  # fmt: skip
        self.studio, self.cards, self.compose, self.result = studio, cards, compose, result
        self.add_speaker, self.remove_speaker = add_speaker, remove_speaker
        self.turns_state, self.turn_speaker = turns_state, turn_speaker
        self.shown = gr.State(SHOWN_CARDS)
        self.last_result = gr.State({})  # the last run's seed, and its turns ready to join the conversation
        self.stops = StopSignals()

    def wire(self, demo: gr.Blocks) -> None:
        self.wire_voices(demo)
        c = self.compose
        show_mode = lambda mode: [gr.update(visible=mode == "One line")] * 2 + [gr.update(visible=mode != "One line")]  # noqa: E731
        c.mode.change(show_mode, c.mode, [c.line_group, c.examples.dataset, c.script_group], **UI_ONLY)
        inputs = c.inputs | {self.turns_state, self.shown}
        inputs |= {x for card in self.cards for x in (card.picker, card.own_audio, card.own_text)}
        r = self.result
        outputs = [r.status, r.live, r.audio, r.info, r.files, r.reuse_seed, r.keep, self.last_result]
        c.generate.click(self.arm, None, None, **UI_ONLY).then(
            self.generate, inputs, outputs, **ONE_AT_A_TIME, **PRIVATE
        )
        c.stop.click(self.stop, None, None, **UI_ONLY)
        r.reuse_seed.click(lambda last: last["seed"], self.last_result, c.seed, **UI_ONLY)
        keep = lambda turns, last: (turns + last["turns"], gr.update(visible=False))  # noqa: E731
        r.keep.click(keep, [self.turns_state, self.last_result], [self.turns_state, r.keep], **PRIVATE)

    # -- voices and speakers -----------------------------------------------------------------------

    def speaker_updates(self, count: int, picks: list, current: list) -> list:
        """The speaker pickers offer the shown cards' speakers by name; a removed speaker falls back to 0."""
        choices = speaker_choices(self.studio.presets, picks[:count])
        return [gr.update(choices=choices, value=value if value in range(count) else 0) for value in current]

    def wire_voices(self, demo: gr.Blocks) -> None:
        presets, cards, pickers = self.studio.presets, self.cards, [card.picker for card in self.cards]
        pickers_out = [x for card in cards for x in (card.picker, *card.views)]
        speakers = [self.compose.speaker, self.turn_speaker]

        def refresh(count, *values):
            """On page load: the official prompts may have arrived since start-up."""
            picks = [default_voice(presets, card.speaker) for card in cards]
            updates = [u for card, pick in zip(cards, picks)
                       for u in (gr.update(choices=voice_choices(presets), value=pick), *voice_views(presets, pick))]  # fmt: skip
            return updates + self.speaker_updates(count, picks, list(values))

        demo.load(refresh, [self.shown, *speakers], pickers_out + speakers, **UI_ONLY)

        def change_count(step, count, *values):
            count = min(max(count + step, 1), MAX_CARDS)
            picks, current = list(values[:MAX_CARDS]), list(values[MAX_CARDS:])
            shown = [gr.update(visible=card.speaker < count) for card in cards]
            buttons = [gr.update(visible=count < MAX_CARDS), gr.update(visible=count > SHOWN_CARDS)]
            return [count, *shown, *buttons, *self.speaker_updates(count, picks, current)]

        outputs = [self.shown, *(card.column for card in cards), self.add_speaker, self.remove_speaker, *speakers]
        for button, step in ((self.add_speaker, +1), (self.remove_speaker, -1)):
            button.click(lambda *v, step=step: change_count(step, *v), [self.shown, *pickers, *speakers], outputs,
                         **UI_ONLY)  # fmt: skip
        names = lambda count, *v: self.speaker_updates(count, list(v[:MAX_CARDS]), list(v[MAX_CARDS:]))  # noqa: E731
        for picker in pickers:
            picker.change(names, [self.shown, *pickers, *speakers], speakers, **UI_ONLY)

    # -- generation --------------------------------------------------------------------------------

    def arm(self, request: gr.Request) -> None:
        self.stops.arm(request.session_hash)

    def stop(self, request: gr.Request) -> None:
        self.stops.stop(request.session_hash)

    def job(self, data: dict) -> Job:
        studio, c = self.studio, self.compose
        studio.require_generator()
        lines = (
            parse_script(data[c.script]) if data[c.mode] == "Script" else [check_line(data[c.text], data[c.speaker])]
        )
        voices = [v for card in self.cards[: data[self.shown]] if (v := card.voice(data)) is not None]
        turns = data[self.turns_state]
        context = studio.context_turns([t["path"] for t in turns], [t["text"] for t in turns],
                                       [t["speaker"] for t in turns])  # fmt: skip
        settings = Settings.parse(*c.settings(data))
        return studio.build_job(lines, voices, context, settings, note_unused_voices=False)

    def generate(self, data: dict, request: gr.Request):
        """Stream the run into the live player, then show the files and the report. A bad request or a
        failure is said in the status line and a toast; the last good result stays as it was."""
        r, flag = self.result, self.stops.flag(request.session_hash)
        try:
            job = self.job(data)
            count = len(job.lines)
            yield {r.status: f"*Generating {count} turn{'s' if count > 1 else ''}…*", r.live: None, r.audio: None,
                   r.files: gr.update(value=None, visible=False), r.reuse_seed: gr.update(visible=False),
                   r.keep: gr.update(visible=False), r.info: ""}  # fmt: skip
            yield from self.stream(job, flag)
        except Exception as e:
            message = user_message(e)
            gr.Warning(message)
            yield {r.status: f"⚠️ {message}"}
        finally:
            self.stops.release(request.session_hash, flag)

    def stream(self, job: Job, flag):
        r, streamed_turn, done = self.result, 0, 0
        for event in self.studio.run(job, stop=flag):
            if isinstance(event, Chunk) and STREAMING and len(event.audio):
                audio = event.audio
                if event.turn != streamed_turn:  # the same pause between turns as the stitched file
                    gap = np.zeros(int(TURN_GAP_S * SAMPLE_RATE), np.float32)
                    audio, streamed_turn = np.concatenate([gap, audio]), event.turn
                yield {r.live: wav_bytes(audio)}
            elif isinstance(event, TurnDone) and len(job.lines) > 1:
                done += 1
                yield {r.status: f"*Generated turn {done} of {len(job.lines)}…*"}
            elif isinstance(event, Result):
                yield self.show(event)

    def show(self, result: Result) -> dict:
        r = self.result
        for warning in result.warnings:
            gr.Warning(warning)
        # The interrupted turn stops mid-sentence, so its transcript would not match: it is not offered.
        spoken = [new_turn(path, t.text, t.speaker, t.seconds)
                  for path, t in zip(result.turn_paths, result.turns) if t.frames and not t.stopped]  # fmt: skip
        status = "■ Stopped: what was generated is kept below." if result.stopped else ""
        return {
            r.status: status,
            r.audio: str(result.audio_path) if result.audio_path else None,
            r.info: describe_result(result, self.studio.description),
            r.files: gr.update(value=[str(p) for p in result.turn_paths], visible=result.planned_turns > 1),
            r.reuse_seed: gr.update(value=f"♻ Reuse seed {result.seed}", visible=True),
            r.keep: gr.update(visible=bool(spoken)),
            self.last_result: {"seed": result.seed, "turns": spoken},
        }
