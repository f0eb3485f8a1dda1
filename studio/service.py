"""The Studio: the model (loaded once), and how requests become jobs, audio files and reports.

The API and the page both call it; neither touches the model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from csm.audio import load_mono, save_wav
from csm.generator import FRAME_MS, Generator, load_csm_1b
from csm.loading import CheckpointError
from csm.text import TokenizerError
from studio import asr
from studio.clips import ClipCheck, check_clip_on_arrival, cleaned_clip, clip_header, read_clip
from studio.errors import InputError, sentence, user_message
from studio.inputs import DEFAULT_MAX_SECONDS, MAX_CLIP_S, SAMPLE_RATE
from studio.jobs import TAKE_LABELS, Chunk, Job, TurnDone, TurnStarted, finished_report, run_job
from studio.outputs import line_file_name, new_output_dir, stitch, turn_file_name
from studio.presets import PresetLibrary
from studio.report import Result, result_warnings
from studio.requests import Requests, Voice
from studio.watermark import DEFAULT_MESSAGE, Detection, load_watermarker

__all__ = ["DEFAULT_MODEL", "TINY_MODEL", "Studio", "Voice"]  # Voice: the API and the page import it from here

log = logging.getLogger("csm-studio")

DEFAULT_MODEL = "sesame/csm-1b"
TINY_MODEL = "tiny"


class Studio(Requests):
    """The model (loaded once, at start-up) and how requests become jobs and files."""

    def __init__(self, model=DEFAULT_MODEL, device=None, presets: PresetLibrary | None = None, dtype=None,
                 watermark: bool = True, watermark_message: int = DEFAULT_MESSAGE, quantize=None,
                 asr_model: str | None = None, compile_decoder: bool = False):  # fmt: skip
        self.model_name, self.quantize = model, quantize
        self.compile_decoder = compile_decoder  # CPU: the depth decoder's step compiled (csm.compiling)
        self.asr_choice = asr_model  # None: the device's default (studio/asr.py), the tiny one with a tiny model
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
            self.model_key = {"repo_id": repo_id, "device": self.device, "dtype": self.dtype, "quantize": self.quantize,
                              "compile_decoder": self.compile_decoder}  # fmt: skip
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

    # -- transcription and clip checks (the speech recogniser is loaded on first use) ----------------------

    @property
    def asr_device(self) -> str:
        if self.generator is not None:
            return str(self.generator.device)
        from csm.loading import resolve_device

        return str(resolve_device(self.device))

    @property
    def asr_model(self) -> str:
        """The speech recogniser: as chosen, else the tiny one for the tiny model, else the device's default."""
        if self.asr_choice:
            return self.asr_choice
        return asr.TINY if self.is_tiny else asr.default_model(self.asr_device)

    @property
    def asr_description(self) -> str:
        """The speech recogniser as users see it named: a local folder by its name, the tiny one as nonsense."""
        model = self.asr_model
        if model == asr.TINY:
            return asr.TINY_DESCRIPTION
        return Path(model).name if model.startswith(("/", ".", "~")) or Path(model).is_dir() else model

    def transcribe_audio(self, audio, label: str | None = None) -> str:
        """The words of `audio` (24 kHz mono), or an InputError naming the clip (`label`, or "this clip")."""
        the_clip = f"the clip of {label}" if label else "this clip"
        model, device = self.asr_model, self.asr_device
        try:
            asr.load_transcriber(model, device)  # here, so the GPU call below only looks it up
        except Exception as e:  # offline with nothing cached, mostly
            log.error("The speech recogniser %s could not be loaded (%s: %s)", model, type(e).__name__, e)
            raise InputError(
                f"The speech recogniser ({self.asr_description}) could not be loaded ({type(e).__name__}), so "
                f"{the_clip} cannot be transcribed: type the words spoken in it."
            ) from None
        text = asr.transcribe_on_device(model, device, audio)
        if not text:
            raise InputError(f"No words were heard in {the_clip}: type the words spoken in it.")
        return text

    def transcribe(self, path, role: str | None = None) -> asr.Transcription:
        """A clip's words and the model that heard them. `role` "voice" or "turn": the clip cleaned up as a
        generation will use it (clips.cleaned_clip); None: the whole clip as uploaded."""
        audio = read_clip(path, None) if role is None else cleaned_clip(path, None, role).audio
        return asr.Transcription(self.transcribe_audio(audio), self.asr_description)

    def check_clip(self, path, role: str = "voice") -> ClipCheck:
        """A clip judged on arrival, and its cleaned-up audio, which is what a generation uses of it."""
        return check_clip_on_arrival(path, self.clip_room_seconds(), role)

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
            transcripts=[{"clip": c.label, "text": c.segment.text, "automatic": c.automatic} for c in job.context],
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
