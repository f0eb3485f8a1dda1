"""Session bundles (studio/bundle.py, studio/manifest.py): a round trip, and every kind of hostile zip refused
before it can make the server read or write outside its own folders."""

from __future__ import annotations

import json
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from csm.generator import FIRST_CHUNK_FRAMES
from studio import bundle, manifest
from studio.bundle import read_bundle, write_bundle
from studio.errors import InputError
from studio.outputs import OUTPUT_DIR

RATE = 24_000


def wav_bytes(seconds: float, seed: int = 0) -> bytes:
    import io

    buffer = io.BytesIO()
    noise = 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * RATE)).astype(np.float32)
    sf.write(buffer, noise, RATE, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def session(**changes) -> dict:
    """A version-1 manifest: a preset voice, an own voice, one earlier turn, one generated turn with a take."""
    value = {
        "format": "csm-studio-session",
        "version": 1,
        "app": {"name": "csm-studio", "version": "0.1.0", "commit": None},
        "model": {"id": "sesame/csm-1b", "revision": "0" * 40, "device": "cuda", "dtype": "bfloat16"},
        "settings": {"temperature": 0.9, "topk": 50, "max_seconds": 10, "seed": 42},
        "script": [{"speaker": 1, "text": "Hi there."}],
        "voices": [
            {"speaker": 0, "preset": "river"},
            {"speaker": 1, "file": "voices/speaker-1.wav", "transcript": "My own voice."},
        ],
        "context": [{"speaker": 0, "text": "Hello.", "file": "context/turn-01.wav"}],
        "turns": [
            {
                "speaker": 1,
                "text": "Hi there.",
                "seed": 42,
                "takes": [{"seed": 42, "file": "turns/turn-01.wav", "kept": True, "rating": None}],
                "rating": {"verdict": "good", "note": "natural"},
            }
        ],
    }
    return {**value, **changes}


FILES = {"voices/speaker-1.wav": 1.0, "context/turn-01.wav": 0.5, "turns/turn-01.wav": 0.7}


def zip_of(path: Path, entries: dict[str, bytes], method=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


def good_entries(**manifest_changes) -> dict[str, bytes]:
    files = {name: wav_bytes(seconds, i) for i, (name, seconds) in enumerate(FILES.items())}
    return {"manifest.json": json.dumps(session(**manifest_changes)).encode(), **files}


def patch_directory(path: Path, name: str, offset: int, fmt: str, value) -> Path:
    """Change one field of `name`'s central directory record (what zipfile, and the checks, read first)."""
    data = bytearray(path.read_bytes())
    at = 0
    while (at := data.find(b"PK\x01\x02", at)) >= 0:
        (name_length,) = struct.unpack_from("<H", data, at + 28)
        if data[at + 46 : at + 46 + name_length] == name.encode():
            struct.pack_into(fmt, data, at + offset, value)
            path.write_bytes(bytes(data))
            return path
        at += 4
    raise AssertionError(f"{name} is not in {path}")


class Outputs:
    """Where read_bundle extracts, for the hostile cases: a folder of its own, to see what is made and left."""

    def __init__(self, folder: Path):
        self.folder, self.made = folder, []

    def new_output_dir(self) -> Path:
        self.made.append(self.folder / f"run-{len(self.made)}")
        self.made[-1].mkdir()
        return self.made[-1]


@pytest.fixture
def outputs(tmp_path, monkeypatch) -> Outputs:
    (tmp_path / "outputs").mkdir()
    place = Outputs(tmp_path / "outputs")
    monkeypatch.setattr(bundle, "new_output_dir", place.new_output_dir)
    return place


def refused(path, message: str, outputs: Outputs) -> str:
    with pytest.raises(InputError) as caught:
        read_bundle(path)
    assert message in str(caught.value)
    assert list(outputs.folder.iterdir()) == [], "a refused bundle left files behind"
    return str(caught.value)


# -- a round trip ----------------------------------------------------------------------------------


def test_a_written_bundle_opens_again_with_the_same_manifest_and_files(tmp_path):
    sources = {}
    for i, (name, seconds) in enumerate(FILES.items()):
        sources[name] = tmp_path / f"source-{i}.wav"
        sources[name].write_bytes(wav_bytes(seconds, i))
    written = write_bundle(session(), sources)
    assert written.suffix == ".zip" and written.parent.parent == OUTPUT_DIR
    opened, again = read_bundle(written), read_bundle(written)
    assert opened.manifest == session()
    assert opened.folder.parent == OUTPUT_DIR and opened.folder != again.folder  # a fresh folder each time
    assert sorted(opened.files) == sorted(FILES)
    for name, path in opened.files.items():
        assert path.is_relative_to(opened.folder) and path.read_bytes() == sources[name].read_bytes()
    assert sorted(p.relative_to(opened.folder).as_posix() for p in opened.folder.rglob("*.wav")) == sorted(FILES)


def test_write_bundle_takes_exactly_the_files_its_manifest_names(tmp_path):
    clip = tmp_path / "clip.wav"
    clip.write_bytes(wav_bytes(0.1))
    with pytest.raises(ValueError, match="not those the manifest names"):
        write_bundle(session(), {"voices/speaker-1.wav": clip})
    with pytest.raises(InputError, match="turns\\[0\\].seed must be a whole number"):
        write_bundle(session(turns=[{"speaker": 1, "text": "Hi", "seed": -3, "takes": []}]), {})


# -- foreign, corrupt, newer -------------------------------------------------------------------------


def test_a_file_that_is_not_a_zip_or_is_cut_short_is_refused(tmp_path, outputs):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(np.random.default_rng(1).bytes(5000))
    refused(junk, "This file is not a zip, so not a session", outputs)
    whole = zip_of(tmp_path / "whole.zip", good_entries()).read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(whole[: len(whole) // 2])
    refused(cut, "not a zip", outputs)
    refused(tmp_path / "absent.zip", "There is no session file to open", outputs)


def test_a_zip_without_a_manifest_or_of_another_format_is_not_a_session(tmp_path, outputs):
    refused(zip_of(tmp_path / "photos.zip", {"cat.jpg": b"\xff\xd8"}), "it has no manifest.json", outputs)
    refused(
        zip_of(tmp_path / "other.zip", good_entries(format="other-app")), "This is not a CSM Studio session", outputs
    )
    listed = {**good_entries(), "manifest.json": b"[1, 2]"}
    refused(zip_of(tmp_path / "list.zip", listed), "manifest.json: the manifest must be an object, got [1, 2]", outputs)


@pytest.mark.parametrize(
    "version, message",
    [
        (2, "saved by a newer CSM Studio (session format version 2); this app reads version 1"),
        (0, "version must be 1, got 0"),
        ("1", "version must be 1, got '1'"),
        (True, "version must be 1, got True"),
    ],
)
def test_a_manifest_of_another_version_is_refused(tmp_path, outputs, version, message):
    refused(zip_of(tmp_path / "v.zip", good_entries(version=version)), message, outputs)


@pytest.mark.parametrize(
    "manifest_text",
    [b"{not json", b'{"format": "csm-studio-session", "version": NaN}', b"[" * 100_000, b"\xff\xfe{}"],
    ids=["syntax", "NaN", "nested 100,000 deep", "not UTF-8"],
)
def test_a_manifest_that_is_not_json_is_refused(tmp_path, outputs, manifest_text):
    entries = {**good_entries(), "manifest.json": manifest_text}
    refused(zip_of(tmp_path / "bad.zip", entries), "manifest.json is not valid JSON", outputs)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"turns": "none"}, "turns must be a list of at most 1,000"),
        ({"settings": {"temperature": 0.9, "topk": 50, "max_seconds": 10, "seed": 1.5}}, "settings.seed must be"),
        *[
            (
                {"settings": {"temperature": 0.9, "topk": 50, "max_seconds": 10, "first_chunk_frames": bad}},
                f"settings.first_chunk_frames must be a whole number from 1 to 8, got {bad!r}",
            )
            for bad in (0, 9, "2", 1.5)
        ],
        ({"script": [{"speaker": 12, "text": "Hi"}]}, "script[0].speaker must be a whole number from 0 to 9, got 12"),
        ({"voices": [{"speaker": 0, "preset": "river", "file": "v.wav", "transcript": "x"}]}, "not both"),
        ({"voices": [{"speaker": 0, "file": "v.wav"}]}, "manifest.json has no voices[0].transcript"),
        ({"model": {"revision": "abc"}}, "manifest.json has no model.id"),
        ({"model": {"id": "x", "quantize_scheme": "2"}}, "model.quantize_scheme must be a whole number from 1 to"),
        ({"page": ["cards"]}, "manifest.json: page must be an object, got ['cards']"),
        ({"script_text": 5}, "manifest.json: script_text must be text of at most 24,192 characters, got 5"),
        (
            {"turns": [{"speaker": 1, "text": "Hi", "seed": 1, "takes": [], "rating": {"verdict": "meh"}}]},
            "turns[0].rating.verdict must be good or bad, got 'meh'",
        ),
        (
            {"context": [{"speaker": 0, "text": "Hi", "file": "../../etc/passwd"}]},
            "context[0].file must be a file name inside the bundle",
        ),
    ],  # fmt: skip
)
def test_a_manifest_with_wrong_types_says_which_field(tmp_path, outputs, changes, message):
    refused(zip_of(tmp_path / "types.zip", good_entries(**changes)), message, outputs)


def test_a_file_the_manifest_names_but_the_zip_lacks_is_said(tmp_path, outputs):
    entries = good_entries()
    del entries["turns/turn-01.wav"]
    refused(zip_of(tmp_path / "missing.zip", entries), "its manifest names turns/turn-01.wav, which the zip", outputs)


# -- names that reach outside --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../evil.wav", "voices/../../evil.wav", "/tmp/evil.wav", "C:/evil.wav", "C:\\evil.wav", "..\\..\\evil.wav",
     "\\\\server\\share\\evil.wav", ".hidden", "voices//evil.wav", "a/b/c/d/e/evil.wav", "vo ices/evil.wav"],
)  # fmt: skip
def test_an_entry_named_outside_the_bundle_is_refused_before_anything_is_written(tmp_path, outputs, name):
    entries = {**good_entries(), name: b"owned"}
    info = refused(zip_of(tmp_path / "escape.zip", entries), "which no session has", outputs)
    assert "Traceback" not in info
    assert not (tmp_path / "evil.wav").exists() and not Path("/tmp/evil.wav").exists()


def test_a_symlink_entry_is_refused(tmp_path, outputs):
    path = zip_of(tmp_path / "link.zip", good_entries())
    with zipfile.ZipFile(path, "a") as z:
        link = zipfile.ZipInfo("voices/passwd.wav")
        link.create_system, link.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
        z.writestr(link, "/etc/passwd")
    refused(path, "holds a link (voices/passwd.wav)", outputs)


def test_the_same_name_twice_is_refused(tmp_path, outputs):
    path = zip_of(tmp_path / "twice.zip", good_entries())
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "a") as z:
        z.writestr("turns/turn-01.wav", b"the second, which zipfile would read")
    refused(path, "holds 'turns/turn-01.wav' twice", outputs)
    path = zip_of(tmp_path / "case.zip", {**good_entries(), "Turns/Turn-01.wav": b"one on a case-blind disk"})
    refused(path, "holds 'Turns/Turn-01.wav' twice", outputs)


def test_an_encrypted_entry_is_refused(tmp_path, outputs):
    path = patch_directory(zip_of(tmp_path / "locked.zip", good_entries()), "turns/turn-01.wav", 8, "<H", 0x1)
    refused(path, "This zip is encrypted", outputs)


# -- sizes: declared, actual, ratio, count -------------------------------------------------------------


def test_a_zip_declaring_10_gb_is_refused_before_anything_is_extracted(tmp_path, outputs, monkeypatch):
    """Three entries whose directory records declare 3.5 GB each (the files hold a few bytes)."""
    path = zip_of(tmp_path / "bomb.zip", {**good_entries(), **{f"turns/part-{i}.wav": b"x" * 10 for i in range(3)}})
    for i in range(3):
        patch_directory(path, f"turns/part-{i}.wav", 24, "<L", 0xD000_0000)
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *a, **k: pytest.fail("an entry was read"))
    assert sum(i.file_size for i in zipfile.ZipFile(path).infolist()) > 10 * 10**9
    refused(path, "turns/part-0.wav declares 3,328 MB", outputs)


def test_a_highly_compressed_entry_is_refused_by_its_ratio(tmp_path, outputs, monkeypatch):
    zeros = bytes(15 << 20)  # 15 MB that deflate to about 15 KB: within the size limits, not within the ratio
    path = zip_of(tmp_path / "zeros.zip", {**good_entries(), "turns/turn-01.wav": zeros}, zipfile.ZIP_DEFLATED)
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *a, **k: pytest.fail("an entry was read"))
    refused(path, "turns/turn-01.wav declares 15 MB from 0.0 MB", outputs)


def test_an_entry_larger_than_it_declares_is_refused_and_nothing_is_left(tmp_path, outputs):
    path = zip_of(tmp_path / "liar.zip", good_entries())
    real = zipfile.ZipFile(path).getinfo("turns/turn-01.wav").file_size
    patch_directory(path, "turns/turn-01.wav", 24, "<L", real - 1000)  # the data holds 1,000 bytes more
    message = refused(path, "", outputs)
    assert "is corrupt" in message or "larger than it declares" in message  # its checksum fails first
    assert len(outputs.made) == 1  # extracting had begun: the files before it were removed with their folder


def test_a_zip_of_10000_entries_is_refused_from_its_end_record(tmp_path, outputs, monkeypatch):
    entries = {**good_entries(), **{f"turns/t{i}.wav": b"" for i in range(10_000)}}
    path = zip_of(tmp_path / "many.zip", entries)
    monkeypatch.setattr(zipfile, "ZipFile", lambda *a, **k: pytest.fail("zipfile read the directory"))
    refused(path, "This zip holds 10,004 files; a session has at most 1,000", outputs)


def test_a_file_over_the_bundle_limit_is_refused_unread(tmp_path, outputs, monkeypatch):
    monkeypatch.setattr(bundle, "MAX_BUNDLE_BYTES", 1000)
    refused(zip_of(tmp_path / "big.zip", good_entries()), "larger than any session", outputs)


# -- a session from a real run ---------------------------------------------------------------------------


@pytest.mark.slow
def test_the_manifest_of_a_run_holds_what_regenerates_it(tmp_path):
    from studio.inputs import parse_script
    from studio.service import TINY_MODEL, Studio, Voice

    studio = Studio(TINY_MODEL, device="cpu").load()
    own = tmp_path / "own.wav"
    own.write_bytes(wav_bytes(1.5, 7))
    job = studio.prepare(parse_script("[0] Hello.\n[1] Hi!"), [Voice(0, "river"), Voice(1, path=str(own),
                         transcript="My own voice.")], ([str(own)], ["Earlier words."], [1]), (0.9, 50, 1, 5))  # fmt: skip
    *_, result = studio.run(job)
    made, files = manifest.manifest_for(job, result, studio)
    opened = read_bundle(write_bundle(made, files))
    m = opened.manifest
    assert (m["model"]["id"], m["model"]["device"], m["model"]["revision"]) == ("tiny", "cpu", None)
    assert len(m["model"]["checkpoint_sha256"]) == 64 and m["model"]["dtype"] in ("float32", "bfloat16")
    assert m["model"]["quantize"] is None and m["model"]["quantize_scheme"] is None  # a float model
    assert m["app"]["version"] == "0.1.0"
    assert m["settings"] == {"temperature": 0.9, "topk": 50, "max_seconds": 1, "seed": 5, "takes": 1,
                             "first_chunk_frames": FIRST_CHUNK_FRAMES}  # fmt: skip
    assert m["script"] == [{"speaker": 0, "text": "Hello."}, {"speaker": 1, "text": "Hi!"}]
    river = studio.presets.get("river")
    assert m["voices"][0] == {"speaker": 0, "preset": "river", "name": river.name, "transcript": river.transcript}
    assert m["voices"][1] == {"speaker": 1, "file": "voices/speaker-1.wav", "transcript": "My own voice."}
    assert m["context"] == [{"speaker": 1, "file": "context/turn-01.wav", "text": "Earlier words."}]
    assert [t["seed"] for t in m["turns"]] == [5, 6] and [t["takes"][0]["seed"] for t in m["turns"]] == [5, 6]
    assert all(t["takes"][0]["kept"] and t["takes"][0]["report"]["frames"] > 0 for t in m["turns"])
    own_voice = next(c.segment for c in job.context if c.is_prompt and c.segment.speaker == 1)
    heard = sf.read(opened.files["voices/speaker-1.wav"], dtype="float32")[0]
    np.testing.assert_array_equal(heard, own_voice.audio.numpy())  # the very samples the model heard
    for take, path in zip([t["takes"][0] for t in m["turns"]], result.turn_paths):
        assert opened.files[take["file"]].read_bytes() == path.read_bytes()
