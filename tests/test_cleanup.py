"""Clean-up of voice clips, on synthetic speech-like audio: silence, loudness, long clips, clipping."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from studio import cleanup
from studio.cleanup import TARGET_LUFS, clean_turn, clean_voice_prompt

RATE = 24_000


def burst(seconds: float, pitch: float, rng) -> np.ndarray:
    """A voiced-sounding burst: a harmonic tone with some breath, swelling and fading like a phrase."""
    t = np.arange(int(seconds * RATE)) / RATE
    tone = sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 8)) + 0.3 * rng.standard_normal(len(t))
    return (0.1 * np.sin(np.pi * t / seconds) ** 0.5 * tone).astype(np.float32)


def speech(seconds: float, seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Phrases of 0.8 to 2.5 s with pauses of 0.3 to 0.9 s (faint noise) between, and where each pause is."""
    rng = np.random.default_rng(seed)
    parts, pauses, length = [], [], 0
    while length < seconds * RATE:
        phrase = burst(rng.uniform(0.8, 2.5), rng.uniform(100, 220), rng)
        pause = (1e-4 * rng.standard_normal(int(rng.uniform(0.3, 0.9) * RATE))).astype(np.float32)
        length += len(phrase)
        pauses.append((length, length + len(pause)))
        parts += [phrase, pause]
        length += len(pause)
    return np.concatenate(parts), pauses


def lufs(audio: np.ndarray) -> float:
    return pyloudnorm.Meter(RATE).integrated_loudness(audio.astype(np.float64))


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio.astype(np.float64)))))


def test_two_seconds_of_leading_silence_are_trimmed_to_under_a_fifth_of_a_second():
    voice, _ = speech(4)
    audio = np.concatenate([np.zeros(2 * RATE, np.float32), voice])
    for cleaned in (clean_voice_prompt(audio), clean_turn(audio)):
        level = cleanup.frame_levels(cleaned.audio, RATE)
        first_sound = np.argmax(level > level.max() - 40) * cleanup.FRAME_S
        assert first_sound < 0.2
        assert any("silence trimmed" in note for note in cleaned.notes)


def test_a_voice_prompt_is_brought_to_the_target_loudness():
    voice, _ = speech(6)
    for gain in (0.05, 0.5, 2.0):  # -44, -24 and -12 LUFS before
        cleaned = clean_voice_prompt(gain * voice)
        assert abs(lufs(cleaned.audio) - TARGET_LUFS) < 1.0
        assert np.abs(cleaned.audio).max() <= cleanup.PEAK_CEILING + 1e-6
        assert any("loudness set" in note for note in cleaned.notes)


def test_loudness_stops_short_of_the_target_rather_than_clip_and_says_so():
    spiky = np.zeros(5 * RATE, np.float32)
    spiky[:: RATE // 4] = 0.5  # clicks: a peak far above the loudness
    spiky += 0.01 * np.random.default_rng(1).standard_normal(len(spiky)).astype(np.float32)
    cleaned = clean_voice_prompt(spiky)
    assert np.abs(cleaned.audio).max() == pytest.approx(cleanup.PEAK_CEILING, rel=1e-3)
    assert lufs(cleaned.audio) < TARGET_LUFS - 1
    assert any("its peaks allow no more" in note for note in cleaned.notes)


def test_a_long_clip_is_cut_to_at_most_twenty_seconds_at_pauses():
    audio, pauses = speech(60, seed=1)
    cleaned = clean_voice_prompt(audio)
    assert cleanup.PROMPT_S[0] <= cleaned.seconds <= cleanup.PROMPT_S[1]
    assert any("cut from" in note and "at pauses" in note for note in cleaned.notes)
    # It starts and ends in a pause: its first and last 50 ms are far quieter than its speech.
    edge = int(0.05 * RATE)
    assert rms(cleaned.audio[:edge]) < 0.01 * rms(cleaned.audio)
    assert rms(cleaned.audio[-edge:]) < 0.01 * rms(cleaned.audio)
    # And the window, found again in the original, runs from pause to pause.
    start, end = cleanup.best_window(audio[slice(*cleanup.trim_silence(audio, RATE))], RATE)
    offset = cleanup.trim_silence(audio, RATE)[0]
    inside = lambda sample: any(a <= sample <= b for a, b in pauses)  # noqa: E731
    assert (start == 0 or inside(offset + start)) and inside(offset + end)


def test_a_long_clip_without_pauses_is_cut_at_its_quietest_point():
    rng = np.random.default_rng(2)
    level = 0.1 + 0.05 * np.sin(np.arange(40 * RATE) / RATE * 2 * np.pi / 7)  # slow swell, no silence
    audio = (level * rng.standard_normal(40 * RATE)).astype(np.float32)
    start, end = cleanup.best_window(audio, RATE)
    assert start == 0 and cleanup.PROMPT_S[0] * RATE <= end <= cleanup.PROMPT_S[1] * RATE
    # The swell is quietest at 5.25 s and 12.25 s and 19.25 s: the cut lands near one of those.
    assert min(abs(end / RATE - t) for t in (5.25, 12.25, 19.25)) < 0.3


def test_a_clipped_recording_is_reported_with_its_share_at_full_scale():
    voice, _ = speech(5, seed=3)
    clipped = np.clip(voice * 12, -1, 1)
    share = float(np.mean(np.abs(clipped) >= 0.99))
    for cleaned in (clean_voice_prompt(clipped), clean_turn(clipped)):
        assert len(cleaned.problems) == 1
        assert f"{share:.1%} of its samples are at full scale" in cleaned.problems[0]
    assert clean_voice_prompt(voice).problems == []  # a clean one is not


def test_a_conversation_turn_keeps_its_timing_and_loudness():
    voice, pauses = speech(12, seed=4)
    audio = np.concatenate([np.zeros(RATE, np.float32), voice, np.zeros(RATE, np.float32)])
    cleaned = clean_turn(audio)
    start, end = cleanup.trim_silence(audio, RATE)
    np.testing.assert_array_equal(cleaned.audio, audio[start:end])  # its inner pauses, sample for sample
    assert len(pauses) > 3 and cleaned.seconds > 12
    assert lufs(cleaned.audio) == pytest.approx(lufs(voice), abs=0.5)  # not normalised


def test_torch_audio_is_taken_and_left_unchanged():
    torch = pytest.importorskip("torch")
    voice, _ = speech(3)
    tensor = torch.from_numpy(0.1 * voice)
    before = tensor.clone()
    cleaned = clean_voice_prompt(tensor)
    assert isinstance(cleaned.audio, np.ndarray) and cleaned.audio.dtype == np.float32
    assert torch.equal(tensor, before)


def test_splitting_for_the_recogniser_makes_bounded_pieces_at_pauses():
    audio, pauses = speech(100, seed=5)
    pieces = cleanup.split_at_pauses(audio, RATE, 28)
    assert pieces[0][0] == 0 and pieces[-1][1] == len(audio)
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))  # whole, in order
    assert all(end - start <= 28 * RATE for start, end in pieces)
    assert len(pieces) <= 100 / 14 + 1  # each but the last is at least half the longest
    for _, end in pieces[:-1]:
        assert any(a <= end <= b for a, b in pauses)


def write(tmp_path, name, audio, rate=RATE) -> str:
    sf.write(tmp_path / name, audio, rate)
    return str(tmp_path / name)


# -- checked on arrival: what the page shows next to a clip, and the audio a generation will use ------


def test_a_clip_checked_on_arrival_gives_the_cleaned_audio_and_says_what_was_done(tmp_path):
    from studio.clips import check_clip_on_arrival, cleaned_clip

    voice, _ = speech(30, seed=6)
    path = write(tmp_path, "long.wav", np.concatenate([np.zeros(RATE, np.float32), 3 * voice]))
    check = check_clip_on_arrival(path, room_s=150, role="voice")
    assert check.problems == [] and check.seconds <= 20
    assert check.note.startswith(f"✓ {check.seconds:.1f} s of audio\n\nCleaned up: ")
    assert "silence trimmed" in check.note and "cut from" in check.note and "loudness set" in check.note
    # What a generation uses is exactly what was heard on arrival.
    np.testing.assert_array_equal(check.audio, cleaned_clip(path, "speaker 0's own voice", "voice").audio)
    turn = check_clip_on_arrival(path, room_s=150, role="turn")
    assert turn.seconds > 29 and turn.hint.startswith(f"{turn.seconds:.1f} s: a long clip")  # a turn is not cut


def test_unreadable_silent_short_long_and_clipped_clips_are_said_on_arrival(tmp_path):
    from studio.clips import check_clip_on_arrival

    voice, _ = speech(6, seed=7)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    checks = {
        "corrupt": check_clip_on_arrival(str(tmp_path / "corrupt.wav"), 150),
        "silent": check_clip_on_arrival(write(tmp_path, "silent.wav", np.zeros(2 * RATE, np.float32)), 150),
        "short": check_clip_on_arrival(write(tmp_path, "short.wav", voice[: RATE // 5]), 150),
        "long": check_clip_on_arrival(write(tmp_path, "long.wav", np.resize(voice, 160 * RATE)), 150, role="turn"),
        "clipped": check_clip_on_arrival(write(tmp_path, "clipped.wav", np.clip(12 * voice, -1, 1)), 150),
        "brief": check_clip_on_arrival(write(tmp_path, "brief.wav", voice[: 2 * RATE]), 150),
    }
    assert all(checks[name].audio is None for name in ("corrupt", "silent", "short"))
    assert "cannot be read as audio" in checks["corrupt"].note
    assert "is silent" in checks["silent"].note and "only 0.20 s long" in checks["short"].note
    assert (
        checks["long"].note.startswith(f"⚠️ This clip is {checks['long'].seconds:.0f} s long")
        and "too long for the model's context" in checks["long"].note
    )
    assert checks["clipped"].audio is not None and "at full scale" in checks["clipped"].note
    assert checks["brief"].note.startswith("ℹ️ ") and "better from 5 s" in checks["brief"].note
    assert check_clip_on_arrival(None, 150).note == ""
