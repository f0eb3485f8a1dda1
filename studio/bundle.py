"""A session as one .zip: manifest.json (studio/manifest.py) and the clips it names. Written, and read back.

A bundle comes from anyone, so reading it trusts nothing in it. Before a byte is extracted: the zip's
end record (how many entries, how large its directory), every entry's name (no absolute paths, drive
letters, "..", backslashes or links: see manifest.FILE_NAME), its declared size and compression ratio,
their total, and the manifest itself. Then only the files the manifest names are extracted, into a fresh
folder under the app's own output folder, each counted as it is written; anything wrong removes it again.
"""

from __future__ import annotations

import json
import shutil
import stat
import struct
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from studio.errors import InputError
from studio.manifest import FILE_NAME, check_manifest
from studio.outputs import new_output_dir

MANIFEST = "manifest.json"
MAX_TOTAL_BYTES = 100 << 20  # all its files, extracted: about 35 minutes of 24 kHz 16-bit audio
MAX_BUNDLE_BYTES = MAX_TOTAL_BYTES + (1 << 20)  # the .zip itself, its headers too (uploads stop at 50 MB anyway)
MAX_FILE_BYTES = 20 << 20  # one file: a 180 s clip as 24 kHz 32-bit float is 17 MB
MAX_MANIFEST_BYTES = 2 << 20
MAX_ENTRIES = 1_000  # a session's clips and takes, with room to spare
MAX_DIRECTORY_BYTES = 1 << 20  # the zip's central directory: 1,000 entries take about 150 KB
MAX_RATIO = 200  # declared size / compressed size of an entry over RATIO_FROM_BYTES: a speech WAV deflates ~1.1x
RATIO_FROM_BYTES = 1 << 20
END_RECORD = struct.Struct("<4s4H2LH")  # the zip's end-of-central-directory record
NOT_A_SESSION = "Open a .zip made by Download session."


@dataclass
class OpenedBundle:
    manifest: dict
    folder: Path  # a fresh folder under the app's output folder, holding only the files below
    files: dict[str, Path]  # each file the manifest names -> where it was extracted


def write_bundle(manifest: dict, files: dict[str, Path]) -> Path:
    """The session as a .zip in a fresh output folder. `files`: name in the bundle -> file here, exactly the
    files the manifest names. What could not be read back is refused here: a bundle written opens again."""
    named = check_manifest(manifest)
    if sorted(named) != sorted(files):
        raise ValueError(f"the files given ({sorted(files)}) are not those the manifest names ({sorted(named)})")
    manifest_bytes = json.dumps(manifest, indent=1, ensure_ascii=False, allow_nan=False).encode()
    total = len(manifest_bytes) + sum(Path(path).stat().st_size for path in files.values())
    if total > MAX_TOTAL_BYTES or len(manifest_bytes) > MAX_MANIFEST_BYTES or len(named) >= MAX_ENTRIES:
        raise InputError(
            f"This session holds {len(named):,} clips, {total / 2**20:.0f} MB; a session file holds at most "
            f"{MAX_ENTRIES - 1:,} clips, {MAX_TOTAL_BYTES >> 20} MB. Save a shorter part of it."
        )
    if any(Path(path).stat().st_size > MAX_FILE_BYTES for path in files.values()):
        raise InputError(f"A clip of this session is over {MAX_FILE_BYTES >> 20} MB, more than a session file holds.")
    path = new_output_dir() / f"csm-studio-session-{time.strftime('%Y%m%d-%H%M%S')}.zip"
    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr(MANIFEST, manifest_bytes, compress_type=zipfile.ZIP_DEFLATED)
        for name in named:  # WAVs hardly compress: stored as they are
            bundle.write(files[name], name, compress_type=zipfile.ZIP_STORED)
    return path


def read_bundle(path) -> OpenedBundle:
    """A bundle's manifest, checked, and its files extracted into a fresh folder under the app's output folder.
    Anything foreign, corrupt, newer, oversized or reaching outside is refused with a message (InputError)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"There is no session file to open. {NOT_A_SESSION}")
    if path.stat().st_size > MAX_BUNDLE_BYTES:
        raise InputError(f"This file is over {MAX_BUNDLE_BYTES >> 20} MB, larger than any session. {NOT_A_SESSION}")
    check_end_record(path)
    try:
        with zipfile.ZipFile(path) as bundle:
            entries = checked_entries(bundle)
            manifest = read_manifest(bundle, entries)
            named = check_manifest(manifest)
            missing = [name for name in named if name not in entries]
            if missing:
                raise InputError(
                    f"This session is incomplete: its manifest names {', '.join(missing[:3])}"
                    f"{' and more' if len(missing) > 3 else ''}, which the zip does not hold."
                )
            return OpenedBundle(manifest, *extract(bundle, [entries[name] for name in named]))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError):
        raise InputError(f"This session file is corrupt and cannot be read. {NOT_A_SESSION}") from None


def check_end_record(path: Path) -> None:
    """The entry count and directory size the zip declares, read before zipfile parses its directory
    (which would hold every entry in memory)."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - END_RECORD.size - (1 << 16)))  # the record and its comment: where zipfile looks
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < END_RECORD.size:
        raise InputError(f"This file is not a zip, so not a session. {NOT_A_SESSION}")
    _, _, _, _, entries, directory_bytes, _, _ = END_RECORD.unpack_from(tail, at)
    zip64 = b"PK\x06\x07" in tail[max(0, at - 20) : at]  # a ZIP64 locator: zipfile would read its counts instead
    if zip64 or entries == 0xFFFF or directory_bytes == 0xFFFFFFFF:
        raise InputError(f"This zip is in the ZIP64 format, which sessions never need. {NOT_A_SESSION}")
    if entries > MAX_ENTRIES or directory_bytes > MAX_DIRECTORY_BYTES:
        raise InputError(f"This zip holds {entries:,} files; a session has at most {MAX_ENTRIES:,}. {NOT_A_SESSION}")


def checked_entries(bundle: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Every entry's name, kind and size, from the directory alone; directories are left out."""
    infos = bundle.infolist()
    if len(infos) > MAX_ENTRIES:  # the end record said fewer: it lied
        raise InputError(f"This zip holds {len(infos):,} files; a session has at most {MAX_ENTRIES:,}. {NOT_A_SESSION}")
    entries, seen, total = {}, set(), 0
    for info in infos:
        name = info.filename[:-1] if info.filename.endswith("/") else info.filename
        if not FILE_NAME.match(name):
            raise InputError(f"This zip holds a file named {name[:60]!r}, which no session has. {NOT_A_SESSION}")
        if name.lower() in seen:
            raise InputError(f"This zip holds {name!r} twice. {NOT_A_SESSION}")
        seen.add(name.lower())
        if stat.S_ISLNK(info.external_attr >> 16):
            raise InputError(f"This zip holds a link ({name}), which no session has. {NOT_A_SESSION}")
        if info.flag_bits & 0x1:
            raise InputError(f"This zip is encrypted; sessions never are. {NOT_A_SESSION}")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise InputError(f"This zip compresses {name} in a way sessions never do. {NOT_A_SESSION}")
        total += info.file_size
        oversized = info.file_size > (MAX_MANIFEST_BYTES if name == MANIFEST else MAX_FILE_BYTES)
        bomb = info.file_size > RATIO_FROM_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1)
        if oversized or bomb or total > MAX_TOTAL_BYTES:
            raise InputError(
                f"This zip unpacks to more than a session holds ({name} declares {info.file_size / 2**20:,.0f} MB"
                f"{f' from {info.compress_size / 2**20:,.1f} MB' if bomb else ''}; a session holds at most "
                f"{MAX_TOTAL_BYTES >> 20} MB). {NOT_A_SESSION}"
            )
        if not info.is_dir():
            entries[name] = info
    return entries


def read_manifest(bundle: zipfile.ZipFile, entries: dict[str, zipfile.ZipInfo]) -> dict:
    if MANIFEST not in entries:
        raise InputError(f"This zip is not a CSM Studio session: it has no {MANIFEST}. {NOT_A_SESSION}")
    data = read_capped(bundle, entries[MANIFEST])
    try:  # NaN and Infinity are not JSON: refused, as is nesting deep enough to exhaust the parser
        return json.loads(data.decode("utf-8"), parse_constant=refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InputError(f"This session's {MANIFEST} is not valid JSON. {NOT_A_SESSION}") from None


def refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def read_capped(bundle: zipfile.ZipFile, info: zipfile.ZipInfo, into=None) -> bytes:
    """An entry's bytes (or, with `into`, written there), never more than it declared."""
    chunks, count = [], 0
    with bundle.open(info) as source:
        while block := source.read(1 << 16):
            count += len(block)
            if count > info.file_size:  # zipfile stops at the declared size itself; this does not rely on it
                raise InputError(f"This zip's {info.filename} is larger than it declares. {NOT_A_SESSION}")
            if into is None:
                chunks.append(block)
            else:
                into.write(block)
    return b"".join(chunks)


def extract(bundle: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> tuple[Path, dict[str, Path]]:
    """Only these entries (names already checked), into a fresh folder; on any failure the folder goes."""
    folder = new_output_dir()
    root, files = folder.resolve(), {}
    try:
        for info in infos:
            target = (folder / info.filename).resolve()
            if not target.is_relative_to(root):  # FILE_NAME allows none such: a second lock on the same door
                raise InputError(f"This zip's {info.filename} points outside the session. {NOT_A_SESSION}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as out:
                read_capped(bundle, info, into=out)
            files[info.filename] = target
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder, files
