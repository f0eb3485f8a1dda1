"""The one place that wires the page's events: the panels build components, this connects them to the Studio."""

from __future__ import annotations

import html
import logging
import time

import gradio as gr
import numpy as np

from studio.clips import clip_note
from studio.errors import user_message
from studio.inputs import SAMPLE_RATE, TURN_GAP_S, check_line, parse_script, plural
from studio.jobs import CLIP_WORK, ONE_AT_A_TIME, Chunk, Job, TurnDone
from studio.meter import describe_meter, measure
from studio.outputs import pcm16, wav_bytes
from studio.ratings import RatingLog
from studio.report import Result
from studio.service import Studio
from studio.sessions import session_draft
from studio.stops import StopSignals
from studio.ui.check import CheckPanel, describe_detection
from studio.ui.compose import COUNTER_JS, Compose, generate_busy, generate_idle
from studio.ui.conversation import ConversationPanel, add_earlier_turn
from studio.ui.library_events import LibraryEvents
from studio.ui.result import ResultPanel, result_summary
from studio.ui.share import SharePanel
from studio.ui.share_events import ShareEvents
from studio.ui.style import (
    ADD_SPEAKER,
    ADD_TO_CONVERSATION,
    MAX_CARDS,
    PRIVATE,
    REMOVE_SPEAKER,
    SHOWN_CARDS,
    STREAMING,
    UI_ONLY,
    shown_button,
)
from studio.ui.takes_events import TakeEvents
from studio.ui.turns import (
    blind_note,
    hides_takes,
    results_state,
    shown_conversation,
    spoken_turns,
    waiting_turns,
    with_report,
)
from studio.ui.voices import (
    MyVoices,
    SpeakerCard,
    default_voice,
    speaker_choices,
    voice_choices,
    voice_name,
    voice_views,
)

log = logging.getLogger("csm-studio")


class Page(LibraryEvents, TakeEvents, ShareEvents):
    """The page's components, as the panels built them, and the events between them (those of the voice
    library and of the result's turns are in their own modules, mixed in)."""

    def __init__(self, studio: Studio, cards: list[SpeakerCard], speaker_buttons: tuple, compose: Compose,
                 states: tuple[gr.State, gr.State], conversation: ConversationPanel, result: ResultPanel,
                 check: CheckPanel, my_voices: MyVoices, ratings: RatingLog, share: SharePanel):  # fmt: skip
        self.studio, self.cards, self.compose, self.result, self.check = studio, cards, compose, result, check
        self.my_voices, self.ratings, self.share = my_voices, ratings, share
        self.draft = gr.State(None)  # the last run's session draft (studio/sessions.py): what a bundle holds
        self.add_speaker, self.remove_speaker = speaker_buttons
        self.turns_state, self.last_result = states  # the conversation so far; the last result's turns
        self.conversation = conversation
        self.pickers = [card.picker for card in cards]
        self.speaker_pickers = [compose.speaker, conversation.speaker, result.use_speaker]
        self.shown = gr.State(SHOWN_CARDS)
        self.stops = StopSignals()
        self.clicked: dict[str, float] = {}  # session -> time.perf_counter() at its Generate click
        self.redoing: set[str] = set()  # sessions with a Redo clicked and not done: a Keep or rating would be undone

    def wire(self, demo: gr.Blocks) -> None:
        self.wire_voices(demo)
        self.wire_library()
        self.wire_inputs()
        self.wire_meter(demo)
        self.wire_generation(demo)
        self.wire_share(self.loaded)
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

        def refresh(count, library, *current):
            """On page load: the official prompts may have arrived since start-up; the saved voices are offered."""
            picks = [default_voice(presets, card.speaker) for card in cards]
            views = [(gr.update(choices=voice_choices(presets, library), value=pick), *voice_views(presets, pick))
                     for pick in picks]  # fmt: skip
            listing = self.library_views(library, picks)[len(cards) :]
            return [u for card in views for u in card] + self.speaker_updates(count, picks, list(current)) + listing

        my = self.my_voices
        self.loaded = demo.load(refresh, [self.shown, my.library, *speakers],
                                card_views + speakers + [my.listing, my.pick], **UI_ONLY)  # fmt: skip

        def names(count, *values):
            """`values`: every card's voice, then the speaker pickers' choices."""
            return self.speaker_updates(count, list(values[:MAX_CARDS]), list(values[MAX_CARDS:]))

        def change_count(step, count, *values):
            count = min(max(count + step, 1), MAX_CARDS)
            shown = [gr.update(visible=card.speaker < count) for card in cards]
            buttons = [shown_button(ADD_SPEAKER, count < MAX_CARDS), shown_button(REMOVE_SPEAKER, count > SHOWN_CARDS)]
            return [count, *shown, *buttons, *names(count, *values)]

        outputs = [self.shown, *(card.column for card in cards), self.add_speaker, self.remove_speaker, *speakers]
        for button, step in ((self.add_speaker, +1), (self.remove_speaker, -1)):
            button.click(lambda *v, step=step: change_count(step, *v), [self.shown, *self.pickers, *speakers],
                         outputs, **UI_ONLY)  # fmt: skip
        for card in cards:
            card.picker.change(self.pick_voice, [card.picker, my.library], [*card.views, card.own_audio, card.own_text],
                               **UI_ONLY)  # fmt: skip
            card.picker.change(names, [self.shown, *self.pickers, *speakers], speakers, **UI_ONLY)

    # -- what the user types and uploads -------------------------------------------------------------

    def wire_inputs(self) -> None:
        c, conv, room = self.compose, self.conversation, self.studio.clip_room_seconds()
        c.text.change(None, c.text, c.counter, js=COUNTER_JS, **UI_ONLY)
        show_mode = lambda mode: [gr.update(visible=mode == "One line")] * 2 + [gr.update(visible=mode != "One line")]  # noqa: E731
        c.mode.change(show_mode, c.mode, [c.line_group, c.examples.dataset, c.script_group], **UI_ONLY)
        for card in self.cards:  # each clip is judged as it arrives, next to it, then transcribed
            card.own_audio.change(self.arrived_voice, card.own_audio, [card.own_note, card.own_clean], **PRIVATE,
                                  **CLIP_WORK).then(lambda *v: self.fill_transcript(*v, role="voice"),
                                                    [card.own_audio, card.own_text, card.own_auto],
                                                    [card.own_text, card.own_auto], **PRIVATE, **CLIP_WORK)  # fmt: skip
        conv.clip.change(lambda path: clip_note(path, room), conv.clip, conv.note, **PRIVATE, **CLIP_WORK).then(
            lambda *v: self.fill_transcript(*v, role="turn"), [conv.clip, conv.transcript, conv.auto],
            [conv.transcript, conv.auto], **PRIVATE, **CLIP_WORK)  # fmt: skip

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

    def arrived_voice(self, path) -> list:
        """A voice clip's note, and the prompt the model will hear of it (cleaned up), to listen to."""
        if not path:
            return ["", gr.update(value=None, visible=False)]
        check = self.studio.check_clip(path, role="voice")
        clean = (SAMPLE_RATE, pcm16(check.audio)) if check.audio is not None else None  # at its own level
        return [check.note, gr.update(value=clean, visible=clean is not None)]

    def fill_transcript(self, path, typed: str, auto: str, role: str) -> list:
        """The clip's words in its transcript box, marked as automatic, unless the user typed their own."""
        if not path or ((typed or "").strip() and typed != auto):
            return [gr.update(), auto]
        try:
            text = self.studio.transcribe(path, role).text
        except Exception as e:  # unreadable or silent (said in the note), or no recogniser: typing still works
            log.info("No automatic transcript: %s", user_message(e))
            return [gr.update(info=None), auto]
        model = self.studio.asr_description
        return [gr.update(value=text, info=f"✎ Filled in automatically ({model}): check it, and correct it"), text]

    # -- the context meter ---------------------------------------------------------------------------

    @property
    def request_inputs(self) -> set:
        """Everything a request is made of: what to say, the settings, the voices and the conversation."""
        inputs = self.compose.inputs | {self.turns_state, self.shown}
        return inputs | {x for card in self.cards for x in (card.picker, card.own_audio, card.own_text)}

    def wire_meter(self, demo: gr.Blocks) -> None:
        """The meter follows every input that changes the prompt: the latest change wins."""
        c = self.compose
        triggers = [c.mode, c.text, c.speaker, c.script, c.max_seconds, self.turns_state, self.shown]
        triggers += [x for card in self.cards for x in (card.picker, card.own_audio, card.own_text)]
        gr.on([demo.load] + [x.change for x in triggers], self.meter, self.request_inputs, c.meter,
              trigger_mode="always_last", show_progress="hidden", **PRIVATE, **CLIP_WORK)  # fmt: skip

    def meter(self, data: dict) -> str:
        if not self.studio.can_generate:
            return ""
        try:
            job = self.job(data, session=None, transcribe=False)  # an empty transcript counts as empty here
        except Exception as e:  # a half-filled form, mostly: said quietly, Generate says it loudly
            return f"<small>Context window: {html.escape(user_message(e))}</small>"
        return describe_meter(measure(job, self.studio.generator))

    # -- generation --------------------------------------------------------------------------------

    def wire_generation(self, demo: gr.Blocks) -> None:
        c, r = self.compose, self.result
        inputs = self.request_inputs
        outputs = self.generation_outputs
        run = c.generate.click(self.arm_generate, None, c.generate, **UI_ONLY).then(
            self.generate, inputs, outputs, **ONE_AT_A_TIME, **PRIVATE
        )  # fmt: skip
        self.give_generate_back(run)
        c.stop.click(self.stop, None, None, **UI_ONLY)
        demo.unload(self.forget)
        r.reuse_seed.click(lambda last: last["seed"], self.last_result, c.seed, **UI_ONLY)
        keep = lambda turns, last: (turns + spoken_turns(last), shown_button(ADD_TO_CONVERSATION, False))  # noqa: E731
        r.keep.click(keep, [self.turns_state, self.last_result], [self.turns_state, r.keep], **PRIVATE)

    def arm(self, request: gr.Request) -> None:
        """At the click, before the queue: Stop from now on stops this job."""
        self.stops.arm(request.session_hash)
        self.clicked[request.session_hash] = time.perf_counter()  # first audio counts from here, queue included

    def arm_generate(self, request: gr.Request) -> dict:
        """`arm`, and Generate busy in the same round trip (so no second click slips in between)."""
        self.arm(request)
        return generate_busy()

    def give_generate_back(self, run) -> None:
        """Generate usable again once `run` (a dependency) has ended. gradio's frontend follows an event with
        `.then` after a success only: a failure of its own (a full queue) must give the button back too."""
        for follow in (run.then, run.failure):
            follow(generate_idle, None, self.compose.generate, **UI_ONLY)

    def stop(self, request: gr.Request) -> None:
        self.stops.stop(request.session_hash)

    def forget(self, request: gr.Request) -> None:
        self.stops.release(request.session_hash)
        self.clicked.pop(request.session_hash, None)
        self.redoing.discard(request.session_hash)

    def job(self, data: dict, session: str | None, transcribe: bool = True) -> Job:
        studio, c = self.studio, self.compose
        studio.require_generator()
        lines = (
            parse_script(data[c.script]) if data[c.mode] == "Script" else [check_line(data[c.text], data[c.speaker])]
        )
        turns = data[self.turns_state]
        context = ([t["path"] for t in turns], [t["text"] for t in turns], [t["speaker"] for t in turns])
        return studio.prepare(lines, self.voices(data), context, c.settings(data), note_unused_voices=False,
                              session=session, takes=data[c.takes], transcribe=transcribe)  # fmt: skip

    def voices(self, data: dict) -> list:
        return [v for card in self.cards[: data[self.shown]] if (v := card.voice(data)) is not None]

    def generate(self, data: dict, request: gr.Request):
        """Stream the run into the live player, then show the files and the report. The last result
        stays until a new one replaces it; a bad request or a failure is said in the status line."""
        blind = data[self.compose.blind]
        yield from self.run_on_page(
            request,
            lambda: self.job(data, request.session_hash),
            lambda job: f"*Generating {plural(len(job.lines), 'turn')}…*",
            lambda job, result: (
                # A redo of its turns streams in the same chunks (each chunk is watermarked on its own).
                {**results_state(result, blind, data[self.turns_state]), "first_chunk_frames": job.first_chunk_frames},
                session_draft(self.studio, job, result),
            ),  # fmt: skip
            blind,
        )

    def run_on_page(self, request: gr.Request, make_job, status, states, blind: bool = False):
        """A job made by `make_job()` run for this page: `status(job)` while it runs, then the result shown
        with `states(job, result)` (the page's result state, and a new session draft if any). Its first take
        streams into the live player as it comes, unless its takes are `blind` (`hides_takes`)."""
        r, flag = self.result, self.stops.flag(request.session_hash)
        try:
            job = make_job()
            job.requested_at = self.clicked.pop(request.session_hash, job.requested_at)
            streams = not hides_takes(job, blind)
            # A run that streams nothing must not touch the live player: a None there opens a stream that gets
            # no audio, whose empty playlist the browser then asks for again and again (over 100 times a second).
            yield {r.status: status(job) + blind_note(job, blind), **({r.live: None} if streams else {})}
            yield from self.stream(job, flag, lambda result: self.show(result, *states(job, result)), streams)
        except Exception as e:
            message = user_message(e)
            gr.Warning(message)
            yield {r.status: f"⚠️ {message}"}
        finally:
            self.stops.release(request.session_hash, flag)

    def stream(self, job: Job, flag, finish, live: bool = True):
        """The job's chunks into the live player (if `live`), progress in the status line, then `finish(result)`'s
        updates."""
        r, streamed_turn, done = self.result, 0, 0
        for event in self.studio.run(job, stop=flag):
            if isinstance(event, Chunk) and live and STREAMING and len(event.audio):
                audio = event.audio
                if event.turn != streamed_turn:  # the same pause between turns as the stitched file
                    gap = np.zeros(int(TURN_GAP_S * SAMPLE_RATE), np.float32)
                    audio, streamed_turn = np.concatenate([gap, audio]), event.turn
                yield {r.live: wav_bytes(audio)}
            elif isinstance(event, TurnDone) and len(job.lines) > 1:
                done += 1
                yield {r.status: f"*Generated turn {done} of {len(job.lines)}…*"}
            elif isinstance(event, Result):
                yield finish(event) if event.turns else self.show(event, None)

    @property
    def generation_outputs(self) -> list:
        r = self.result
        return [r.status, r.live, r.audio, r.info, r.files, r.reuse_seed, r.keep, r.use_row, r.use_turn,
                r.use_speaker, self.last_result, self.draft]  # fmt: skip

    def show(self, result: Result, state: dict | None, draft=None) -> dict:
        """A finished run's updates; `state` is the result's turns as the page keeps them from now on, `draft`
        a new run's session draft (a redo keeps the run's: the bundle holds its turns as they now stand)."""
        r = self.result
        if not result.turns:
            return {r.status: "■ Stopped before it started: the last result is as it was."}
        for warning in result.warnings:
            gr.Warning(warning)
        if result.error:
            gr.Warning(result.error)
        status = "■ Stopped: what was generated is kept below." if result.stopped else ""
        if result.error:
            status = f"⚠️ {result.error} What was generated before is kept below."
        state = with_report(state, result)
        files = [take["path"] for turn in state["turns"] for take in turn["takes"]]
        blind = any(turn["blind"] for turn in state["turns"])  # the files' names would tell the takes apart
        keep, use_row, use_turn = self.offer_turns(state)
        return {
            r.status: status,
            r.audio: shown_conversation(state),  # nothing while blind turns wait: it is made of their takes A
            r.info: result_summary(result, state, self.studio.description),
            r.files: gr.update(value=files, visible=len(files) > 1 and not blind),
            r.reuse_seed: gr.update(value=f"♻ Reuse seed {state['seed']}", visible=True),
            r.keep: keep,
            r.use_row: use_row,
            r.use_turn: use_turn,
            r.use_speaker: self.speaker_of_first(state),
            self.last_result: state,
            self.draft: draft if draft is not None else gr.update(),
        }

    def offer_turns(self, state: dict) -> list:
        """Add to the conversation, and Use as voice with its turn picker: offered for the finished turns, once no
        blind turn waits for its take to be chosen (they would use its take A, and show which one that is)."""
        spoken = [] if waiting_turns(state) else spoken_turns(state)
        choices = [(f"Turn {i + 1} · speaker {t['speaker']}", i) for i, t in enumerate(spoken)]
        return [shown_button(ADD_TO_CONVERSATION, bool(spoken)), gr.update(visible=bool(spoken)),
                gr.update(choices=choices, value=0 if spoken else None, visible=len(spoken) > 1)]  # fmt: skip

    def speaker_of_first(self, state: dict):
        spoken = spoken_turns(state)
        return gr.update(value=spoken[0]["speaker"]) if spoken and spoken[0]["speaker"] < MAX_CARDS else gr.update()
