"""Audio in and out: read what soundfile reads, make it mono at the codec's rate, write WAVs.

No torchaudio: soundfile (libsndfile: WAV, FLAC, OGG, MP3, ...) reads and writes, soxr resamples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr
import torch

MAX_CHANNELS = 8  # a 2-D array with one side at most this long has its channels on that side


def load_audio(path) -> tuple[np.ndarray, int]:
    """Read an audio file: float32 samples in [-1, 1], [T] if mono else [channels, T], and the rate."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no audio file at {path!r}")
    try:
        samples, sample_rate = sf.read(path, dtype="float32", always_2d=True)  # [T, C]
    except (sf.SoundFileError, RuntimeError, TypeError) as e:
        raise ValueError(
            f"cannot read {path!r} as audio ({e}); use a WAV, FLAC, OGG or MP3 file that is not corrupt"
        ) from None
    if samples.size == 0:
        raise ValueError(f"{path!r} holds no audio samples")
    samples = np.ascontiguousarray(samples.T)  # [C, T]: one row per channel
    return (samples[0] if samples.shape[0] == 1 else samples), int(sample_rate)


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header declares: read before decoding, so limits can be checked first."""

    sample_rate: int
    channels: int
    seconds: float


def audio_info(path) -> AudioInfo:
    """The header of an audio file, without decoding it; ValueError if it is not audio."""
    path = os.fspath(path)
    try:
        info = sf.info(path)
    except (sf.SoundFileError, RuntimeError, TypeError) as e:
        raise ValueError(f"cannot read {path!r} as audio ({e})") from None
    rate = int(info.samplerate)
    return AudioInfo(rate, int(info.channels), info.frames / rate if rate > 0 else float("inf"))


def load_mono(path, target_rate: int = 24_000, max_seconds: float | None = None) -> torch.Tensor:
    """A file as 1-D float32 at `target_rate`: read block by block, each block's channels averaged and
    resampled as it comes, so memory follows the output, whatever the file's rate and channels.
    With `max_seconds`, a file that decodes to more than that (whatever its header said) is refused."""
    path = os.fspath(path)
    pieces, frames = [], 0
    try:
        with sf.SoundFile(path) as f:
            rate = int(f.samplerate)
            limit = None if max_seconds is None else int(max_seconds * rate) + 1
            stream = soxr.ResampleStream(rate, target_rate, 1, dtype="float32", quality="HQ")
            for block in f.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
                frames += len(block)
                if limit is not None and frames > limit:
                    raise ValueError(f"{path!r} holds more than {max_seconds:g} s of audio")
                pieces.append(stream.resample_chunk(block.mean(axis=1)))
            pieces.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    except (sf.SoundFileError, RuntimeError, TypeError) as e:
        raise ValueError(f"cannot read {path!r} as audio ({e})") from None
    if frames == 0:
        raise ValueError(f"{path!r} holds no audio samples")
    audio = np.concatenate(pieces)
    if not np.isfinite(audio).all():
        raise ValueError("audio contains NaN or infinite samples")
    return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))


def to_mono(audio, sample_rate, target_rate: int = 24_000) -> torch.Tensor:
    """Any clip -> a 1-D float32 CPU tensor: channels averaged, resampled to `target_rate`.

    `audio` is a numpy array or torch tensor: [T], or 2-D with channels on the short side, either
    [T, C] (soundfile's layout) or [C, T], as long as there are at most 8 channels. Integer PCM
    (int16, int32) is scaled to [-1, 1]; floats are taken as they are.
    """
    for name, rate in (("sample_rate", sample_rate), ("target_rate", target_rate)):
        if isinstance(rate, bool) or not isinstance(rate, (int, float, np.number)) or not rate > 0:
            raise ValueError(f"{name} must be a positive number of samples per second, got {rate!r}")
    samples = _as_float(audio)
    if samples.ndim not in (1, 2):
        raise ValueError(f"audio must be [T], [T, channels] or [channels, T], got shape {samples.shape}")
    if samples.size == 0:
        raise ValueError(f"audio is empty: it has no samples (shape {samples.shape})")
    if samples.ndim == 2:
        samples = samples.mean(axis=_channel_axis(samples.shape))
    if not np.isfinite(samples).all():
        raise ValueError("audio contains NaN or infinite samples")
    if sample_rate != target_rate:
        samples = soxr.resample(samples, sample_rate, target_rate, quality="HQ")
    return torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))


def save_wav(path, audio, sample_rate: int, subtype: str = "PCM_16") -> None:
    """Write 1-D audio as a WAV file, clipped to [-1, 1]; `subtype` "PCM_16" or "FLOAT"."""
    if subtype not in ("PCM_16", "FLOAT"):
        raise ValueError(f"subtype must be 'PCM_16' or 'FLOAT', got {subtype!r}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    samples = _as_float(audio)
    if samples.ndim != 1:
        raise ValueError(f"save_wav writes 1-D (mono) audio, got shape {samples.shape}")
    if not np.isfinite(samples).all():
        raise ValueError("audio contains NaN or infinite samples")
    sf.write(os.fspath(path), np.clip(samples, -1.0, 1.0), int(sample_rate), subtype=subtype, format="WAV")


def _as_float(audio) -> np.ndarray:
    """A numpy or torch array as floats; integer PCM scaled by its full range to [-1, 1]."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu()
        audio = (audio.float() if audio.is_floating_point() else audio).numpy()
    audio = np.asarray(audio)
    if audio.dtype in (np.int16, np.int32):
        return audio.astype(np.float32) / np.float32(-np.iinfo(audio.dtype).min)
    if audio.dtype in (np.float32, np.float64):
        return audio
    if np.issubdtype(audio.dtype, np.floating):  # float16
        return audio.astype(np.float32)
    raise ValueError(f"audio must be float or int16/int32 PCM samples, got dtype {audio.dtype}")


def _channel_axis(shape: tuple[int, int]) -> int:
    """The axis holding channels: the short side, which must be at most MAX_CHANNELS long."""
    if min(shape) > MAX_CHANNELS:
        raise ValueError(
            f"cannot tell channels from samples in audio of shape {shape}: "
            f"expected [T, channels] or [channels, T] with at most {MAX_CHANNELS} channels"
        )
    return int(np.argmin(shape))  # [C, T] when both sides are equally short
