"""Clean-up of a voice clip before the model hears it: pure functions on 24 kHz mono audio.

A voice prompt gets the full clean-up: its silent ends trimmed, a long clip cut to its best 5 to 20 s
at pauses, its loudness brought to one target (ITU-R BS.1770, with pyloudnorm), and clipping reported.
A conversation turn keeps its timing: only its silent ends are trimmed (its loudness, relative to the
other turns, is part of the conversation). Nothing here reads files or knows about requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from studio.inputs import SAMPLE_RATE

TARGET_LUFS = -20.0  # where the shipped presets sit (-20 to -23), loud enough to hear, with room for peaks
PEAK_CEILING = 0.89  # -1 dBFS: the gain towards the target stops here rather than clip
KEEP_SILENCE_S = 0.1  # what is left of a silent end: a breath before the voice, not a gap
PROMPT_S = (5.0, 20.0)  # a voice prompt's best window: enough of the voice, little of the context window
FULL_SCALE = 0.99  # a sample this loud (of 1.0) is at full scale
CLIPPED_SHARE = 0.001  # more than this share of samples at full scale: the recording is clipped
FRAME_S = 0.01  # levels are measured per 10 ms
SMOOTH_S = 0.1  # and averaged over 100 ms to find pauses, which are longer than a stop consonant
MIN_LOUDNESS_S = 0.4  # BS.1770 measures in 400 ms blocks


@dataclass
class Cleaned:
    """Audio after clean-up (float32, 24 kHz mono), what was done to it, and what is wrong with it."""

    audio: np.ndarray
    notes: list[str] = field(default_factory=list)  # what was changed, e.g. "cut to 18.2 s at pauses"
    problems: list[str] = field(default_factory=list)  # what the user may want to fix, e.g. clipping

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def as_array(audio) -> np.ndarray:
    """A torch tensor or any array -> float32 numpy (the caller's audio is not changed)."""
    if hasattr(audio, "detach"):
        audio = audio.detach().cpu().float().numpy()
    return np.asarray(audio, dtype=np.float32).reshape(-1)


def clean_voice_prompt(audio, rate: int = SAMPLE_RATE) -> Cleaned:
    """The full clean-up of a voice prompt: trim, cut a long clip to its best window, set its loudness."""
    audio = as_array(audio)
    problems = clipping_problems(audio)
    notes = []
    start, end = trim_silence(audio, rate)
    trimmed = (start + len(audio) - end) / rate
    audio = audio[start:end]
    if len(audio) > PROMPT_S[1] * rate:
        first, last = best_window(audio, rate)
        notes.append(
            f"cut from {len(audio) / rate:.1f} s to its best {(last - first) / rate:.1f} s "
            f"({clock(first / rate)} to {clock(last / rate)}), at pauses: a voice needs no more, and the rest "
            "would fill the model's context window. The transcript must be of this part."
        )
        audio = audio[first:last]
        start, end = trim_silence(audio, rate)
        audio = audio[start:end]
    if trimmed >= KEEP_SILENCE_S:
        notes.insert(0, f"{trimmed:.1f} s of silence trimmed from its ends")
    audio, note = normalize_loudness(audio, rate)
    return Cleaned(audio, notes + ([note] if note else []), problems)


def clean_turn(audio, rate: int = SAMPLE_RATE) -> Cleaned:
    """A conversation turn keeps its timing and loudness: only its silent ends are trimmed."""
    audio = as_array(audio)
    start, end = trim_silence(audio, rate)
    trimmed = (start + len(audio) - end) / rate
    notes = [f"{trimmed:.1f} s of silence trimmed from its ends"] if trimmed >= KEEP_SILENCE_S else []
    return Cleaned(audio[start:end].copy(), notes, clipping_problems(audio))


def clock(seconds: float) -> str:
    """72.4 -> "1:12.4"."""
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


# -- levels, silence and pauses --------------------------------------------------------------------


def frame_levels(audio: np.ndarray, rate: int, smooth_s: float = 0.0) -> np.ndarray:
    """Each 10 ms frame's level in dB (RMS; -100 for digital silence), optionally averaged over `smooth_s`."""
    hop = max(1, int(FRAME_S * rate))
    frames = len(audio) // hop
    if frames == 0:
        return np.full(1, -100.0)
    power = np.square(audio[: frames * hop].astype(np.float64)).reshape(frames, hop).mean(axis=1)
    width = int(round(smooth_s / FRAME_S))
    if width > 1:
        power = np.convolve(power, np.ones(width) / width, mode="same")
    return 10 * np.log10(np.maximum(power, 1e-10))


def silence_threshold(levels: np.ndarray) -> float:
    """The level below which a frame counts as silence: 10 dB over the noise floor, but always at least
    35 dB under the speech (so soft consonants stay), and at most 50 dB under it."""
    loud, floor = np.percentile(levels, 95), np.percentile(levels, 10)
    return float(min(loud - 35, max(floor + 10, loud - 50)))


def trim_silence(audio: np.ndarray, rate: int, keep_s: float = KEEP_SILENCE_S) -> tuple[int, int]:
    """The (start, end) samples of `audio` without its silent ends, keeping `keep_s` of each."""
    levels = frame_levels(audio, rate)
    sound = np.flatnonzero(levels > silence_threshold(levels))
    if len(sound) == 0:
        return 0, len(audio)
    hop, keep = int(FRAME_S * rate), int(keep_s * rate)
    return max(0, sound[0] * hop - keep), min(len(audio), (sound[-1] + 1) * hop + keep)


def pause_points(levels: np.ndarray) -> np.ndarray:
    """One frame per pause (its quietest), as frame indices: where a cut loses no speech."""
    quiet = levels <= silence_threshold(levels)
    points, i = [], 0
    while i < len(levels):
        if quiet[i]:
            j = i
            while j < len(levels) and quiet[j]:
                j += 1
            points.append(i + int(np.argmin(levels[i:j])))
            i = j
        else:
            i += 1
    return np.array(points, dtype=int)


def best_window(audio: np.ndarray, rate: int, shortest: float = PROMPT_S[0], longest: float = PROMPT_S[1]):
    """The (start, end) samples of the best part of a long clip to imitate: from pause to pause, between
    `shortest` and `longest` seconds, holding the most speech (the earliest of equals). Without pauses
    there, from the start to the quietest point that keeps it between `shortest` and `longest`."""
    levels = frame_levels(audio, rate, SMOOTH_S)
    hop, n = int(FRAME_S * rate), len(levels)
    low, high = int(shortest / FRAME_S), int(longest / FRAME_S)
    speech = np.concatenate([[0], np.cumsum(levels > silence_threshold(levels))])
    cuts = np.unique(np.concatenate([[0], pause_points(levels), [n]]))
    best, chosen = -1, None
    for start in cuts:
        ends = cuts[(cuts >= start + low) & (cuts <= start + high)]
        if len(ends):
            end = ends[np.argmax(speech[ends] - speech[start])]  # argmax: the first of equals
            if speech[end] - speech[start] > best:
                best, chosen = speech[end] - speech[start], (start, end)
    if chosen is None:
        chosen = (0, low + int(np.argmin(levels[low : min(high, n - 1) + 1])))
    return chosen[0] * hop, min(len(audio), chosen[1] * hop)


def split_at_pauses(audio: np.ndarray, rate: int, longest: float) -> list[tuple[int, int]]:
    """`audio` as (start, end) pieces of at most `longest` seconds, each cut at the quietest point of its
    second half, so no piece ends mid-word when a pause is near (speech recognisers hear 30 s at a time)."""
    levels = frame_levels(audio, rate, SMOOTH_S)
    hop, most = int(FRAME_S * rate), max(2, int(longest / FRAME_S))
    pieces, start = [], 0
    while len(levels) - start > most:
        cut = start + most // 2 + int(np.argmin(levels[start + most // 2 : start + most]))
        pieces.append((start * hop, cut * hop))
        start = cut
    pieces.append((start * hop, len(audio)))
    return pieces


# -- loudness and clipping ---------------------------------------------------------------------------


def loudness(audio: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770-4, gated), measured by pyloudnorm."""
    import pyloudnorm

    return float(pyloudnorm.Meter(rate).integrated_loudness(audio.astype(np.float64)))


def normalize_loudness(audio: np.ndarray, rate: int, target: float = TARGET_LUFS) -> tuple[np.ndarray, str]:
    """`audio` at `target` LUFS, or as near as its peaks allow under PEAK_CEILING; and a note saying so."""
    if len(audio) < MIN_LOUDNESS_S * rate:
        return audio, ""
    before = loudness(audio, rate)
    if not np.isfinite(before):  # too quiet for the meter's gate: nothing to measure
        return audio, ""
    gain = 10 ** ((target - before) / 20)
    peak = float(np.abs(audio).max())
    if peak * gain > PEAK_CEILING:
        gain = PEAK_CEILING / peak
    if abs(20 * np.log10(gain)) < 0.5:  # already there: leave the clip as it is
        return audio, ""
    after = before + 20 * np.log10(gain)
    note = f"loudness set from {before:.0f} to {after:.0f} LUFS"
    if after < target - 0.5:
        note += f" (the target is {target:.0f}; its peaks allow no more)"
    return (audio * gain).astype(np.float32), note


def clipped_share(audio: np.ndarray) -> float:
    """The share of samples at full scale."""
    return float(np.mean(np.abs(audio) >= FULL_SCALE)) if len(audio) else 0.0


def clipping_problems(audio: np.ndarray) -> list[str]:
    share = clipped_share(audio)
    if share <= CLIPPED_SHARE:
        return []
    return [
        f"{share:.1%} of its samples are at full scale: the recording is clipped (distorted), and the model "
        "imitates that too. Record it again with less gain, or further from the microphone."
    ]
