"""Download session and Open session: a run (and what the page adds to it) as a bundle, and a bundle as plain data.

A run's manifest and files are made once, when it finishes (`session_draft`: small, it holds paths, not
audio); the page adds what only it knows when the user downloads (`draft_bundle(draft, extra)`). Opening a
bundle (`open_session`) trusts nothing in it: read_bundle checks the zip and the manifest, and what comes
back here is only the fields the page restores, each of a known type.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from pathlib import Path

from studio.bundle import read_bundle, write_bundle
from studio.errors import InputError
from studio.jobs import TurnReport
from studio.manifest import manifest_for
from studio.outputs import OUTPUT_DIR

EXTRA_KEYS = ("script_text", "ratings", "takes", "page")
SETTINGS = ("temperature", "topk", "max_seconds", "seed", "takes", "first_chunk_frames")  # a Session's, as said
REPORT_FIELDS = {f.name for f in fields(TurnReport)} - {"index", "speaker", "text", "seed", "voice"}
# Bundles made before the first streamed chunk became one frame say no first_chunk_frames: theirs was 2.
# Each chunk was watermarked on its own (and Mimi rounds a little otherwise per chunk length), so their
# turns come out the same only when generated again in the same chunks: to reproduce, or to redo one.
LEGACY_FIRST_CHUNK_FRAMES = 2


def first_chunk_frames_of(settings: dict) -> int:
    """The first streamed chunk's frames a session's turns were made with (a Session's `settings`)."""
    return settings.get("first_chunk_frames") or LEGACY_FIRST_CHUNK_FRAMES


@dataclass
class Draft:
    """A finished run's manifest and its files (name in the bundle -> path here), before the page's additions."""

    manifest: dict
    files: dict[str, Path]


def session_draft(studio, job, result) -> Draft:
    """What Download session will hold of a run; make it when the run ends (its clips are written now)."""
    return Draft(*manifest_for(job, result, studio))


def draft_bundle(draft: Draft, extra: dict | None = None) -> Path:
    """The .zip for Download session, with the page's additions (see `with_extra`)."""
    return write_bundle(*with_extra(draft.manifest, draft.files, extra))


def session_bundle(studio, job, result, extra: dict | None = None) -> Path:
    """A run as a .zip, in one call: `draft_bundle(session_draft(studio, job, result), extra)`."""
    return draft_bundle(session_draft(studio, job, result), extra)


def with_extra(manifest: dict, files: dict[str, Path], extra: dict | None) -> tuple[dict, dict[str, Path]]:
    """The manifest with what only the page knows, in manifest version 1's own fields (all optional):

    script_text  the script box as typed                      -> manifest["script_text"]
    ratings      per turn, in order: {"verdict": "good"|"bad", "note": str} or None -> turns[i]["rating"]
    takes        per turn, in order: None (keep the run's one take) or a list of
                 {"path": a file this app wrote, "seed": int, "kept": bool, "rating": a rating or None,
                  "ended_by_model": bool or None (used where the run has no report of that file: a redone take)}
                                                              -> turns[i]["takes"], their files in takes/
    page         any JSON object the page wants back on Open session (its voice cards, ...) -> manifest["page"]

    Each value is checked with the rest of the manifest by write_bundle (check_manifest).
    """
    if not extra:
        return manifest, files
    if not isinstance(extra, dict) or set(extra) - set(EXTRA_KEYS):
        raise ValueError(f"extra takes the keys {', '.join(EXTRA_KEYS)}, got {extra!r:.200}")
    manifest, files = copy.deepcopy(manifest), dict(files)
    for key in ("script_text", "page"):
        if extra.get(key) is not None:
            manifest[key] = extra[key]
    turns = manifest["turns"]
    for i, rating in enumerate(per_turn(extra.get("ratings"), turns, "ratings")):
        if rating is not None:
            turns[i]["rating"] = rating
    for i, takes in enumerate(per_turn(extra.get("takes"), turns, "takes")):
        if takes is not None:
            turns[i]["takes"] = take_entries(i, takes, turns[i]["takes"], files)
    return manifest, files


def per_turn(values, turns: list, key: str) -> list:
    if values is None:
        return []
    if not isinstance(values, (list, tuple)) or len(values) > len(turns):
        raise InputError(f"The session's {key} must be a list of at most one entry per turn ({len(turns)}).")
    return list(values)


def take_entries(index: int, takes, made: list[dict], files: dict[str, Path]) -> list[dict]:
    """A turn's takes as the page lists them; a take's file must be one this app wrote (its output folder),
    so a bundle never carries another file of the server's."""
    if not isinstance(takes, (list, tuple)) or not all(isinstance(take, dict) for take in takes):
        raise InputError(f"Turn {index + 1}'s takes must be a list of takes, each a dict.")
    if sum(bool(take.get("kept")) for take in takes) > 1:
        raise InputError(f"Turn {index + 1} has more than one kept take: keep one.")
    by_path = {files[take["file"]].resolve(): take for take in made if take.get("file") in files}
    for take in made:  # the run's own files: named again below if a take still uses them
        files.pop(take.get("file"), None)
    entries, outputs = [], OUTPUT_DIR.resolve()
    for k, take in enumerate(takes):
        path = Path(str(take.get("path") or "")).resolve()
        if not path.is_file() or not path.is_relative_to(outputs):
            raise InputError(f"Take {k + 1} of turn {index + 1} is not an audio file this app made: generate it again.")
        ran = by_path.get(path, {})
        name = ran.get("file") or f"takes/turn-{index + 1:02d}-take-{k + 1:02d}.wav"
        files[name] = path
        entry = {"seed": take.get("seed"), "file": name, "kept": bool(take.get("kept")), "rating": take.get("rating")}
        ended = take.get("ended_by_model")  # a redone take's file is not the run's: the page says how it ended
        report = ran["report"] if "report" in ran else {"ended_by_model": ended} if isinstance(ended, bool) else None
        entries.append({**entry, "report": report} if report is not None else entry)
    return entries


# -- Open session --------------------------------------------------------------------------------------


@dataclass
class SessionVoice:
    """A speaker prompt: a preset (its id, and name when saved), or a clip of the bundle and its transcript."""

    speaker: int
    preset: str | None
    name: str | None
    path: str | None  # the clip, extracted: the very samples the model heard (24 kHz, 32-bit float WAV)
    transcript: str | None


@dataclass
class SessionClip:
    """A turn of the conversation so far: its clip (extracted), transcript and speaker."""

    speaker: int
    text: str
    path: str


@dataclass
class SessionTake:
    seed: int
    path: str | None
    kept: bool
    rating: dict | None  # {"verdict": "good" | "bad", "note": str}
    ended_by_model: bool | None = None  # as its own report says (None: it says nothing)


@dataclass
class SessionTurn:
    """A generated turn: its kept take's audio (else its first with a file), what was said, and how it was made."""

    index: int  # 0-based; the page shows index + 1
    speaker: int
    text: str
    seed: int
    voice: str | None
    path: str | None
    rating: dict | None
    takes: list[SessionTake]
    report: dict  # what the run measured of it (frames, seconds, ended_by_model, timings, ...): numbers and flags
    partial: bool  # cut short by Stop: its audio ends mid-turn


@dataclass
class Session:
    """An opened bundle, as plain data for the page to restore itself (paths as str, inside `folder`)."""

    folder: str  # where its files were extracted (a fresh output folder, deleted with the other outputs)
    model: dict  # id, revision, checkpoint_sha256, description, device, dtype, quantize, watermark
    app: dict  # name, version, commit
    created: str | None
    voices: list[SessionVoice]
    context: list[SessionClip]
    script: list[dict]  # {"speaker", "text"} per line
    script_text: str  # as typed when the page saved it, else the lines as "[speaker] text"
    settings: dict  # SETTINGS: temperature, topk, max_seconds, seed (the first turn's), ...; None if not said
    turns: list[SessionTurn]
    timings: dict  # elapsed_s, seconds
    status: dict  # stopped, error, warnings
    page: dict = field(default_factory=dict)  # what the page saved of itself: check it as any input
    manifest: dict = field(default_factory=dict, repr=False)  # the whole checked manifest


def open_session(path) -> Session:
    """A bundle from Download session, opened: InputError with what to do if it is foreign, corrupt,
    newer, oversized or reaches outside its folder."""
    opened = read_bundle(path)
    m, files = opened.manifest, {name: str(p) for name, p in opened.files.items()}
    voices = [SessionVoice(v["speaker"], v.get("preset"), text_or_none(v.get("name")), files.get(v.get("file")),
                           text_or_none(v.get("transcript"))) for v in m["voices"]]  # fmt: skip
    context = [SessionClip(c["speaker"], c["text"], files[c["file"]]) for c in m["context"]]
    script = [{"speaker": line["speaker"], "text": line["text"]} for line in m["script"]]
    script_text = m.get("script_text") or "\n".join(f"[{line['speaker']}] {line['text']}" for line in script)
    return Session(
        folder=str(opened.folder),
        model=plain(m["model"]),
        app=plain(m.get("app")),
        created=text_or_none(m.get("created")),
        voices=voices,
        context=context,
        script=script,
        script_text=script_text,
        settings={key: m["settings"].get(key) for key in SETTINGS},
        turns=[session_turn(i, turn, files) for i, turn in enumerate(m["turns"])],
        timings=plain(m.get("timings")),
        status=plain(m.get("status")),
        page=m.get("page") or {},
        manifest=m,
    )


def session_turn(index: int, turn: dict, files: dict[str, str]) -> SessionTurn:
    takes = [
        SessionTake(t["seed"], files.get(t.get("file")), t["kept"], rating_of(t.get("rating")), ended_of(t))
        for t in turn["takes"]
    ]
    chosen = next((t for t in takes if t.kept and t.path), None) or next((t for t in takes if t.path), None)
    raw = next((t for t in turn["takes"] if files.get(t.get("file")) == (chosen and chosen.path)), {})
    report = {key: value for key, value in plain(raw.get("report")).items() if key in REPORT_FIELDS}
    return SessionTurn(index, turn["speaker"], turn["text"], turn["seed"], text_or_none(turn.get("voice")),
                       chosen and chosen.path, rating_of(turn.get("rating")), takes, report,
                       report.get("stopped") is True)  # fmt: skip


def ended_of(take: dict) -> bool | None:
    """Whether a take's own report says the model ended it (each take of a turn ends on its own)."""
    ended = plain(take.get("report")).get("ended_by_model")
    return ended if isinstance(ended, bool) else None


def text_or_none(value) -> str | None:
    return value if isinstance(value, str) else None


def rating_of(value) -> dict | None:
    """A rating as check_manifest let it through, without any other field."""
    return {"verdict": value["verdict"], "note": value.get("note") or ""} if isinstance(value, dict) else None


def plain(value, nested: bool = True) -> dict:
    """An object of the manifest that check_manifest leaves unchecked: only its fields that are text, numbers,
    flags or lists of text, and (one level down only) objects of those."""
    if not isinstance(value, dict):
        return {}
    kept = {}
    for key, item in value.items():
        if isinstance(item, (str, int, float, bool)) or item is None:
            kept[key] = item
        elif isinstance(item, list) and all(isinstance(each, str) for each in item):
            kept[key] = list(item)
        elif isinstance(item, dict) and nested:
            kept[key] = plain(item, nested=False)
    return kept
