"""Reproduce a session: every turn of a bundle generated again through Studio.prepare and Studio.run (the same
voices, the clips as the model heard them, the conversation, the turns' texts and speakers, the settings and
the seed), and each compared, sample by sample, with the bundle's.

A turn matches when its 16-bit WAV samples are the bundle's, every one, and as many (a turn cut short by
Stop: when the bundle's samples are the start of the new turn's). That is promised on the same model, device
and dtype only: another GPU, dtype or CPU sums in another order. A bundle whose manifest was changed is
generated as it now reads, and the turns the change touches (that turn, and the ones after it, which hear it)
are reported as not matching: a mismatch is a finding, not an error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from studio.errors import InputError
from studio.inputs import MAX_SCRIPT_TURNS, MAX_SECONDS_LIMIT, SAMPLE_RATE, Line, check_text, shown
from studio.jobs import Job
from studio.manifest import model_entry
from studio.report import Result
from studio.service import Voice
from studio.sessions import Session, SessionTurn, first_chunk_frames_of, open_session

SAME_MODEL = ("id", "revision", "checkpoint_sha256", "quantize", "quantize_scheme")
SAME_DEVICE_AND_DTYPE = ("device", "dtype", "decoder")  # the arithmetic: bit-identical only when all agree
MAX_PRESET_ID = 64  # characters, as the API takes them
MAX_TURN_SAMPLES = MAX_SECONDS_LIMIT * SAMPLE_RATE + 1  # a turn is at most 60 s; a frame's rounding to spare


@dataclass
class TurnMatch:
    """One turn: generated again, and compared with the bundle's audio of it."""

    turn: int  # 1-based, as the page shows it
    speaker: int
    text: str
    seed: int  # the seed it was generated with now
    bundle_seed: int  # the seed the bundle says it had: different only in a changed manifest
    matched: bool  # every 16-bit sample equal, and as many (partial: the bundle's are the new turn's first ones)
    max_abs_diff: int | None  # largest difference of a 16-bit sample where both have one; None: no audio to compare
    samples: int
    bundle_samples: int
    partial: bool  # the bundle's turn was cut short by Stop
    problem: str = ""  # why the bundle's audio could not be compared, if it could not

    @property
    def seconds(self) -> float:
        return round(self.samples / SAMPLE_RATE, 3)

    @property
    def bundle_seconds(self) -> float:
        return round(self.bundle_samples / SAMPLE_RATE, 3)


@dataclass
class Reproduction:
    session: Session
    result: Result  # the new run: result.audio_path is the conversation (or the one turn), result.turn_paths each turn
    turns: list[TurnMatch]
    same_model: bool  # id, Hub revision or checkpoint hash, quantization
    same_device_and_dtype: bool  # and the decoder's path, compiled or eager
    same_watermark: bool
    here: dict  # this app's model entry, as a manifest would say it
    notes: list[str]  # each difference between the bundle's setup and this one, in a sentence

    @property
    def all_matched(self) -> bool:
        return bool(self.turns) and all(turn.matched for turn in self.turns)

    def report(self) -> dict:
        """What /reproduce answers: plain JSON."""
        shown_model = ("id", "revision", "device", "dtype", "quantize", "decoder")
        return {
            "all_matched": self.all_matched,
            "same_model": self.same_model,
            "same_device_and_dtype": self.same_device_and_dtype,
            "same_watermark": self.same_watermark,
            "notes": self.notes,
            "turns": [{**asdict(t), "seconds": t.seconds, "bundle_seconds": t.bundle_seconds} for t in self.turns],
            "sample_rate": SAMPLE_RATE,
            "bundle_model": {key: self.session.model.get(key) for key in shown_model},
            "model": {key: self.here.get(key) for key in shown_model},
            "elapsed_seconds": round(self.result.elapsed_s, 3),
        }


def reproduce(studio, path, session_hash: str | None = None) -> Reproduction:
    """Open the bundle at `path`, generate its turns again and compare them. InputError (with what to do)
    for a bundle that cannot be opened or generated here (say, a preset voice this app lacks)."""
    studio.require_generator()
    session = open_session(path)
    job = reproduction_job(studio, session, session_hash)
    result = None
    for result in studio.run(job):  # only the last event, the Result, is kept
        pass
    if result.error:
        raise InputError(result.error)
    made = result.take_paths or [[path] for path in result.turn_paths]
    turns = [compare(turn, takes[kept_take(turn, len(takes))]) for turn, takes in zip(session.turns, made)]
    for match, report in zip(turns, result.turns):
        match.seed = report.seed
    here = model_entry(studio, job.takes)
    there = {**session.model, "decoder": session.model.get("decoder") or "eager"}  # before it was said: eager
    same = {name: all(there.get(k) == here.get(k) for k in keys)
            for name, keys in (("model", SAME_MODEL), ("device", SAME_DEVICE_AND_DTYPE), ("watermark", ["watermark"]))}  # fmt: skip
    notes = differences(session, here, same)
    return Reproduction(session, result, turns, same["model"], same["device"], same["watermark"], here, notes)


def reproduction_job(studio, session: Session, session_hash: str | None = None) -> Job:
    """The bundle's request, as the page or the API would make it: its turns' texts become the lines."""
    if not session.turns:
        raise InputError("This session has no generated turn, so there is nothing to reproduce.")
    if len(session.turns) > MAX_SCRIPT_TURNS:
        raise InputError(
            f"This session has {len(session.turns)} turns; at most {MAX_SCRIPT_TURNS} are generated at once."
        )
    lines = [Line(t.speaker, check_text(t.text, f"Turn {t.index + 1} of the session")) for t in session.turns]
    voices = [
        Voice(v.speaker, preset_id=v.preset) if v.preset else Voice(v.speaker, path=v.path, transcript=v.transcript)
        for v in session.voices
    ]
    for voice in voices:
        if voice.preset_id is not None and len(voice.preset_id) > MAX_PRESET_ID:  # no preset's id is: not quoted
            raise InputError(f"Speaker {voice.speaker}'s preset voice in this session is not one this app has.")
    context = tuple([getattr(c, key) for c in session.context] for key in ("path", "text", "speaker"))
    s = session.settings
    settings = (s["temperature"], s["topk"], s["max_seconds"], session.turns[0].seed)  # turn n: seed + n - 1
    try:
        job = studio.prepare(lines, voices, context, settings, session=session_hash, takes=s.get("takes") or 1)
    except InputError as e:
        raise InputError(f"This session cannot be generated again here: {e}") from None
    # Streamed in the bundle's chunks: the page and the API never ask for other than the default.
    return replace(job, first_chunk_frames=first_chunk_frames_of(s))


def kept_take(turn: SessionTurn, made: int) -> int:
    """Which take of the turn the bundle kept (its audio is the turn's): the same take is compared."""
    kept = next((i for i, take in enumerate(turn.takes) if take.kept and take.path), 0)
    return kept if kept < made else 0


def compare(turn: SessionTurn, regenerated: Path) -> TurnMatch:
    ours = sf.read(regenerated, dtype="int16")[0]
    theirs, problem = bundle_samples(turn)
    match = TurnMatch(turn.index + 1, turn.speaker, turn.text, turn.seed, turn.seed, False, None, len(ours),
                      0 if theirs is None else len(theirs), turn.partial, problem)  # fmt: skip
    if theirs is None:
        return match
    both = min(len(ours), len(theirs))
    difference = np.abs(ours[:both].astype(np.int32) - theirs[:both].astype(np.int32))
    match.max_abs_diff = int(difference.max()) if both else 0
    lengths_agree = len(theirs) <= len(ours) if turn.partial else len(theirs) == len(ours)
    match.matched = lengths_agree and match.max_abs_diff == 0
    return match


def bundle_samples(turn: SessionTurn) -> tuple[np.ndarray | None, str]:
    """The bundle's audio of a turn as 16-bit samples, or None and why. Its header is read first: the file
    comes from anyone, and only a 24 kHz mono turn of at most a minute is read."""
    if not turn.path:
        return None, "The session holds no audio of this turn."
    try:
        info = sf.info(turn.path)
        if info.samplerate != SAMPLE_RATE or info.channels != 1 or info.frames > MAX_TURN_SAMPLES:
            return None, f"The session's audio of this turn is not a 24 kHz mono clip of at most {MAX_SECONDS_LIMIT} s."
        return sf.read(turn.path, dtype="int16", frames=MAX_TURN_SAMPLES)[0], ""
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError):
        return None, "The session's audio of this turn cannot be read as a WAV file."


def differences(session: Session, here: dict, same: dict) -> list[str]:
    """A sentence for each way the bundle's setup differs from this app's."""
    there, notes = session.model, []
    if not same["model"]:
        notes.append(
            f"The session was made with {model_said(there)}; this app runs {model_said(here)}: another model "
            "gives other audio."
        )
    if not same["device"]:
        notes.append(
            f"The session was made on {said(there.get('device'))} in {said(there.get('dtype'))}"
            f"{decoder_said(there)}, this app runs on {here['device']} in {here['dtype']}{decoder_said(here)}: "
            "bit-identical audio is promised only on the same device and dtype, with the same decoder path."
        )
    if not same["watermark"]:
        notes.append(
            f"The session's watermark was {watermark_said(there.get('watermark'))}, this app's is "
            f"{watermark_said(here['watermark'])}: the watermark is part of every sample."
        )
    app, mine = session.app, app_entry()
    if (app.get("version"), app.get("commit")) != (mine["version"], mine["commit"]):
        notes.append(
            f"The session was made by CSM Studio {said(app.get('version'))} (commit {said(app.get('commit'))[:12]}), "
            f"this is {mine['version']} (commit {str(mine['commit'])[:12]}): changes between them may change the audio."
        )
    return notes


def app_entry() -> dict:
    from studio import __version__
    from studio.manifest import git_commit

    return {"version": __version__, "commit": git_commit()}


def said(value) -> str:
    """A value from the bundle (anyone's) in a message: text cut short, anything else as its repr."""
    return value[:60] if isinstance(value, str) else shown(value)


def model_said(entry: dict) -> str:
    parts = [said(entry.get("id"))]
    for key, label in (
        ("revision", "revision"),
        ("checkpoint_sha256", "checkpoint"),
        ("quantize", "quantized"),
        ("quantize_scheme", "quantization version"),
    ):
        if entry.get(key) is not None:
            parts.append(f"{label} {said(entry[key])[:12]}")
    return ", ".join(parts)


def decoder_said(entry: dict) -> str:
    """ ", its depth decoder compiled" where it was (csm.compiling), else nothing: eager is the default."""
    return ", its depth decoder compiled" if entry.get("decoder") == "compiled" else ""


def watermark_said(entry) -> str:
    if not isinstance(entry, dict) or entry.get("on") is not True:
        return "off" if isinstance(entry, dict) and entry.get("on") is False else "not said"
    message = entry.get("message")
    return f"on, message {message:#06x}" if isinstance(message, int) else f"on, message {said(message)}"
