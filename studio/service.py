"""The Studio: the model (loaded once), and how requests become jobs, audio files and reports.

The API and the page both call it; neither touches the model.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from csm.audio import load_mono, save_wav
from csm.generator import FRAME_MS, Generator, Segment, load_csm_1b
from csm.loading import CheckpointError
from csm.text import TokenizerError
from studio.clips import check_request_clips, check_transcript, clip_header, load_clip
from studio.errors import InputError, capitalized, sentence, user_message
from studio.inputs import (
    DEFAULT_MAX_SECONDS,
    MAX_CLIP_S,
    MAX_CLIPS,
    MAX_REQUEST_SECONDS,
    SAMPLE_RATE,
    Line,
    Settings,
    check_speaker,
    check_takes,
    plural,
)
from studio.jobs import TAKE_LABELS, Chunk, ContextClip, Job, TurnDone, TurnStarted, finished_report, run_job
from studio.outputs import line_file_name, new_output_dir, stitch, turn_file_name
from studio.presets import PresetLibrary
from studio.report import Result, result_warnings
from studio.watermark import DEFAULT_MESSAGE, Detection, load_watermarker

log = logging.getLogger("csm-studio")

DEFAULT_MODEL = "sesame/csm-1b"
TINY_MODEL = "tiny"


@dataclass
class Voice:
    """A speaker prompt as asked for: a preset id, or an own clip with its transcript."""

    speaker: int
    preset_id: str | None = None
    path: str | None = None
    transcript: str | None = None


class Studio:
    """The model (loaded once, at start-up) and how requests become jobs and files."""

    def __init__(self, model=DEFAULT_MODEL, device=None, presets: PresetLibrary | None = None, dtype=None,
                 watermark: bool = True, watermark_message: int = DEFAULT_MESSAGE, quantize=None):  # fmt: skip
        self.model_name, self.quantize = model, quantize
        self.watermark, self.watermark_message = watermark, watermark_message
        self.watermark_key: dict | None = None  # load_watermarker's arguments, once it has loaded
        self.watermark_error: str | None = None  # why it could not: generation is then off
        self.device = device
        self.dtype = dtype  # None: csm.loading.default_dtype (bf16 where the hardware computes it)
        self.presets = presets or PresetLibrary()
        self.generator: Generator | None = None
        self.load_error: str | None = None
        self.load_error_is_download = False  # the Hub or the cache: the fix is a token, a network or a folder
        self.model_key: dict = {}

    @property
    def is_tiny(self) -> bool:
        return self.model_name == TINY_MODEL

    def load(self) -> Studio:
        """Load the model through the cached load_csm_1b; on failure keep serving and say how to fix it."""
        try:
            repo_id = self.model_name
            if self.is_tiny:
                from csm.tiny import tiny_checkpoint_dir

                repo_id = str(tiny_checkpoint_dir())
            self.model_key = {"repo_id": repo_id, "device": self.device, "dtype": self.dtype, "quantize": self.quantize}
            started = time.perf_counter()
            self.generator = load_csm_1b(**self.model_key)
            log.info("Loaded %s in %.1f s", self.description, time.perf_counter() - started)
        except (CheckpointError, TokenizerError) as e:
            self.load_error, self.load_error_is_download = sentence(str(e)), True
        except Exception as e:  # out of memory, a broken download: still serve the page
            log.exception("Loading %s failed", self.model_name)
            self.load_error = f"{type(e).__name__}: {e}"
        if self.load_error:
            log.error("The model %s could not be loaded: %s", self.model_name, self.load_error)
            self.load_error = without_server_paths(self.load_error, self.model_name)
        elif self.watermark:
            self.load_watermark()
        return self

    def load_watermark(self) -> None:
        """The watermark is on by default: without it, generation stays off (see README, Watermark)."""
        key = {"tiny": self.is_tiny, "message": self.watermark_message, "device": str(self.generator.device)}
        try:
            marker = load_watermarker(**key)
            self.watermark_key = key
            log.info("Watermarking every output with %s, message %#06x", marker.description, self.watermark_message)
        except Exception as e:  # offline with nothing cached, mostly
            log.error("The watermark model could not be loaded (%s: %s)", type(e).__name__, e)
            self.watermark_error = f"{type(e).__name__}: {str(e)[:300]}"

    @property
    def shown_model_name(self) -> str:
        """The model as users see it named: a local folder by its name, not its server path."""
        return without_server_paths(self.model_name, self.model_name)

    @property
    def can_generate(self) -> bool:
        return self.generator is not None and self.watermark_error is None

    @property
    def description(self) -> str:
        if self.generator is not None:
            return f"{self.generator.description} on {self.generator.device}"
        return f"{self.shown_model_name} (not loaded)"

    def clip_room_seconds(self, max_seconds: float = DEFAULT_MAX_SECONDS) -> float:
        """About how long one context clip may be next to a reply of `max_seconds` (the window is ~164 s)."""
        frames = self.generator.model.max_seq_len if self.generator is not None else 2048
        return (frames - max_seconds * 1000 / FRAME_MS) * FRAME_MS / 1000 - 2  # ~2 s for the texts

    def banner(self) -> tuple[str, str]:
        """Markdown for the top of the page and its kind ("error", "note" or ""): what runs, or why nothing does."""
        if self.watermark_error:
            return (
                "### ⛔ The watermark model could not be loaded, so generation is switched off\n"
                f"Every output is watermarked with AudioSeal (facebook/audioseal): {self.watermark_error}\n\n"
                "To fix it: let the app reach the Hub once so the weights are cached, or, for local research "
                "use only, run with `--no-watermark`."
            ), "error"
        if self.load_error:
            fix = (
                "To fix it: for sesame/csm-1b, accept its terms at https://huggingface.co/sesame/csm-1b, set "
                "`HF_TOKEN` (a Space secret, or the environment) and restart; offline, pass a local folder with "
                "`--model`."
                if self.load_error_is_download
                else "This is not a download problem: the server's log has the details."
            )
            return (
                f"### ⛔ The model could not be loaded, so generation is switched off\n"
                f"**{self.shown_model_name}**: {self.load_error}\n\n{fix} "
                "To try the interface without the model, run `python app.py --model tiny`."
            ), "error"
        off = "" if self.watermark else "\n\nThe watermark is off (`--no-watermark`): for local research use only."
        if self.is_tiny:
            return (
                "### 🧪 Tiny random test model: the output is noise, not speech\n"
                "Everything else works as with CSM-1B, the watermark too (a tiny random one). For real speech "
                f"run `python app.py` (sesame/csm-1b, needs `HF_TOKEN`).{off}"
            ), "note"
        return (f"### Watermark off{off}", "note") if off else ("", "")

    def require_generator(self) -> Generator:
        if self.generator is None:
            raise InputError(f"The model could not be loaded, so nothing can be generated. {self.load_error}")
        if self.watermark_error:
            raise InputError(
                "Generation is off: the watermark model could not be loaded, and every output is watermarked. "
                f"{self.watermark_error}. Let the app reach the Hub once, or run it with --no-watermark."
            )
        return self.generator

    def detect(self, path) -> Detection:
        """Whether a clip carries a watermark, and whose: the detector of the watermark in use, or
        (with --no-watermark) one loaded now. Any clip is read, silent ones too (none found)."""
        if not path or not Path(path).is_file():
            raise InputError("Upload the clip to check (a WAV, FLAC, OGG or MP3 file).")
        the_clip = f"This clip ({Path(path).name})"
        clip_header(path, the_clip)
        try:
            audio = load_mono(path, SAMPLE_RATE, max_seconds=MAX_CLIP_S)
        except ValueError:
            raise InputError(f"{the_clip} cannot be read as audio: use a WAV, FLAC, OGG or MP3 file.") from None
        key = self.watermark_key or {"tiny": self.is_tiny, "message": self.watermark_message}
        try:
            marker = load_watermarker(**key)
        except Exception as e:
            raise InputError(
                f"The watermark detector could not be loaded ({type(e).__name__}): try again later."
            ) from None
        return marker.detect(audio.numpy(), SAMPLE_RATE)

    # -- requests -> jobs --------------------------------------------------------------------------

    def prepare(self, lines: list[Line], voices: list[Voice], turns: tuple, settings: tuple, **options) -> Job:
        """A request as the API and the page both make it -> a Job, every part checked first.

        `turns` is the conversation so far as (paths, transcripts, speakers); `settings` as
        (temperature, topk, max_seconds, seed), as typed; `options` go to build_job.
        """
        if "takes" in options:  # said before any clip is read
            options["takes"] = check_takes(options["takes"])
        settings = Settings.parse(*settings)
        check_request_seconds(len(lines), settings)
        own = [(voice.path, f"speaker {voice.speaker}'s own voice") for voice in voices if voice.preset_id is None]
        for voice in voices:
            if voice.preset_id is None:
                check_transcript(voice.transcript, f"speaker {voice.speaker}'s own voice")
        return self.build_job(lines, voices, self.context_turns(*turns, other_clips=own), settings, **options)

    def voice_prompt(self, voice: Voice) -> tuple[ContextClip, str]:
        """A speaker prompt and the voice's name, from a preset id or an own clip."""
        if voice.preset_id is None:
            label = f"speaker {voice.speaker}'s own voice"
            return ContextClip(load_clip(voice.path, voice.transcript, voice.speaker, label), label, True), "own"
        preset = self.presets.get(voice.preset_id)
        if preset is None:
            known = ", ".join(p.id for p in self.presets.all())
            raise InputError(
                f"There is no preset voice {voice.preset_id!r} (for speaker {voice.speaker}); the presets are: {known}."
            )
        segment = Segment(voice.speaker, preset.transcript, self.presets.audio(preset))
        return ContextClip(segment, f"speaker {voice.speaker}'s voice ({preset.short_name})", True), preset.short_name

    def context_turns(self, paths, transcripts, speakers, label="context turn", other_clips=()) -> list[ContextClip]:
        """The conversation so far as clips; the request's clips (with `other_clips`) are checked together
        from their headers before any is decoded."""
        for name, value in (("context_audio", paths), ("context_text", transcripts), ("context_speakers", speakers)):
            if value is not None and not isinstance(value, (list, tuple)):
                raise InputError(f"{name} must be a list, one entry per context clip, got {type(value).__name__}.")
        paths, transcripts, speakers = list(paths or []), list(transcripts or []), list(speakers or [])
        if len(transcripts) <= MAX_CLIPS:  # every transcript before any clip is read (more: refused next)
            for i, transcript in enumerate(transcripts):
                check_transcript(transcript, f"{label} {i + 1}")
        check_request_clips([*other_clips, *((path, f"{label} {i + 1}") for i, path in enumerate(paths))])
        if not len(paths) == len(transcripts) == len(speakers):
            raise InputError(
                f"The context has {plural(len(paths), 'clip')}, {plural(len(transcripts), 'transcript')} and "
                f"{plural(len(speakers), 'speaker')}: give one transcript and one speaker for every clip, in order."
            )
        clips = []
        for i, (path, transcript, speaker) in enumerate(zip(paths, transcripts, speakers)):
            name = f"{label} {i + 1}"
            speaker = check_speaker(speaker, f"{capitalized(name)}: the speaker")
            clips.append(ContextClip(load_clip(path, transcript, speaker, name), name))
        return clips

    def build_job(self, lines: list[Line], voices: list[Voice], turns: list[ContextClip], settings: Settings,
                  note_unused_voices: bool = True, session: str | None = None, takes=1, first_turn=0) -> Job:  # fmt: skip
        """Check every voice, clip and line, and that they fit the model's window, before any GPU time is spent.

        A voice prompt is used only for a speaker who speaks (a line or a context turn): another would only
        lengthen the prompt. The API says so in the report; the page, whose idle cards are normal, does not.
        """
        generator = self.require_generator()
        speaking = {line.speaker for line in lines} | {clip.segment.speaker for clip in turns}
        prompts, names, unused = [], {}, []
        for voice in sorted(voices, key=lambda v: v.speaker):
            clip, name = self.voice_prompt(voice)  # checked even when unused: a broken clip is worth knowing
            if voice.speaker in speaking:
                prompts.append(clip)
                names[voice.speaker] = name
            else:
                unused.append(voice.speaker)
        context = prompts + turns
        self.check_fits(generator, lines, context, settings)
        notes = []
        if unused and note_unused_voices:
            one = len(unused) == 1
            notes.append(f"{speakers_phrase(unused)} say{'s' if one else ''} nothing in this request, so "
                         f"{'its voice was' if one else 'their voices were'} not used.")  # fmt: skip
        unvoiced = sorted({line.speaker for line in lines} - {clip.segment.speaker for clip in context})
        if unvoiced:
            notes.append(f"{speakers_phrase(unvoiced)} {'has' if len(unvoiced) == 1 else 'have'} no voice prompt "
                         "and no earlier turn, so the model picked a voice at random.")  # fmt: skip
        seed = settings.seed if settings.seed is not None else random.randrange(2**31)
        return Job(self.model_key, lines, context, settings, seed, names, notes, session, self.watermark_key,
                   takes=check_takes(takes), first_turn=first_turn)  # fmt: skip

    def check_fits(self, generator: Generator, lines: list[Line], context: list[ContextClip], settings) -> None:
        """Refuse a line, or a single clip, that cannot fit the window next to the longest reply."""
        budgets = []
        for line in lines:
            try:
                budgets.append(generator.context_budget(line.text, line.speaker, settings.max_frames * FRAME_MS))
            except ValueError:
                window = generator.model.max_seq_len
                raise InputError(
                    f"The text plus a reply of up to {settings.max_seconds:g} s does not fit the model's window of "
                    f"{window} frames ({window * FRAME_MS / 1000:.0f} s): shorten the text or lower the max length."
                ) from None
        for clip in context:
            if generator.segment_frames(clip.segment) > min(budgets):
                seconds = len(clip.segment.audio) / SAMPLE_RATE
                room = max(min(budgets) * FRAME_MS / 1000 - 2, 0)
                raise InputError(
                    f"The clip of {clip.label} is {seconds:.0f} s long, too long for the model's context: "
                    f"with a reply of up to {settings.max_seconds:g} s, about {room:.0f} s of audio fit. "
                    "Use a shorter clip (5 to 30 s is plenty for a voice) or lower the max length."
                )

    # -- jobs -> audio and files --------------------------------------------------------------------

    def run(self, job: Job, stop: threading.Event | None = None) -> Iterator[Chunk | TurnDone | Result]:
        """The job's chunks and turns as they come, then its Result.

        A set `stop` ends the job after the current chunk; a failure after the first chunk ends it
        with the failure said in the Result. Either way the finished turns and the interrupted turn's
        audio (marked partial) are kept.
        """
        started, turns, pending, current, error = time.perf_counter(), [], [], None, None
        if stop is not None and stop.is_set():  # Stop was pressed while the job waited in the queue
            yield self.finish(job, [], started, stopped=True)
            return
        events = run_job(job)
        try:
            for event in events:
                if isinstance(event, TurnStarted):
                    current, pending, turn_started = event.report, [], event.started
                elif isinstance(event, Chunk):
                    pending.append(event.audio)
                elif isinstance(event, TurnDone):
                    turns.append(event)
                    current, pending = None, []
                yield event
                # Not after TurnStarted: its first chunk is made already and comes next, so it is kept.
                if stop is not None and stop.is_set() and not isinstance(event, TurnStarted):
                    break
        except Exception as e:
            if not turns and not pending:
                raise  # nothing to keep: the request failed as a whole
            error = user_message(e)
        finally:
            events.close()
        if current is not None and pending:
            audio = np.concatenate(pending)
            turns.append(TurnDone(audio, finished_report(current, audio, turn_started, stopped=True)))
        cut = len(turns) < len(job.lines) or any(done.report.stopped for done in turns)  # the last turn too
        yield self.finish(job, turns, started, stopped=error is None and cut, error=error)

    def finish(self, job: Job, turns: list[TurnDone], started: float, stopped=False, error=None) -> Result:
        """Write each turn and take (and for a script the stitched conversation of takes A) as 24 kHz 16-bit WAV."""
        script, audio, audio_path = len(job.lines) > 1 or job.first_turn > 0, None, None
        folder = new_output_dir() if turns else None
        take_paths = [save_takes(folder, done, script) for done in turns]
        turn_paths = [paths[0] for paths in take_paths]
        if turns and not script:
            audio, audio_path = turns[0].audio, turn_paths[0]
        elif turns:
            audio, audio_path = stitch([t.audio for t in turns]), folder / "conversation.wav"
            save_wav(audio_path, audio, SAMPLE_RATE)
        reports = [t.report for t in turns]
        return Result(
            audio_path=audio_path,
            turn_paths=turn_paths,
            turns=reports,
            planned_turns=len(job.lines),
            seed=job.seed,
            seconds=0.0 if audio is None else len(audio) / SAMPLE_RATE,
            elapsed_s=time.perf_counter() - started,
            warnings=job.notes + result_warnings(reports, len(job.lines)),
            stopped=stopped,
            error=error,
            take_paths=take_paths if job.takes > 1 else [],
        )


def save_takes(folder: Path, done: TurnDone, script: bool) -> list[Path]:
    """A turn's WAVs: take A under the turn's name, takes B, C, D with their letter added."""
    r, paths = done.report, []
    name = turn_file_name(r.index, r.speaker, r.voice, r.stopped) if script else line_file_name(
        r.speaker, r.voice, r.seed, r.stopped)  # fmt: skip
    for i, audio in enumerate([done.audio, *done.other_takes]):
        path = folder / (name if i == 0 else name.replace(".wav", f"-take-{TAKE_LABELS[i]}.wav"))
        save_wav(path, audio, SAMPLE_RATE)
        paths.append(path)
    return paths


def without_server_paths(message: str, model_name: str) -> str:
    """A local checkpoint folder is named by its folder name in what users see: the log keeps the path."""
    folder = Path(model_name).expanduser()
    if not folder.exists():
        return message
    for spelled in {str(folder.resolve()), str(folder), model_name}:
        message = message.replace(spelled, folder.resolve().name)
    return message


def check_request_seconds(turns: int, settings: Settings) -> None:
    """The most audio one request may ask for: the GPU is shared, and a request holds it while it runs."""
    asked = turns * settings.max_seconds
    if asked > MAX_REQUEST_SECONDS:
        most = MAX_REQUEST_SECONDS // turns
        raise InputError(
            f"{plural(turns, 'turn')} of up to {settings.max_seconds:g} s ask for up to {asked:,.0f} s of audio; one "
            f"request can ask for at most {MAX_REQUEST_SECONDS} s: lower the max length per turn to {most:g} s "
            "or less, or split the script."
        )


def speakers_phrase(speakers: list[int]) -> str:
    """[5] -> "Speaker 5"; [0, 5] -> "Speaker 0 and speaker 5"."""
    return capitalized(" and ".join(f"speaker {s}" for s in speakers))
