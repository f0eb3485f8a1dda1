"""Limits, and what a user types (lines, scripts, speaker ids, settings), checked with messages a person can act on."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from csm.inputs import FRAME_MS
from studio.errors import InputError

SAMPLE_RATE = 24_000
MAX_SPEAKER_ID = 9  # speaker ids 0-9 everywhere: the page's voice cards, scripts and the API
MAX_TEXT_CHARS = 1_000  # per turn: CSM speaks utterances, not chapters
MAX_SCRIPT_TURNS = 24
TURN_GAP_S = 0.25  # silence between turns in a stitched conversation
DEFAULT_MAX_SECONDS = 10
MAX_SECONDS_LIMIT = 60

# Limits on one request, checked before any decoding, tokenizing or GPU time: one request must not
# take the Space down or hold it for long. The README's "Limits" lists them with these reasons.
MAX_SCRIPT_CHARS = MAX_SCRIPT_TURNS * (MAX_TEXT_CHARS + 8)  # 24 full turns and their tags
MAX_TRANSCRIPT_CHARS = 4_000  # a clip the window can hold (164 s) has about 2,500 characters of speech
MAX_CLIPS = 32  # context clips per request: a conversation that fits the window has far fewer
MAX_CLIP_S = 180  # declared length of one clip: the model's whole window is 164 s
MAX_REQUEST_CLIP_S = 300  # declared audio of all clips together: the window, and room for what is left out
CLIP_RATES = (8_000, 192_000)  # sample rates read; a 1 Hz header would make resampling explode
MAX_CLIP_CHANNELS = 8
MAX_REQUEST_SECONDS = 120  # audio one request may ask for (turns x max length): the GPU is shared
MAX_UPLOAD = "50mb"  # 164 s of 48 kHz stereo 24-bit WAV is 47 MB

# A bracketed tag at the start of a script line; what is inside is checked as a speaker id.
SCRIPT_TAG = re.compile(r"^\s*\[([^\]]*)\]\s*(.*)$")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


@dataclass(frozen=True)
class Line:
    speaker: int
    text: str


def shown(value) -> str:
    """A value as a message quotes it: its repr, cut short (a caller may send megabytes)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def number(value, name: str) -> float:
    """A finite number from what a form or an API call sent (strings too), or an InputError naming `name`."""
    if isinstance(value, bool):
        raise InputError(f"{name} must be a number, got {shown(value)}.")
    try:
        value = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name} must be a number, got {shown(value)}.") from None
    if not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {shown(value)}.")
    return value


def whole_number(value, name: str, low: int, high: int, hint: str = "") -> int:
    """An integer in [low, high]; 1.5 is refused, not rounded."""
    refusal = InputError(f"{name} must be a whole number from {low} to {high}{hint}, got {shown(value)}.")
    try:
        as_float = number(value, name)
    except InputError:
        raise refusal from None
    if as_float != int(as_float) or not low <= as_float <= high:
        raise refusal
    return int(as_float)


def check_speaker(speaker, name: str = "speaker") -> int:
    return whole_number(speaker, name, 0, MAX_SPEAKER_ID)


def check_text(text, name: str = "The text") -> str:
    """The text of one turn, whitespace tidied; refused when empty or too long (never cut)."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{name} is empty: type what the speaker should say.")
    if len(text) <= 4 * MAX_TEXT_CHARS:  # far longer text is refused as it came, before any work on it
        text = " ".join(text.split())  # newlines and runs of spaces mean nothing to the model
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(
            f"{name} is {len(text):,} characters long; one turn can be at most {MAX_TEXT_CHARS:,}. "
            "Split it into several turns (one script line each)."
        )
    return text


def check_takes(takes) -> int:
    """How many versions of each turn to make in one pass (csm's MAX_TAKES at most)."""
    from csm.generator import MAX_TAKES

    return whole_number(takes, "Takes", 1, MAX_TAKES, hint=" (versions of each turn, made in one pass)")


def check_line(text, speaker) -> Line:
    return Line(check_speaker(speaker), check_text(text))


def check_script_text(script, argument: str, called: str, one_turn: str) -> str:
    """A script's whole text, refused before it is read line by line when it is not text or too long.
    `argument` names it in a type error, `called` in a length error, `one_turn` says how a turn is written."""
    if script is not None and not isinstance(script, str):
        raise InputError(f"{argument} must be text, {one_turn} per line, got {type(script).__name__}.")
    if len(script or "") > MAX_SCRIPT_CHARS:
        raise InputError(
            f"{called} is {len(script):,} characters long; at most {MAX_SCRIPT_CHARS:,} are read "
            f"({MAX_SCRIPT_TURNS} turns of up to {MAX_TEXT_CHARS:,} characters). Split it up."
        )
    return script or ""


def parse_script(script) -> list[Line]:
    """`[0] Hello there` lines -> Lines; blank lines are skipped."""
    script = check_script_text(script, "script", "The script", "one `[speaker] text` turn")
    lines = []
    for number_, raw in enumerate((script or "").splitlines(), start=1):
        if not raw.strip():
            continue
        match = SCRIPT_TAG.match(raw)
        where = f"Script line {number_}"
        if match is None:
            line = raw.strip() if len(raw.strip()) <= 40 else raw.strip()[:40] + "…"
            raise InputError(
                f"{where} has no speaker tag: start every line with the speaker's number "
                f"in brackets, like “[0] Hello there”. The line reads: “{line}”."
            )
        speaker = check_speaker(match[1].strip(), f"{where}: the speaker")
        lines.append(Line(speaker, check_text(match[2], where)))
    if not lines:
        raise InputError("The script is empty: write one turn per line, like “[0] Hello there” then “[1] Hi!”.")
    if len(lines) > MAX_SCRIPT_TURNS:
        raise InputError(
            f"The script has {len(lines)} turns; at most {MAX_SCRIPT_TURNS} are generated at once. Split it up."
        )
    return lines


@dataclass(frozen=True)
class Settings:
    temperature: float = 0.9
    topk: int = 50
    max_seconds: float = DEFAULT_MAX_SECONDS
    seed: int | None = None  # None: a random one, reported afterwards

    @property
    def max_frames(self) -> int:
        return int(self.max_seconds * 1000 // FRAME_MS)

    @classmethod
    def parse(cls, temperature, topk, max_seconds, seed) -> Settings:
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
        if seed is None or (isinstance(seed, str) and not seed.strip()) or number(seed, "Seed") == -1:
            return cls(temperature, int(topk), max_seconds, None)
        seed = whole_number(seed, "Seed", 0, 2**32 - 1, hint=", or -1 for a random one")
        return cls(temperature, int(topk), max_seconds, seed)
