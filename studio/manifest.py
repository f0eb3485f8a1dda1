"""A session's manifest.json (version 1): what a bundle holds, checked field by field, and built from a run.

Everything needed to generate a session again: the model (id, and its Hub revision or its files' content
hash), device and dtype, the app's version, the voices (a preset id, or a clip in the bundle), the
conversation so far, the script, the settings, each turn's seed and takes (seed, file, kept, rating),
and the timings; optionally the script as typed (script_text) and what the page keeps of itself (page, an
object). Fields not named here are kept as they are: a later version 1 may add some.
"""

from __future__ import annotations

import hashlib
import math
import re
import subprocess
import time
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

from csm.audio import save_wav
from csm.quantize import quantize_scheme
from csm.generator import CHUNK_FRAMES
from studio import __version__
from studio.errors import InputError
from studio.inputs import MAX_SCRIPT_CHARS, MAX_SPEAKER_ID, SAMPLE_RATE, TURN_GAP_S, shown
from studio.outputs import new_output_dir

FORMAT = "csm-studio-session"
VERSION = 1
MAX_ITEMS = 1_000  # turns, takes per turn, clips: far more than one session makes
MAX_CHARS = 10_000  # any one string: a transcript is at most 4,000
SEED_RANGE = (0, 2**63 - 1)  # any seed torch takes: turn n of a script uses seed + n - 1, past 2**32 - 1
VERDICTS = ("good", "bad")
# A file the manifest names, relative to the bundle: folders and names of letters, digits, ".", "_" and "-",
# not starting with a dot (no "..", no hidden files), at most 4 levels; nothing else can reach outside.
FILE_NAME = re.compile(r"^(?:[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}/){0,3}[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$")
ROOT = Path(__file__).resolve().parent.parent


class Fields:
    """Reads one JSON object's fields, each checked, with messages naming where it is in manifest.json."""

    def __init__(self, value, where: str):
        if not isinstance(value, dict):
            raise refused(where, "an object", value)
        self.value, self.where = value, where

    def get(self, key: str, check, optional: bool = False):
        where = f"{self.where}.{key}" if self.where else key
        if key not in self.value:
            if optional:
                return None
            raise InputError(f"manifest.json has no {where}: the bundle is incomplete.")
        value = self.value[key]
        return None if value is None and optional else check(value, where)


def refused(where: str, what: str, value) -> InputError:
    return InputError(f"manifest.json: {where or 'the manifest'} must be {what}, got {shown(value)}.")


def text(value, where: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_CHARS:
        raise refused(where, f"text of at most {MAX_CHARS:,} characters", value)
    return value


def script_text(value, where: str) -> str:
    """The script as typed on the page: up to a full script's length, longer than any one string."""
    if not isinstance(value, str) or len(value) > MAX_SCRIPT_CHARS:
        raise refused(where, f"text of at most {MAX_SCRIPT_CHARS:,} characters", value)
    return value


def whole(low: int, high: int):
    def check(value, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise refused(where, f"a whole number from {low} to {high}", value)
        return value

    return check


speaker, seed = whole(0, MAX_SPEAKER_ID), whole(*SEED_RANGE)


def number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise refused(where, "a number", value)
    return value


def flag(value, where: str) -> bool:
    if not isinstance(value, bool):
        raise refused(where, "true or false", value)
    return value


def file_name(value, where: str) -> str:
    if not isinstance(value, str) or not FILE_NAME.match(value):
        raise refused(where, "a file name inside the bundle (like turns/turn-01.wav)", value)
    return value


def items(check):
    def each(value, where: str) -> list:
        if not isinstance(value, list) or len(value) > MAX_ITEMS:
            raise refused(where, f"a list of at most {MAX_ITEMS:,}", value)
        return [check(item, f"{where}[{i}]") for i, item in enumerate(value)]

    return each


def choice(*allowed: str):
    def check(value, where: str) -> str:
        if value not in allowed:
            raise refused(where, " or ".join(allowed), value)
        return value

    return check


def rating(value, where: str) -> dict:
    """A listener's verdict on a turn or a take: good or bad, and a note."""
    f = Fields(value, where)
    return {"verdict": f.get("verdict", choice(*VERDICTS)), "note": f.get("note", text, optional=True) or ""}


def take(value, where: str) -> dict:
    f = Fields(value, where)
    return {"seed": f.get("seed", seed), "file": f.get("file", file_name, optional=True), "kept": f.get("kept", flag),
            "rating": f.get("rating", rating, optional=True)}  # fmt: skip


def turn(value, where: str) -> dict:
    f = Fields(value, where)
    return {"speaker": f.get("speaker", speaker), "text": f.get("text", text), "seed": f.get("seed", seed),
            "takes": f.get("takes", items(take)), "rating": f.get("rating", rating, optional=True)}  # fmt: skip


def line(value, where: str) -> dict:
    f = Fields(value, where)
    return {"speaker": f.get("speaker", speaker), "text": f.get("text", text)}


def voice(value, where: str) -> dict:
    """A speaker prompt: a preset's id, or a clip in the bundle and its transcript."""
    f = Fields(value, where)
    preset, clip = f.get("preset", text, optional=True), f.get("file", file_name, optional=True)
    if (preset is None) == (clip is None):
        raise InputError(
            f"manifest.json: {where} must name either a preset or a file, not {'both' if clip else 'neither'}."
        )
    if clip is not None:
        f.get("transcript", text)
    return {"speaker": f.get("speaker", speaker), "preset": preset, "file": clip}


def clip(value, where: str) -> dict:
    """A turn of the conversation so far: its clip in the bundle, transcript and speaker."""
    f = Fields(value, where)
    return {"speaker": f.get("speaker", speaker), "text": f.get("text", text), "file": f.get("file", file_name)}


def settings(value, where: str) -> dict:
    f = Fields(value, where)
    return {"temperature": f.get("temperature", number), "topk": f.get("topk", whole(1, 1 << 20)),
            "max_seconds": f.get("max_seconds", number), "seed": f.get("seed", seed, optional=True),
            "takes": f.get("takes", whole(1, 4), optional=True) or 1,
            "first_chunk_frames": f.get("first_chunk_frames", whole(1, CHUNK_FRAMES), optional=True)}  # fmt: skip


def model(value, where: str) -> dict:
    f = Fields(value, where)
    for key in ("revision", "checkpoint_sha256", "device", "dtype", "quantize", "decoder"):
        f.get(key, text, optional=True)
    f.get("quantize_scheme", whole(1, 1000), optional=True)
    return {"id": f.get("id", text)}


def check_manifest(manifest) -> list[str]:
    """Refuse a manifest that is not a version-1 session's, saying why; returns the files it names, in order."""
    top = Fields(manifest, "")
    if manifest.get("format") != FORMAT:
        raise InputError(
            f"This is not a CSM Studio session: its manifest.json says format {shown(manifest.get('format'))}, "
            f"not {FORMAT!r}. Open a .zip made by Download session."
        )
    version = manifest.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        raise InputError(
            f"This session was saved by a newer CSM Studio (session format version {version}); this app reads "
            f"version {VERSION}. Open it with a newer version of the app."
        )
    if version != VERSION or isinstance(version, bool):
        raise refused("version", f"{VERSION}", version)
    top.get("model", model)
    top.get("settings", settings)
    top.get("script", items(line))
    top.get("script_text", script_text, optional=True)  # optional fields of version 1: the page's own
    top.get("page", lambda value, where: Fields(value, where).value, optional=True)
    voices, context, turns = (
        top.get("voices", items(voice)),
        top.get("context", items(clip)),
        top.get("turns", items(turn)),
    )
    named = [v["file"] for v in voices if v["file"]] + [c["file"] for c in context]
    named += [t["file"] for each in turns for t in each["takes"] if t["file"]]
    if len(set(named)) != len(named):
        raise InputError("manifest.json names the same file twice: each clip has its own file.")
    return named


# -- building one from a run ----------------------------------------------------------------------


def manifest_for(job, result, studio) -> tuple[dict, dict[str, Path]]:
    """A finished (or stopped) request's manifest, and the files it names (name in the bundle -> path here),
    ready for `write_bundle(*manifest_for(job, result, studio))`.

    `job`: the studio.jobs.Job that ran; `result`: its studio.report.Result; `studio`: the Studio. Own voice
    clips and the conversation so far are written as 32-bit float WAVs, the very samples the model heard.
    """
    folder, files, voices, context = new_output_dir(), {}, [], []
    presets = {preset.short_name: preset for preset in studio.presets.all()}
    for each in job.context:
        segment = each.segment
        preset = presets.get(job.voices.get(segment.speaker)) if each.is_prompt else None
        if preset is not None:
            voices.append({"speaker": segment.speaker, "preset": preset.id, "name": preset.name,
                           "transcript": segment.text})  # fmt: skip
            continue
        name = f"voices/speaker-{segment.speaker}.wav" if each.is_prompt else f"context/turn-{len(context) + 1:02d}.wav"
        files[name] = folder / name.replace("/", "-")
        save_wav(files[name], segment.audio, SAMPLE_RATE, subtype="FLOAT")
        entry = {"speaker": segment.speaker, "file": name, "transcript" if each.is_prompt else "text": segment.text}
        (voices if each.is_prompt else context).append(entry)
    turns = []
    for i, report in enumerate(result.turns):
        measured = {k: v for k, v in asdict(report).items() if k not in ("index", "speaker", "text", "seed", "voice")}
        takes = []
        for t, path in enumerate(result.take_paths[i] if result.take_paths else [result.turn_paths[i]]):
            files[f"turns/{path.name}"] = path
            # Every take of a pass shares the turn's seed: take t is row t of the batch that seed drew.
            takes.append({"seed": report.seed, "file": f"turns/{path.name}", "kept": t == 0, "rating": None,
                          "report": measured if t == 0 else report.takes[t]})  # fmt: skip
        turns.append({"speaker": report.speaker, "text": report.text, "seed": report.seed, "voice": report.voice,
                      "takes": takes, "rating": None})  # fmt: skip
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "app": {"name": "csm-studio", "version": __version__, "commit": git_commit()},
        "model": model_entry(studio, job.takes),
        "settings": {
            "temperature": job.settings.temperature,
            "topk": job.settings.topk,
            "max_seconds": job.settings.max_seconds,
            "seed": job.seed,
            "takes": job.takes,  # a pass of N takes samples each row otherwise than a pass of one
            "first_chunk_frames": job.first_chunk_frames,  # the chunks each was watermarked in
        },  # fmt: skip
        "script": [{"speaker": line.speaker, "text": line.text} for line in job.lines],
        "voices": voices,
        "context": context,
        "turns": turns,
        "gap_seconds": TURN_GAP_S,
        "timings": {"elapsed_s": round(result.elapsed_s, 3), "seconds": round(result.seconds, 3)},
        "status": {"stopped": result.stopped, "error": result.error, "warnings": list(result.warnings)},
    }
    return manifest, files


def model_entry(studio, takes: int = 1) -> dict:
    """Which model made it, exactly: a Hub repo's revision, or a local folder's content hash (never its path)."""
    generator, repo = studio.generator, studio.model_key.get("repo_id", studio.model_name)
    local = Path(repo).expanduser().is_dir()
    return {
        "id": studio.shown_model_name,
        "revision": None if local else hub_revision(repo),
        "checkpoint_sha256": folder_sha256(repo) if local else None,
        "description": generator.description,
        "device": str(generator.device),
        "dtype": str(generator.model.dtype).removeprefix("torch."),
        "quantize": studio.quantize,
        "quantize_scheme": quantize_scheme(studio.quantize),  # what the quantization covered then
        "decoder": decoder_path(generator.model, takes),
        "watermark": {"on": bool(studio.watermark), "message": studio.watermark_message},
    }


def decoder_path(model, takes: int) -> str:
    """How a run of `takes` takes ran the depth decoder's steps: "compiled" (csm.compiling: one take only) or
    "eager"; they round differently. The state at the end of the run: a fallback midway is not told apart."""
    from csm.compiling import decoder_is_compiled

    return "compiled" if takes == 1 and decoder_is_compiled(model) else "eager"


def hub_revision(repo_id: str) -> str | None:
    """The commit of the cached snapshot the model was loaded from (what `main` pointed to), if any."""
    from huggingface_hub import try_to_load_from_cache

    try:
        path = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # not a repo id after all, an unreadable cache: the id alone is said
        return None
    return Path(path).parent.name if isinstance(path, str) and Path(path).parent.parent.name == "snapshots" else None


def folder_sha256(folder) -> str:
    """SHA-256 over a checkpoint folder's files (names, sizes, contents; hidden ones left out), computed once
    per process for the same files: a multi-GB checkpoint takes some seconds."""
    root = Path(folder).expanduser().resolve()
    listing = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            listing.append((relative.as_posix(), path.stat().st_size, path.stat().st_mtime_ns))
    return _sha256_of(str(root), tuple(listing))


@lru_cache(maxsize=8)
def _sha256_of(root: str, listing: tuple) -> str:
    digest = hashlib.sha256()
    for relative, size, _ in listing:
        digest.update(f"{relative}\0{size}\0".encode())
        with open(Path(root) / relative, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The app's commit when it runs from a git checkout (a Space does), else None."""
    try:
        run = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = run.stdout.strip()
    return commit if run.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None
