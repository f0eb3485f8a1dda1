"""CSM Studio: a web demo and API for Sesame's CSM-1B conversational speech model.

Give each speaker a voice (a preset, or your own clip with its transcript), optionally the
conversation so far, then one line or a whole script: it is spoken in context, and you hear it
while it is being generated.

    python app.py                    # sesame/csm-1b (gated: accept its terms, set HF_TOKEN)
    python app.py --model tiny       # offline, on a tiny random model: the UI works, the audio is noise
    python app.py --model ./folder   # a local checkpoint folder, or another Hub repo id

Environment: CSM_STUDIO_MODEL (as --model), CSM_STUDIO_DEVICE (cuda, mps, cpu),
CSM_STUDIO_QUEUE_SIZE (requests that may wait), HF_TOKEN, HF_HUB_OFFLINE.
On a ZeroGPU Space the generation function asks for GPU time in proportion to the requested length.
"""

from __future__ import annotations

# isort: off
import spaces  # first: on ZeroGPU it must patch torch before anything touches CUDA
# isort: on

import argparse
import io
import json
import logging
import math
import os
import random
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
import soundfile as sf
import torch

from csm.audio import load_audio, save_wav, to_mono
from csm.generator import FRAME_MS, Generator, Segment, load_csm_1b
from csm.loading import CheckpointError
from csm.text import TokenizerError

log = logging.getLogger("csm-studio")

SAMPLE_RATE = 24_000
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
PRESETS_FILE = EXAMPLES_DIR / "presets.json"
OUTPUT_DIR = Path(tempfile.gettempdir()) / "csm-studio"  # gradio serves files from the temp dir
OUTPUT_TTL_S = 6 * 3600  # generated files older than this are deleted

DEFAULT_MODEL = "sesame/csm-1b"
TINY_MODEL = "tiny"
DEFAULT_QUEUE_SIZE = 16

MAX_SPEAKERS = 4  # speaker cards in the UI; 0 and 1 are shown at first
SHOWN_SPEAKERS = 2
MAX_SPEAKER_ID = 9
MAX_TEXT_CHARS = 1_000  # per turn: CSM speaks utterances, not chapters
MAX_SCRIPT_TURNS = 24
MIN_CLIP_S = 0.5
SILENCE_PEAK = 1e-4  # a clip whose loudest sample is below this holds no voice to imitate
TURN_GAP_S = 0.25  # silence between turns in a stitched conversation
DEFAULT_MAX_SECONDS = 10
MAX_SECONDS_LIMIT = 60

# ZeroGPU time asked for per request: start-up (CUDA graph capture, prefill) plus a generous
# rate per second of requested audio; the model usually stops well before the limit.
GPU_BASE_S = 10
GPU_S_PER_AUDIO_S = 1.0
GPU_MAX_S = 120

HUB_TIMEOUT_S = 10
OWN_VOICE = "own"
NO_VOICE = "none"
SCRIPT_LINE = re.compile(r"^\s*\[\s*(\d+)\s*\]\s*(.*)$")

STREAMING = shutil.which("ffmpeg") is not None  # gradio encodes streamed audio with ffmpeg


class InputError(ValueError):
    """A request the app cannot serve as given; the message tells the user what to change."""


@contextmanager
def user_facing_errors():
    """Bad input -> its message in the UI; anything else -> logged, and a short message. The app keeps serving."""
    try:
        yield
    except gr.Error:
        raise
    except ValueError as e:  # InputError, and csm's own input checks
        message = str(e)
        raise gr.Error(message[:1].upper() + message[1:], print_exception=False) from None
    except torch.cuda.OutOfMemoryError:
        log.exception("Out of GPU memory")
        raise gr.Error("The GPU ran out of memory: lower the max length or use shorter context clips.") from None
    except Exception as e:
        log.exception("Generation failed")
        raise gr.Error(
            f"Generation failed unexpectedly ({type(e).__name__}: {e}). The app is still running: try again.",
            print_exception=False,
        ) from None


# ---------------------------------------------------------------------------------------------
# Preset voices: the shipped synthetic clips, and sesame/csm-1b's own prompts when reachable


@dataclass(frozen=True)
class Preset:
    id: str
    name: str
    path: Path
    transcript: str
    official: bool = False


class PresetLibrary:
    """The voices in examples/presets.json; the Hub prompts are fetched in the background."""

    def __init__(self, manifest: Path = PRESETS_FILE):
        data = json.loads(manifest.read_text())
        self.about = data.get("about", "")
        self.shipped = [
            Preset(p["id"], p["name"], manifest.parent / p["file"], p["transcript"]) for p in data["presets"]
        ]
        self._hub_specs = data.get("hub_prompts", [])
        self._hub: list[Preset] = []
        self._lock = threading.Lock()
        self._audio: dict[Path, torch.Tensor] = {}

    def all(self) -> list[Preset]:
        """Official prompts first (when fetched), then the shipped ones."""
        with self._lock:
            return [*self._hub, *self.shipped]

    def get(self, preset_id: str) -> Preset | None:
        return next((p for p in self.all() if p.id == preset_id), None)

    def audio(self, preset: Preset) -> torch.Tensor:
        with self._lock:
            if preset.path not in self._audio:
                samples, rate = load_audio(preset.path)
                self._audio[preset.path] = to_mono(samples, rate, SAMPLE_RATE)
            return self._audio[preset.path]

    def fetch_hub_prompts(self, timeout: float = HUB_TIMEOUT_S) -> threading.Thread:
        """Start fetching the official prompts; start-up never waits for the Hub."""
        thread = threading.Thread(target=self._fetch_hub_prompts, args=(timeout,), name="hub-prompts", daemon=True)
        thread.start()
        return thread

    def _fetch_hub_prompts(self, timeout: float) -> None:
        from huggingface_hub import hf_hub_download

        found = []
        for spec in self._hub_specs:
            try:  # HF_HUB_OFFLINE is honoured by hf_hub_download: cached files only
                cached = hf_hub_download(spec["repo_id"], spec["file"], etag_timeout=timeout)
                # A 24 kHz mono copy in the temp dir: smaller to preview, and gradio may serve it.
                samples, rate = load_audio(cached)
                local = OUTPUT_DIR / "presets" / f"{spec['id']}.wav"
                local.parent.mkdir(parents=True, exist_ok=True)
                save_wav(local, to_mono(samples, rate, SAMPLE_RATE), SAMPLE_RATE)
            except Exception as e:  # offline, gated without a token, moved: the shipped voices will do
                log.info("Official prompt voices unavailable (%s: %s); offering the shipped ones.", type(e).__name__, e)
                return
            found.append(Preset(spec["id"], spec["name"], local, spec["transcript"], official=True))
        with self._lock:
            self._hub = found
        log.info("Official prompt voices available: %s", ", ".join(p.id for p in found))


# ---------------------------------------------------------------------------------------------
# Requests: text, script lines, clips and settings, checked with messages a person can act on


@dataclass(frozen=True)
class Line:
    speaker: int
    text: str


@dataclass
class ContextClip:
    segment: Segment
    label: str  # how messages name it, e.g. "speaker 0's voice" or "context turn 2"
    is_prompt: bool = False  # speaker prompts are kept when the context must be trimmed


@dataclass(frozen=True)
class Settings:
    temperature: float = 0.9
    topk: int = 50
    max_seconds: float = DEFAULT_MAX_SECONDS
    seed: int | None = None  # None: a random one, reported afterwards

    @classmethod
    def parse(cls, temperature, topk, max_seconds, seed) -> Settings:
        def number(value, name):
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise InputError(f"{name} must be a number, got {value!r}.") from None
            if not math.isfinite(value):
                raise InputError(f"{name} must be a finite number, got {value!r}.")
            return value

        temperature = number(temperature, "Temperature")
        if not 0 < temperature <= 5:
            raise InputError(f"Temperature must be above 0 and at most 5 (0.9 is typical), got {temperature:g}.")
        topk = number(topk, "Top-k")
        if topk != int(topk) or topk < 1:
            raise InputError(f"Top-k must be a whole number of at least 1 (50 is typical, 1 is greedy), got {topk:g}.")
        max_seconds = number(max_seconds, "Max length")
        if not FRAME_MS / 1000 <= max_seconds <= MAX_SECONDS_LIMIT:
            raise InputError(
                f"Max length per turn must be between {FRAME_MS / 1000:g} (one frame) and {MAX_SECONDS_LIMIT} "
                f"seconds, got {max_seconds:g}."
            )
        if seed is None or (isinstance(seed, str) and not seed.strip()):
            seed = None
        else:
            seed = number(seed, "Seed")
            if seed != int(seed) or seed < -1 or seed >= 2**32:
                raise InputError(
                    f"Seed must be a whole number from 0 to {2**32 - 1}, or -1 for a random one; got {seed:g}."
                )
            seed = None if seed == -1 else int(seed)
        return cls(temperature, int(topk), max_seconds, seed)


def check_speaker(speaker, where: str) -> int:
    try:
        as_float = float(speaker)
    except (TypeError, ValueError):
        raise InputError(
            f"{where}: the speaker must be a number from 0 to {MAX_SPEAKER_ID}, got {speaker!r}."
        ) from None
    if as_float != int(as_float) or not 0 <= as_float <= MAX_SPEAKER_ID:
        raise InputError(f"{where}: the speaker must be a number from 0 to {MAX_SPEAKER_ID}, got {speaker!r}.")
    return int(as_float)


def check_line(text, speaker, where: str = "The text") -> Line:
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where} is empty: type what the speaker should say.")
    text = " ".join(text.split())  # newlines and runs of spaces mean nothing to the model
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(
            f"{where} is {len(text):,} characters long; one turn can be at most {MAX_TEXT_CHARS:,}. "
            "Split it into several turns (one script line each)."
        )
    return Line(check_speaker(speaker, where), text)


def parse_script(script) -> list[Line]:
    """`[0] Hello there` lines -> Lines; blank lines are skipped."""
    lines = []
    for number, raw in enumerate((script or "").splitlines(), start=1):
        if not raw.strip():
            continue
        match = SCRIPT_LINE.match(raw)
        if match is None:
            shown = raw.strip() if len(raw.strip()) <= 40 else raw.strip()[:40] + "…"
            raise InputError(
                f"Script line {number} has no speaker tag: start every line with the speaker's number "
                f"in brackets, like “[0] Hello there”. The line reads: “{shown}”."
            )
        lines.append(check_line(match[2], match[1], where=f"Script line {number}"))
    if not lines:
        raise InputError("The script is empty: write one turn per line, like “[0] Hello there” then “[1] Hi!”.")
    if len(lines) > MAX_SCRIPT_TURNS:
        raise InputError(
            f"The script has {len(lines)} turns; at most {MAX_SCRIPT_TURNS} are generated at once. Split it up."
        )
    return lines


def load_clip(path, transcript, speaker: int, label: str) -> Segment:
    """A voice clip and its transcript -> a 24 kHz mono Segment, or an InputError saying what is wrong."""
    if not path:
        raise InputError(f"{label.capitalize()} has no audio: upload a clip or record one.")
    if not isinstance(transcript, str) or not transcript.strip():
        raise InputError(
            f"{label.capitalize()} has no transcript: type the words spoken in the clip, so the model can "
            "tell the voice from the words."
        )
    name = Path(path).name
    if not Path(path).is_file():
        raise InputError(
            f"The clip of {label} ({name}) is no longer on the server (uploads expire after a few hours): add it again."
        )
    try:
        samples, rate = load_audio(path)
        audio = to_mono(samples, rate, SAMPLE_RATE)
    except ValueError:
        raise InputError(
            f"The clip of {label} ({name}) cannot be read as audio: use a WAV, FLAC, OGG or MP3 file "
            "that is not corrupt."
        ) from None
    seconds = len(audio) / SAMPLE_RATE
    if seconds < MIN_CLIP_S:
        raise InputError(f"The clip of {label} is only {seconds:.2f} s long: use at least a second of speech.")
    if float(audio.abs().max()) < SILENCE_PEAK:
        raise InputError(
            f"The clip of {label} ({name}) is silent: record or upload a clip in which the voice can be heard."
        )
    return Segment(speaker, " ".join(transcript.split()), audio)


# ---------------------------------------------------------------------------------------------
# Generation on the device: the one function that needs the GPU


@dataclass
class Job:
    """Everything one request generates: lines in order, each in the context of the clips and the lines before."""

    model_key: dict  # load_csm_1b's arguments: the generator loaded at start-up is cached under them
    lines: list[Line]
    context: list[ContextClip]  # speaker prompts first, then the conversation so far
    settings: Settings
    seed: int  # the first line's seed; line i uses seed + i


@dataclass
class TurnReport:
    index: int
    speaker: int
    text: str
    seed: int
    frames: int
    seconds: float
    ended_by_model: bool
    dropped_context: list[str] = field(default_factory=list)
    generation_s: float = 0.0
    reused_context_frames: int = 0  # context the model still held from the request before: not recomputed


@dataclass
class Chunk:
    turn: int
    audio: np.ndarray  # float32 at SAMPLE_RATE


@dataclass
class TurnDone:
    audio: np.ndarray
    report: TurnReport


def gpu_seconds(job: Job) -> int:
    """The ZeroGPU duration for a job (spaces.GPU calls it with the job)."""
    return int(min(GPU_MAX_S, GPU_BASE_S + GPU_S_PER_AUDIO_S * job.settings.max_seconds * len(job.lines)))


_generation_lock = threading.Lock()  # one job at a time: a script's turns run back to back


@spaces.GPU(duration=gpu_seconds)
def run_job(job: Job) -> Iterator[Chunk | TurnDone]:
    """Generate the job's lines in order, yielding audio chunks as they come and a TurnDone per line."""
    # On ZeroGPU this runs in a worker process, from which only a gr.Error brings its message back.
    with user_facing_errors():
        yield from generate_lines(job)


def generate_lines(job: Job) -> Iterator[Chunk | TurnDone]:
    generator = load_csm_1b(**job.model_key)  # cached: no loading here
    settings = job.settings
    max_frames = int(settings.max_seconds * 1000 // FRAME_MS)
    with _generation_lock:
        history = list(job.context)
        for index, line in enumerate(job.lines):
            kept, dropped = fit_context(generator, history, line, max_frames)
            seed = job.seed + index
            started = time.perf_counter()
            chunks = []
            stream = generator.generate_stream(
                line.text,
                line.speaker,
                [clip.segment for clip in kept],
                max_audio_length_ms=max_frames * FRAME_MS,
                temperature=settings.temperature,
                topk=settings.topk,
                seed=seed,
            )
            for chunk in stream:
                chunks.append(chunk.float().numpy())
                yield Chunk(index, chunks[-1])
            info = stream.info
            dropped += [kept[i].label for i in info.dropped_context]  # only if our estimate was short
            audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
            report = TurnReport(
                index,
                line.speaker,
                line.text,
                seed,
                info.frames,
                round(len(audio) / SAMPLE_RATE, 3),
                info.ended_by_model,
                dropped,
                round(time.perf_counter() - started, 3),
                info.reused_prompt_frames,
            )
            yield TurnDone(audio, report)
            if len(audio) >= generator.codec.samples_per_frame:  # an empty turn cannot be context
                history.append(
                    ContextClip(
                        Segment(line.speaker, line.text, torch.from_numpy(audio)), f"turn {index + 1} of this run"
                    )
                )


def context_budget(generator: Generator, line: Line, max_frames: int) -> int:
    """Frames left for context once the line's text and the longest reply are reserved."""
    try:
        return generator.context_budget(line.text, line.speaker, max_frames * FRAME_MS)
    except ValueError:
        window = generator.model.max_seq_len
        raise InputError(
            f"The text plus a reply of up to {max_frames * FRAME_MS / 1000:g} s does not fit the model's window "
            f"of {window} frames ({window * FRAME_MS / 1000:.0f} s): shorten the text or lower the max length."
        ) from None


def fit_context(generator: Generator, history: list[ContextClip], line: Line, max_frames: int):
    """The clips that fit the window, and the labels of those left out.

    The conversation's oldest turns go first; speaker prompts go only if nothing else is left,
    because they are what keeps each voice recognisable.
    """
    budget = context_budget(generator, line, max_frames)
    sizes = [generator.segment_frames(clip.segment) for clip in history]
    total, dropped = sum(sizes), set()
    order = [i for i, c in enumerate(history) if not c.is_prompt] + [i for i, c in enumerate(history) if c.is_prompt]
    for i in order:
        if total <= budget:
            break
        dropped.add(i)
        total -= sizes[i]
    kept = [clip for i, clip in enumerate(history) if i not in dropped]
    return kept, [history[i].label for i in sorted(dropped)]


# ---------------------------------------------------------------------------------------------
# The studio: the loaded model (or why it is not), presets, requests -> jobs -> files


def wav_bytes(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1, 1), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def new_output_dir() -> Path:
    """A fresh folder for one request's files; folders past their time are removed on the way."""
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in OUTPUT_DIR.glob("run-*"):
        if now - old.stat().st_mtime > OUTPUT_TTL_S:
            shutil.rmtree(old, ignore_errors=True)
    folder = OUTPUT_DIR / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    return folder


def stitch(turns: list[np.ndarray]) -> np.ndarray:
    """The turns one after another, TURN_GAP_S of silence between them."""
    gap = np.zeros(int(TURN_GAP_S * SAMPLE_RATE), np.float32)
    pieces = []
    for i, audio in enumerate(turns):
        pieces += [gap, audio] if i else [audio]
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)


@dataclass
class Result:
    """A finished request: the files written and what happened."""

    audio_path: Path  # the utterance, or the stitched conversation
    turn_paths: list[Path]
    turns: list[TurnReport]
    seed: int
    seconds: float
    elapsed_s: float
    warnings: list[str]

    def info(self, model: str) -> dict:
        return {
            "seed": self.seed,
            "seconds": round(self.seconds, 3),
            "sample_rate": SAMPLE_RATE,
            "gap_seconds": TURN_GAP_S if len(self.turns) > 1 else 0.0,
            "turns": [asdict(t) for t in self.turns],
            "warnings": self.warnings,
            "elapsed_seconds": round(self.elapsed_s, 3),
            "model": model,
        }


class Studio:
    """The model (loaded once, at start-up) and how requests become jobs and files."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        device: str | None = None,
        presets: PresetLibrary | None = None,
        dtype: torch.dtype | None = None,
    ):
        self.model_name = model
        self.device = device
        self.dtype = dtype  # None: bf16 on CUDA, fp32 elsewhere
        self.presets = presets or PresetLibrary()
        self.generator: Generator | None = None
        self.load_error: str | None = None
        self.model_key: dict = {}

    @property
    def is_tiny(self) -> bool:
        return self.model_name == TINY_MODEL

    def load(self) -> Studio:
        """Load the model through the cached load_csm_1b; on failure keep serving and say how to fix it."""
        try:
            if self.is_tiny:
                from csm.tiny import tiny_checkpoint_dir

                repo_id = str(tiny_checkpoint_dir())
            else:
                repo_id = self.model_name
            self.model_key = {"repo_id": repo_id, "device": self.device, "dtype": self.dtype}
            started = time.perf_counter()
            self.generator = load_csm_1b(**self.model_key)
            log.info(
                "Loaded %s on %s in %.1f s",
                self.generator.description,
                self.generator.device,
                time.perf_counter() - started,
            )
        except (CheckpointError, TokenizerError) as e:
            self.load_error = str(e)
        except Exception as e:  # no network, out of memory, a broken download: still serve the page
            log.exception("Loading %s failed", self.model_name)
            self.load_error = f"{type(e).__name__}: {e}"
        if self.load_error:
            log.error("The model %s could not be loaded: %s", self.model_name, self.load_error)
        return self

    @property
    def description(self) -> str:
        if self.generator is not None:
            return f"{self.generator.description} on {self.generator.device}"
        return f"{self.model_name} (not loaded)"

    def banner(self) -> str:
        """Markdown for the top of the page: what is running, or why nothing is and how to fix it."""
        if self.load_error:
            return (
                f"### ⚠️ The model could not be loaded, so generation is switched off\n"
                f"**{self.model_name}**: {self.load_error}\n\n"
                "To fix it: for sesame/csm-1b, accept its terms at https://huggingface.co/sesame/csm-1b, set "
                "`HF_TOKEN` (a Space secret, or the environment) and restart; offline, pass a local folder with "
                "`--model`. To try the interface without the model, run `python app.py --model tiny`."
            )
        if self.is_tiny:
            return (
                "### 🧪 Tiny random test model: the output is noise, not speech\n"
                "Everything else works as with CSM-1B. For real speech run `python app.py` "
                "(sesame/csm-1b, needs `HF_TOKEN`)."
            )
        return ""

    def require_generator(self) -> Generator:
        if self.generator is None:
            raise InputError(f"The model could not be loaded, so nothing can be generated. {self.load_error}")
        return self.generator

    # -- requests -> jobs --------------------------------------------------------------------------

    def preset_prompt(self, speaker: int, preset_id: str) -> ContextClip:
        preset = self.presets.get(preset_id)
        if preset is None:
            known = ", ".join(p.id for p in self.presets.all())
            raise InputError(
                f"There is no preset voice {preset_id!r} (for speaker {speaker}); the presets are: {known}."
            )
        segment = Segment(speaker, preset.transcript, self.presets.audio(preset))
        return ContextClip(segment, f"speaker {speaker}'s voice ({preset.name})", is_prompt=True)

    def own_prompt(self, speaker: int, path, transcript) -> ContextClip:
        label = f"speaker {speaker}'s own voice"
        return ContextClip(load_clip(path, transcript, speaker, label), label, is_prompt=True)

    def context_turns(self, paths, transcripts, speakers, first_label: str = "context turn") -> list[ContextClip]:
        paths, transcripts, speakers = list(paths or []), list(transcripts or []), list(speakers or [])
        if not len(paths) == len(transcripts) == len(speakers):
            raise InputError(
                f"The context has {len(paths)} clips, {len(transcripts)} transcripts and {len(speakers)} speakers: "
                "give one transcript and one speaker for every clip, in the same order."
            )
        clips = []
        for i, (path, transcript, speaker) in enumerate(zip(paths, transcripts, speakers)):
            label = f"{first_label} {i + 1}"
            speaker = check_speaker(speaker, label.capitalize())
            clips.append(ContextClip(load_clip(path, transcript, speaker, label), label))
        return clips

    def build_job(self, lines: list[Line], context: list[ContextClip], settings: Settings) -> Job:
        """Check that every clip and line can fit the model's window before any GPU time is spent."""
        generator = self.require_generator()
        max_frames = int(settings.max_seconds * 1000 // FRAME_MS)
        smallest_budget = min(context_budget(generator, line, max_frames) for line in lines)
        for clip in context:
            if generator.segment_frames(clip.segment) > smallest_budget:
                seconds = len(clip.segment.audio) / SAMPLE_RATE
                room = max(smallest_budget * FRAME_MS / 1000 - 2, 0)
                raise InputError(
                    f"The clip of {clip.label} is {seconds:.0f} s long, too long for the model's context: "
                    f"with a reply of up to {settings.max_seconds:g} s, about {room:.0f} s of audio fit. "
                    "Use a shorter clip (5 to 30 s is plenty for a voice) or lower the max length."
                )
        seed = settings.seed if settings.seed is not None else random.randrange(2**31)
        return Job(self.model_key, lines, context, settings, seed)

    # -- jobs -> files -------------------------------------------------------------------------------

    def finish(self, job: Job, turns: list[TurnDone], started: float) -> Result:
        """Write each turn (and for a script the stitched conversation) as 24 kHz 16-bit WAV."""
        folder = new_output_dir()
        warnings = turn_warnings([t.report for t in turns])
        turn_paths = []
        for done in turns:
            r = done.report
            path = folder / (f"turn-{r.index + 1}-speaker-{r.speaker}.wav" if len(turns) > 1 else "speech.wav")
            save_wav(path, done.audio, SAMPLE_RATE)
            turn_paths.append(path)
        if len(turns) > 1:
            audio = stitch([t.audio for t in turns])
            audio_path = folder / "conversation.wav"
            save_wav(audio_path, audio, SAMPLE_RATE)
        else:
            audio, audio_path = turns[0].audio, turn_paths[0]
        return Result(
            audio_path=audio_path,
            turn_paths=turn_paths,
            turns=[t.report for t in turns],
            seed=job.seed,
            seconds=len(audio) / SAMPLE_RATE,
            elapsed_s=time.perf_counter() - started,
            warnings=warnings,
        )


def turn_warnings(reports: list[TurnReport]) -> list[str]:
    warnings = []
    for r in reports:
        which = f"Turn {r.index + 1}: " if len(reports) > 1 else ""
        if r.dropped_context:
            warnings.append(
                f"{which}the context was too long for the model's window, so it was generated without "
                f"{', '.join(r.dropped_context)} (oldest first)."
            )
        if r.frames == 0:
            warnings.append(f"{which}the model ended at once and produced no audio; try another seed or rephrase.")
    return warnings


# ---------------------------------------------------------------------------------------------
# The API: plain arguments in, 24 kHz WAV files and a JSON report out


def run_to_end(studio: Studio, job: Job) -> Result:
    started, turns = time.perf_counter(), []
    for event in run_job(job):
        if isinstance(event, TurnDone):
            turns.append(event)
    return studio.finish(job, turns, started)


def api_handlers(studio: Studio):
    def api_context(context_audio, context_text, context_speakers, voices) -> list[ContextClip]:
        if voices is None:
            voices = {}
        if not isinstance(voices, dict):
            raise InputError('voices must map speaker numbers to preset ids, like {"0": "river", "1": "maple"}.')
        prompts = [
            studio.preset_prompt(check_speaker(speaker, "voices"), str(preset_id))
            for speaker, preset_id in sorted(voices.items(), key=lambda item: str(item[0]))
        ]
        if isinstance(context_text, str) or isinstance(context_speakers, (str, int)):
            raise InputError("context_text and context_speakers must be lists, one entry per context clip.")
        return prompts + studio.context_turns(context_audio, context_text, context_speakers)

    def generate(
        text, speaker, context_audio, context_text, context_speakers, voices, temperature, topk, max_seconds, seed
    ):
        with user_facing_errors():
            studio.require_generator()
            line = check_line(text, speaker)
            context = api_context(context_audio, context_text, context_speakers, voices)
            job = studio.build_job([line], context, Settings.parse(temperature, topk, max_seconds, seed))
            result = run_to_end(studio, job)
            return str(result.audio_path), result.info(studio.description)

    def generate_script(
        script, context_audio, context_text, context_speakers, voices, temperature, topk, max_seconds, seed
    ):
        with user_facing_errors():
            studio.require_generator()
            lines = parse_script(script)
            context = api_context(context_audio, context_text, context_speakers, voices)
            job = studio.build_job(lines, context, Settings.parse(temperature, topk, max_seconds, seed))
            result = run_to_end(studio, job)
            return str(result.audio_path), [str(p) for p in result.turn_paths], result.info(studio.description)

    return generate, generate_script


API_GENERATE_DOC = (
    "Speak one line in context. Returns a 24 kHz WAV and a report (seed, seconds, frames, dropped context). "
    "context_audio/context_text/context_speakers: the conversation so far, one entry per clip, oldest first; "
    'voices: preset voices as speaker prompts, e.g. {"0": "river"}; seed -1: random.'
)
API_SCRIPT_DOC = (
    "Speak a script, one turn per line as `[speaker] text`, each turn in the context of the ones before. "
    f"Returns the stitched conversation ({TURN_GAP_S} s between turns), each turn's WAV, and a report."
)


# ---------------------------------------------------------------------------------------------
# The web UI

CSS = """
#status-banner { background: var(--color-accent-soft); border-left: 4px solid var(--color-accent);
                 border-radius: 8px; padding: 2px 16px; }
#status-banner h3 { margin: 10px 0 4px 0; }
.turn-row { align-items: center !important; }
.turn-label { min-width: 90px; }
.icon-button { min-width: 42px !important; max-width: 48px; font-size: 1.1em !important; }
.preset-transcript p { font-style: italic; color: var(--body-text-color-subdued); font-size: 0.9em; margin: 0; }
"""

INTRO = """
# 🗣️ CSM Studio
Conversational speech with [Sesame CSM-1B](https://huggingface.co/sesame/csm-1b): give each speaker a voice,
add the conversation so far if you like, then type the next line or a whole script. Each turn is spoken
in the context of the voices and the turns before it, and plays while it is being generated.
"""

SCRIPT_EXAMPLE = """[0] Hey, did you get a chance to look at the garden this morning?
[1] I did! The tomatoes are finally turning red.
[0] Finally. I was starting to think they never would."""

COMPACT_PLAYER = gr.WaveformOptions(show_recording_waveform=False)  # the browser's own one-line player

LINE_EXAMPLES = [
    "Hey, how are you doing today?",
    "Honestly, I have no idea, but it was really catchy.",
    "Let's meet at seven o'clock in front of the library.",
]


def voice_choices(presets: PresetLibrary) -> list[tuple[str, str]]:
    return [(p.name, p.id) for p in presets.all()] + [
        ("Own voice: upload or record a clip", OWN_VOICE),
        ("No voice prompt (random voice)", NO_VOICE),
    ]


def default_voice(presets: PresetLibrary, speaker: int) -> str:
    available = presets.all()
    return available[speaker].id if speaker < len(available) else NO_VOICE


def voice_views(presets: PresetLibrary, choice: str):
    """Updates for a speaker card after its voice picker changes: preset preview, own-voice inputs."""
    preset = presets.get(choice) if choice not in (OWN_VOICE, NO_VOICE) else None
    return (
        gr.update(value=str(preset.path) if preset else None, visible=preset is not None),
        gr.update(value=f"“{preset.transcript}”" if preset else "", visible=preset is not None),
        gr.update(visible=choice == OWN_VOICE),
    )


def describe_result(result: Result, description: str) -> str:
    """The report under the result: the seed first, as it is what a user copies."""
    speed = result.seconds / max(result.elapsed_s, 1e-6)
    parts = [
        f"**Seed {result.seed}** · {result.seconds:.2f} s of audio · generated in {result.elapsed_s:.1f} s "
        f"({speed:.1f}× real time)<br><small>{description}</small>"
    ]
    if len(result.turns) == 1:
        t = result.turns[0]
        end = (
            "ended by the model"
            if t.ended_by_model
            else "⏱ stopped at the length limit: raise *Max length* if it was cut off"
        )
        parts.append(f"{t.frames} frames · {end}")
    else:
        rows = ["| # | Spk | Text | Length |", "|---|---|---|---|"]
        for t in result.turns:
            short = (t.text if len(t.text) <= 60 else t.text[:60] + "…").replace("|", "\\|")
            rows.append(
                f"| {t.index + 1} | {t.speaker} | {short} | {t.seconds:.1f}&nbsp;s{'' if t.ended_by_model else ' ⏱'} |"
            )
        parts.append("\n".join(rows))
        parts.append(
            f"Turn *n* used seed {result.seed} + *n* − 1 · turns are {TURN_GAP_S:g} s apart in the conversation"
            + (" · ⏱ stopped at the length limit" if not all(t.ended_by_model for t in result.turns) else "")
        )
    parts += [f"⚠️ {w}" for w in result.warnings]
    return "\n\n".join(parts)


PRIVATE = {"api_visibility": "private"}  # UI-only events: the API is /generate and /generate_script
# Quick UI-only events skip the queue: a queue full of generations must not stall a page load or a click.
# (Events that change the conversation's gr.State stay queued: gr.render missed un-queued State changes.)
UI_ONLY = {**PRIVATE, "queue": False}
ONE_AT_A_TIME = {"concurrency_limit": 1, "concurrency_id": "generation"}  # one generation per GPU


@dataclass
class SpeakerCard:
    """One speaker's voice: a preset (previewed with its transcript), an own clip, or none."""

    speaker: int
    column: gr.Column
    picker: gr.Dropdown
    preview: gr.Audio
    preview_text: gr.Markdown
    own_group: gr.Group
    own_audio: gr.Audio
    own_text: gr.Textbox

    @property
    def views(self) -> list:
        return [self.preview, self.preview_text, self.own_group]


def speaker_card(presets: PresetLibrary, speaker: int) -> SpeakerCard:
    choice = default_voice(presets, speaker)
    preset = presets.get(choice)
    with gr.Column(visible=speaker < SHOWN_SPEAKERS, min_width=260) as column:
        with gr.Group():
            picker = gr.Dropdown(
                voice_choices(presets),
                value=choice,
                label=f"Speaker {speaker}",
                elem_id=f"voice-{speaker}",
                interactive=True,
            )
            preview = gr.Audio(
                str(preset.path) if preset else None,
                visible=preset is not None,
                label="Preset clip",
                show_label=False,
                interactive=False,
                buttons=[],
                container=False,
                waveform_options=COMPACT_PLAYER,
            )
            preview_text = gr.Markdown(
                f"“{preset.transcript}”" if preset else "",
                visible=preset is not None,
                elem_classes=["preset-transcript"],
                padding=True,
            )
            with gr.Group(visible=False) as own_group:
                own_audio = gr.Audio(
                    sources=["upload", "microphone"],
                    type="filepath",
                    label="Your clip (5-30 s)",
                    elem_id=f"own-audio-{speaker}",
                )
                own_text = gr.Textbox(
                    label="Its transcript",
                    lines=2,
                    placeholder="Exactly the words spoken in the clip",
                    elem_id=f"own-text-{speaker}",
                )
    card = SpeakerCard(speaker, column, picker, preview, preview_text, own_group, own_audio, own_text)
    picker.change(lambda choice: voice_views(presets, choice), picker, card.views, **UI_ONLY)
    return card


def new_turn(path, text: str, speaker: int, seconds: float) -> dict:
    """A turn of the conversation as the UI keeps it (in a gr.State)."""
    return {
        "id": uuid.uuid4().hex[:8],
        "path": str(path),
        "text": text,
        "speaker": int(speaker),
        "seconds": round(seconds, 2),
    }


def move_turn(turns: list, index: int, step: int) -> list:
    other = index + step
    if not 0 <= other < len(turns):
        return turns
    turns = list(turns)
    turns[index], turns[other] = turns[other], turns[index]
    return turns


def conversation_panel(turns_state: gr.State) -> None:
    """The earlier turns (play, reorder, remove) and a form to add one."""

    @gr.render(inputs=turns_state)
    def show_turns(turns):
        if not turns:
            gr.Markdown("*No earlier turns yet: add a clip below, or add a generated result.*")
            return
        for i, turn in enumerate(turns):
            with gr.Row(elem_classes=["turn-row"], key=f"turn-{turn['id']}"):
                gr.Markdown(f"**{i + 1}** · Speaker {turn['speaker']}", elem_classes=["turn-label"])
                gr.Audio(
                    turn["path"],
                    show_label=False,
                    interactive=False,
                    scale=3,
                    min_width=260,
                    buttons=[],
                    container=False,
                    waveform_options=COMPACT_PLAYER,
                )
                gr.Markdown(turn["text"], scale=3)
                up = gr.Button("↑", size="sm", elem_classes=["icon-button"], interactive=i > 0, scale=0)
                down = gr.Button("↓", size="sm", elem_classes=["icon-button"], interactive=i < len(turns) - 1, scale=0)
                remove = gr.Button("✕", size="sm", elem_classes=["icon-button"], scale=0)
            up.click(lambda t, i=i: move_turn(t, i, -1), turns_state, turns_state, **PRIVATE)
            down.click(lambda t, i=i: move_turn(t, i, +1), turns_state, turns_state, **PRIVATE)
            remove.click(lambda t, i=i: t[:i] + t[i + 1 :], turns_state, turns_state, **PRIVATE)
        gr.Button("Clear the conversation", size="sm").click(lambda: [], None, turns_state, **PRIVATE)

    with gr.Accordion("Add an earlier turn", open=False):
        with gr.Row():
            clip = gr.Audio(
                sources=["upload", "microphone"], type="filepath", label="Clip", scale=2, elem_id="new-turn-audio"
            )
            with gr.Column(scale=2):
                transcript = gr.Textbox(
                    label="Transcript", lines=2, placeholder="The words spoken in the clip", elem_id="new-turn-text"
                )
                speaker = gr.Dropdown(list(range(MAX_SPEAKERS)), value=0, label="Speaker")
                add = gr.Button("Add to the conversation", variant="secondary", elem_id="add-turn")

    def add_earlier_turn(turns, path, text, turn_speaker):
        with user_facing_errors():
            segment = load_clip(path, text, int(turn_speaker), f"turn {len(turns) + 1}")
        return turns + [new_turn(path, segment.text, turn_speaker, len(segment.audio) / SAMPLE_RATE)], None, ""

    add.click(add_earlier_turn, [turns_state, clip, transcript, speaker], [turns_state, clip, transcript], **PRIVATE)


def api_endpoints(studio: Studio) -> None:
    """/generate and /generate_script: hidden components give them plain, named arguments."""
    generate, generate_script = api_handlers(studio)
    with gr.Column(visible=False):
        text = gr.Textbox(label="text")
        speaker = gr.Number(0, precision=0, label="speaker")
        script = gr.Textbox(label="script")
        context = [
            gr.File(value=[], file_count="multiple", type="filepath", label="context_audio"),
            gr.JSON(value=[], label="context_text"),
            gr.JSON(value=[], label="context_speakers"),
            gr.JSON(value={}, label="voices"),
        ]
        settings = [
            gr.Number(0.9, label="temperature"),
            gr.Number(50, precision=0, label="topk"),
            gr.Number(DEFAULT_MAX_SECONDS, label="max_seconds"),
            gr.Number(-1, precision=0, label="seed"),
        ]
        audio = gr.Audio(type="filepath", format="wav", label="audio")
        conversation = gr.Audio(type="filepath", format="wav", label="conversation")
        turns = gr.File(file_count="multiple", label="turns")
        info = gr.JSON(label="info")
        generate_trigger, script_trigger = gr.Button(), gr.Button()
    generate_trigger.click(
        generate,
        [text, speaker, *context, *settings],
        [audio, info],
        api_name="generate",
        api_description=API_GENERATE_DOC,
        **ONE_AT_A_TIME,
    )
    script_trigger.click(
        generate_script,
        [script, *context, *settings],
        [conversation, turns, info],
        api_name="generate_script",
        api_description=API_SCRIPT_DOC,
        **ONE_AT_A_TIME,
    )


def build_demo(studio: Studio, queue_size: int = DEFAULT_QUEUE_SIZE) -> gr.Blocks:
    presets = studio.presets
    speaker_ids = list(range(MAX_SPEAKERS))

    with gr.Blocks(title="CSM Studio", delete_cache=(1800, OUTPUT_TTL_S)) as demo:
        gr.Markdown(INTRO)
        gr.Markdown(studio.banner(), visible=bool(studio.banner()), elem_id="status-banner")
        turns_state = gr.State([])  # the conversation so far, oldest first (see new_turn)
        last_result = gr.State({})  # the last run's seed, and its turns ready to join the conversation
        shown_speakers = gr.State(SHOWN_SPEAKERS)

        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                gr.Markdown(
                    "### 1 · Voices\nEach speaker imitates the voice, pace and tone of its prompt clip. The "
                    "*synthetic* presets are robotic espeak-ng stand-ins: a real recording gives far better results."
                )
                cards = []
                for first in range(0, MAX_SPEAKERS, 2):
                    with gr.Row():
                        cards += [speaker_card(presets, speaker) for speaker in speaker_ids[first : first + 2]]
                with gr.Row():
                    add_speaker = gr.Button("+ Add speaker", size="sm")
                    remove_speaker = gr.Button("− Remove speaker", size="sm", visible=False)

                gr.Markdown(
                    "### 2 · Conversation so far *(optional)*\n"
                    "Earlier turns, oldest first: with the voices, they are the context of what is said next."
                )
                conversation_panel(turns_state)

                gr.Markdown("### 3 · What to say")
                mode = gr.Radio(["One line", "Script"], value="One line", show_label=False, elem_id="mode")
                with gr.Group(visible=True) as line_group:
                    with gr.Row():
                        text = gr.Textbox(
                            label="Text",
                            placeholder="What should be said next?",
                            lines=2,
                            scale=4,
                            max_length=MAX_TEXT_CHARS,
                            elem_id="line-text",
                        )
                        speaker = gr.Dropdown(speaker_ids, value=0, label="Speaker", scale=1, min_width=100)
                line_examples = gr.Examples([[t] for t in LINE_EXAMPLES], inputs=[text], label="Try")
                with gr.Group(visible=False) as script_group:
                    script = gr.Textbox(
                        label="Script: one turn per line, as [speaker] text",
                        value=SCRIPT_EXAMPLE,
                        lines=6,
                        max_lines=MAX_SCRIPT_TURNS,
                        elem_id="script-text",
                    )

                with gr.Accordion("Settings", open=False, elem_id="settings"):
                    with gr.Row():
                        temperature = gr.Slider(
                            0.1,
                            1.5,
                            value=0.9,
                            step=0.05,
                            label="Temperature",
                            info="Lower: steadier; higher: more varied",
                        )
                        topk = gr.Slider(1, 200, value=50, step=1, label="Top-k", info="1 = greedy (deterministic)")
                    with gr.Row():
                        max_seconds = gr.Slider(
                            1, MAX_SECONDS_LIMIT, value=DEFAULT_MAX_SECONDS, step=1, label="Max length per turn (s)"
                        )
                        seed = gr.Number(
                            -1,
                            precision=0,
                            label="Seed",
                            elem_id="seed",
                            info="-1 = random; the seed used is shown after each run",
                        )
                with gr.Row():
                    generate_button = gr.Button("▶ Generate", variant="primary", size="lg", scale=4, elem_id="generate")
                    stop_button = gr.Button("■ Stop", variant="stop", size="lg", scale=1)

            with gr.Column(scale=2):
                gr.Markdown("### Result")
                live = gr.Audio(
                    label="Live: plays while it is generated",
                    streaming=True,
                    autoplay=True,
                    interactive=False,
                    visible=STREAMING,
                    buttons=[],
                    elem_id="live-audio",
                )
                result_audio = gr.Audio(
                    label="Result",
                    type="filepath",
                    format="wav",
                    interactive=False,
                    buttons=["download"],
                    elem_id="result-audio",
                )
                result_info = gr.Markdown("*Nothing generated yet.*", elem_id="result-info")
                turn_files = gr.File(
                    label="Each turn's clip",
                    file_count="multiple",
                    visible=False,
                    interactive=False,
                    elem_id="turn-files",
                )
                with gr.Row():
                    reuse_seed = gr.Button("♻ Reuse this seed", size="sm", visible=False)
                    keep_result = gr.Button("+ Add to the conversation", size="sm", visible=False)
                if not STREAMING:
                    gr.Markdown("*Live playback is off (ffmpeg is not installed): the result appears when it is done.*")

        api_endpoints(studio)

        # -- UI events ------------------------------------------------------------------------------
        def refresh_voices():
            """On page load: the official prompts may have arrived since start-up."""
            updates = []
            for card in cards:
                choice = default_voice(presets, card.speaker)
                updates += [gr.update(choices=voice_choices(presets), value=choice), *voice_views(presets, choice)]
            return updates

        demo.load(refresh_voices, None, [c for card in cards for c in (card.picker, *card.views)], **UI_ONLY)

        def change_speakers(count, step):
            count = min(max(count + step, 1), MAX_SPEAKERS)
            return [
                count,
                *(gr.update(visible=card.speaker < count) for card in cards),
                gr.update(visible=count < MAX_SPEAKERS),
                gr.update(visible=count > SHOWN_SPEAKERS),
            ]

        speaker_outputs = [shown_speakers, *(card.column for card in cards), add_speaker, remove_speaker]
        add_speaker.click(lambda n: change_speakers(n, +1), shown_speakers, speaker_outputs, **UI_ONLY)
        remove_speaker.click(lambda n: change_speakers(n, -1), shown_speakers, speaker_outputs, **UI_ONLY)

        def show_mode(chosen):
            one_line = chosen == "One line"
            return gr.update(visible=one_line), gr.update(visible=one_line), gr.update(visible=not one_line)

        mode.change(show_mode, mode, [line_group, line_examples.dataset, script_group], **UI_ONLY)

        def job_from_ui(data: dict) -> Job:
            studio.require_generator()
            if data[mode] == "Script":
                lines = parse_script(data[script])
            else:
                lines = [check_line(data[text], data[speaker])]
            prompts = []  # the shown speakers' voices, in speaker order
            for card in cards[: data[shown_speakers]]:
                choice = data[card.picker]
                if choice == OWN_VOICE:
                    prompts.append(studio.own_prompt(card.speaker, data[card.own_audio], data[card.own_text]))
                elif choice and choice != NO_VOICE:
                    prompts.append(studio.preset_prompt(card.speaker, choice))
            turns = data[turns_state]
            context = studio.context_turns(
                [t["path"] for t in turns], [t["text"] for t in turns], [t["speaker"] for t in turns]
            )
            settings = Settings.parse(data[temperature], data[topk], data[max_seconds], data[seed])
            return studio.build_job(lines, prompts + context, settings)

        def generate_in_ui(data):
            """Stream the run into the live player, then show the files and the report."""
            started = time.perf_counter()
            with user_facing_errors():
                job = job_from_ui(data)
            count = len(job.lines)
            yield {
                live: None,
                result_audio: None,
                turn_files: gr.update(value=None, visible=False),
                reuse_seed: gr.update(visible=False),
                keep_result: gr.update(visible=False),
                result_info: f"*Generating {count} turn{'s' if count > 1 else ''}…*",
            }
            turns: list[TurnDone] = []
            streamed_turn = 0
            with user_facing_errors():
                for event in run_job(job):
                    if isinstance(event, Chunk) and STREAMING and len(event.audio):
                        audio = event.audio
                        if event.turn != streamed_turn:  # the same pause between turns as the stitched file
                            gap = np.zeros(int(TURN_GAP_S * SAMPLE_RATE), np.float32)
                            audio, streamed_turn = np.concatenate([gap, audio]), event.turn
                        yield {live: wav_bytes(audio)}
                    elif isinstance(event, TurnDone):
                        turns.append(event)
                        if count > 1:
                            yield {result_info: f"*Generated turn {len(turns)} of {count}…*"}
                result = studio.finish(job, turns, started)
            for warning in result.warnings:
                gr.Warning(warning)
            spoken = [
                new_turn(path, r.text, r.speaker, r.seconds)
                for path, r in zip(result.turn_paths, result.turns)
                if r.frames
            ]
            yield {
                result_audio: str(result.audio_path),
                result_info: describe_result(result, studio.description),
                turn_files: gr.update(value=[str(p) for p in result.turn_paths], visible=count > 1),
                reuse_seed: gr.update(value=f"♻ Reuse seed {result.seed}", visible=True),
                keep_result: gr.update(visible=bool(spoken)),
                last_result: {"seed": result.seed, "turns": spoken},
            }

        ui_inputs = {mode, text, speaker, script, turns_state, shown_speakers, temperature, topk, max_seconds, seed}
        ui_inputs |= {c for card in cards for c in (card.picker, card.own_audio, card.own_text)}
        ui_outputs = [live, result_audio, result_info, turn_files, reuse_seed, keep_result, last_result]
        generation = generate_button.click(generate_in_ui, ui_inputs, ui_outputs, **ONE_AT_A_TIME, **PRIVATE)
        stop_button.click(None, None, None, cancels=[generation], **PRIVATE)
        reuse_seed.click(lambda last: last["seed"], last_result, seed, **UI_ONLY)
        keep_result.click(
            lambda turns, last: (turns + last["turns"], gr.update(visible=False)),
            [turns_state, last_result],
            [turns_state, keep_result],
            **PRIVATE,
        )

    demo.queue(max_size=queue_size, default_concurrency_limit=4)
    return demo


# ---------------------------------------------------------------------------------------------
# Command line


DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="CSM Studio: conversational speech with CSM-1B, in the browser.")
    parser.add_argument(
        "--model",
        default=os.environ.get("CSM_STUDIO_MODEL", DEFAULT_MODEL),
        help="'tiny' (offline random model, noise), a Hub repo id, or a local folder "
        f"(default: $CSM_STUDIO_MODEL or {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--device",
        default=os.environ.get("CSM_STUDIO_DEVICE") or None,
        help="cuda, mps or cpu (default: the best available)",
    )
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default=os.environ.get("CSM_STUDIO_DTYPE") or "auto",
        help="model precision (default: $CSM_STUDIO_DTYPE or auto: bfloat16 on CUDA, float32 elsewhere; "
        "bfloat16 also speeds up CPUs with AVX-512 BF16 or AMX)",
    )
    parser.add_argument("--host", default=None, help="address to listen on (default: gradio's, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: gradio's, 7860 or the next free one)")
    parser.add_argument(
        "--queue-size",
        type=int,
        default=int(os.environ.get("CSM_STUDIO_QUEUE_SIZE", DEFAULT_QUEUE_SIZE)),
        help="requests that may wait; more get a 'busy' answer (default: $CSM_STUDIO_QUEUE_SIZE or "
        f"{DEFAULT_QUEUE_SIZE})",
    )
    parser.add_argument("--share", action="store_true", help="also serve on a public gradio.live link")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    studio = Studio(args.model, device=args.device, dtype=DTYPES[args.dtype])
    if not studio.is_tiny:
        studio.presets.fetch_hub_prompts()  # in the background: an offline start is not delayed
    studio.load()
    demo = build_demo(studio, queue_size=args.queue_size)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        allowed_paths=[str(EXAMPLES_DIR)],
        theme=gr.themes.Soft(primary_hue="indigo", secondary_hue="pink"),
        css=CSS,
    )


if __name__ == "__main__":
    main()
