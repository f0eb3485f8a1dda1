"""The one place that wires the page's events: the panels build components, this connects them to the Studio."""

from __future__ import annotations

import time

import gradio as gr
import numpy as np

from studio.clips import clip_note
from studio.errors import user_message
from studio.inputs import SAMPLE_RATE, TURN_GAP_S, check_line, parse_script, plural
from studio.jobs import CLIP_WORK, ONE_AT_A_TIME, Chunk, Job, TurnDone
from studio.outputs import wav_bytes
from studio.report import Result
from studio.service import Studio
from studio.stops import StopSignals
from studio.ui.check import CheckPanel, describe_detection
from studio.ui.compose import COUNTER_JS, Compose
from studio.ui.conversation import ConversationPanel, add_earlier_turn, new_turn
from studio.ui.result import ResultPanel, describe_result
from studio.ui.style import MAX_CARDS, PRIVATE, SHOWN_CARDS, STREAMING, UI_ONLY
from studio.ui.voices import SpeakerCard, default_voice, speaker_choices, voice_choices, voice_name, voice_views


class Page:
    """The page's components, as the panels built them, and the events between them."""

    def __init__(self, studio: Studio, cards: list[SpeakerCard], speaker_buttons: tuple, compose: Compose,
                 turns_state: gr.State, conversation: ConversationPanel, result: ResultPanel, check: CheckPanel):  # fmt: skip
        self.studio, self.cards, self.compose, self.result, self.check = studio, cards, compose, result, check
        self.add_speaker, self.remove_speaker = speaker_buttons
        self.turns_state, self.conversation = turns_state, conversation
        self.pickers = [card.picker for card in cards]
        self.speaker_pickers = [compose.speaker, conversation.speaker]
        self.shown = gr.State(SHOWN_CARDS)
        self.last_result = gr.State({})  # the last run's seed, and its turns ready to join the conversation
        self.stops = StopSignals()
        self.clicked: dict[str, float] = {}  # session -> time.perf_counter() at its Generate click

    def wire(self, demo: gr.Blocks) -> None:
        self.wire_voices(demo)
        self.wire_inputs()
        self.wire_generation(demo)
        self.check.button.click(self.check_clip, self.check.audio, self.check.result, **PRIVATE, **CLIP_WORK)
        self.check.audio.change(lambda path: "", self.check.audio, self.check.result, **UI_ONLY)  # no stale verdict

    def check_clip(self, path) -> str:
        if not path:
            return "Upload or record a clip first."
        try:
            return describe_detection(self.studio.detect(path), self.studio.watermark_message, self.studio.is_tiny)
        except Exception as e:
            return f"⚠️ {user_message(e)}"

    # -- voices and speakers -----------------------------------------------------------------------

    def speaker_updates(self, count: int, picks: list, current: list) -> list:
        """The speaker pickers offer the shown cards' speakers by name; a removed speaker falls back to 0."""
        choices = speaker_choices(self.studio.presets, picks[:count])
        return [gr.update(choices=choices, value=value if value in range(count) else 0) for value in current]

    def wire_voices(self, demo: gr.Blocks) -> None:
        presets, cards, speakers = self.studio.presets, self.cards, self.speaker_pickers
        card_views = [x for card in cards for x in (card.picker, *card.views)]

        def refresh(count, *current):
            """On page load: the official prompts may have arrived since start-up."""
            picks = [default_voice(presets, card.speaker) for card in cards]
            views = [(gr.update(choices=voice_choices(presets), value=pick), *voice_views(presets, pick))
                     for pick in picks]  # fmt: skip
            return [u for card in views for u in card] + self.speaker_updates(count, picks, list(current))

        demo.load(refresh, [self.shown, *speakers], card_views + speakers, **UI_ONLY)

        def names(count, *values):
            """`values`: every card's voice, then the speaker pickers' choices."""
            return self.speaker_updates(count, list(values[:MAX_CARDS]), list(values[MAX_CARDS:]))

        def change_count(step, count, *values):
            count = min(max(count + step, 1), MAX_CARDS)
            shown = [gr.update(visible=card.speaker < count) for card in cards]
            buttons = [gr.update(visible=count < MAX_CARDS), gr.update(visible=count > SHOWN_CARDS)]
            return [count, *shown, *buttons, *names(count, *values)]

        outputs = [self.shown, *(card.column for card in cards), self.add_speaker, self.remove_speaker, *speakers]
        for button, step in ((self.add_speaker, +1), (self.remove_speaker, -1)):
            button.click(lambda *v, step=step: change_count(step, *v), [self.shown, *self.pickers, *speakers],
                         outputs, **UI_ONLY)  # fmt: skip
        for card in cards:
            card.picker.change(lambda choice: voice_views(presets, choice), card.picker, card.views, **UI_ONLY)
            card.picker.change(names, [self.shown, *self.pickers, *speakers], speakers, **UI_ONLY)

    # -- what the user types and uploads -------------------------------------------------------------

    def wire_inputs(self) -> None:
        c, conv, room = self.compose, self.conversation, self.studio.clip_room_seconds()
        c.text.change(None, c.text, c.counter, js=COUNTER_JS, **UI_ONLY)
        show_mode = lambda mode: [gr.update(visible=mode == "One line")] * 2 + [gr.update(visible=mode != "One line")]  # noqa: E731
        c.mode.change(show_mode, c.mode, [c.line_group, c.examples.dataset, c.script_group], **UI_ONLY)
        for card in self.cards:  # each clip is judged as it arrives, next to it
            card.own_audio.change(lambda path: clip_note(path, room), card.own_audio, card.own_note, **PRIVATE,
                                  **CLIP_WORK)  # fmt: skip
        conv.clip.change(lambda path: clip_note(path, room), conv.clip, conv.note, **PRIVATE, **CLIP_WORK)

        def add_turn(turns, path, text, speaker, count, *picks):
            """A refused turn is said next to the clip and in a toast; the form stays as it was, to fix."""
            voice = voice_name(self.studio.presets, picks[speaker]) if speaker in range(count) else None
            try:
                return add_earlier_turn(turns, path, text, speaker, voice, room), None, "", ""
            except Exception as e:
                message = user_message(e)
                gr.Warning(message)
                return turns, gr.update(), gr.update(), f"⚠️ {message}"

        add_inputs = [self.turns_state, conv.clip, conv.transcript, conv.speaker, self.shown, *self.pickers]
        add_outputs = [self.turns_state, conv.clip, conv.transcript, conv.note]
        conv.add.click(add_turn, add_inputs, add_outputs, **PRIVATE, **CLIP_WORK)

    # -- generation --------------------------------------------------------------------------------

    def wire_generation(self, demo: gr.Blocks) -> None:
        c, r = self.compose, self.result
        inputs = c.inputs | {self.turns_state, self.shown}
        inputs |= {x for card in self.cards for x in (card.picker, card.own_audio, card.own_text)}
        outputs = [r.status, r.live, r.audio, r.info, r.files, r.reuse_seed, r.keep, self.last_result]
        c.generate.click(self.arm, None, None, **UI_ONLY).then(self.generate, inputs, outputs,
                                                                   **ONE_AT_A_TIME, **PRIVATE)  # fmt: skip
        c.stop.click(self.stop, None, None, **UI_ONLY)
        demo.unload(self.forget)
        r.reuse_seed.click(lambda last: last["seed"], self.last_result, c.seed, **UI_ONLY)
        keep = lambda turns, last: (turns + last["turns"], gr.update(visible=False))  # noqa: E731
        r.keep.click(keep, [self.turns_state, self.last_result], [self.turns_state, r.keep], **PRIVATE)

    def arm(self, request: gr.Request) -> None:
        """At the click, before the queue: Stop from now on stops this job."""
        self.stops.arm(request.session_hash)
        self.clicked[request.session_hash] = time.perf_counter()  # first audio counts from here, queue included

    def stop(self, request: gr.Request) -> None:
        self.stops.stop(request.session_hash)

    def forget(self, request: gr.Request) -> None:
        self.stops.release(request.session_hash)
        self.clicked.pop(request.session_hash, None)

    def job(self, data: dict, session: str) -> Job:
        studio, c = self.studio, self.compose
        studio.require_generator()
        lines = (
            parse_script(data[c.script]) if data[c.mode] == "Script" else [check_line(data[c.text], data[c.speaker])]
        )
        voices = [v for card in self.cards[: data[self.shown]] if (v := card.voice(data)) is not None]
        turns = data[self.turns_state]
        context = ([t["path"] for t in turns], [t["text"] for t in turns], [t["speaker"] for t in turns])
        return studio.prepare(lines, voices, context, c.settings(data), note_unused_voices=False, session=session)

    def generate(self, data: dict, request: gr.Request):
        """Stream the run into the live player, then show the files and the report. The last result
        stays until a new one replaces it; a bad request or a failure is said in the status line."""
        r, flag = self.result, self.stops.flag(request.session_hash)
        try:
            job = self.job(data, request.session_hash)
            job.requested_at = self.clicked.pop(request.session_hash, job.requested_at)
            yield {r.status: f"*Generating {plural(len(job.lines), 'turn')}…*", r.live: None}
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
        if not result.turns:
            return {r.status: "■ Stopped before it started: the last result is as it was."}
        for warning in result.warnings:
            gr.Warning(warning)
        if result.error:
            gr.Warning(result.error)
        # The interrupted turn stops mid-sentence, so its transcript would not match: it is not offered.
        spoken = [new_turn(path, t.text, t.speaker, t.seconds, t.voice)
                  for path, t in zip(result.turn_paths, result.turns) if t.frames and not t.stopped]  # fmt: skip
        status = "■ Stopped: what was generated is kept below." if result.stopped else ""
        if result.error:
            status = f"⚠️ {result.error} What was generated before is kept below."
        return {
            r.status: status,
            r.audio: str(result.audio_path),
            r.info: describe_result(result, self.studio.description),
            r.files: gr.update(value=[str(p) for p in result.turn_paths], visible=result.planned_turns > 1),
            r.reuse_seed: gr.update(value=f"♻ Reuse seed {result.seed}", visible=True),
            r.keep: gr.update(visible=bool(spoken)),
            self.last_result: {"seed": result.seed, "turns": spoken},
        }
