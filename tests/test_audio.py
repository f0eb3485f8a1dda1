"""Audio I/O: any clip becomes 1-D float32 mono at 24 kHz with its content intact; bad input is a ValueError."""

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from csm.audio import load_audio, save_wav, to_mono

RATE_IN, RATE_OUT, SECONDS = 44_100, 24_000, 1.5
LEFT_HZ, RIGHT_HZ = 440.0, 1000.0


def sine(hz: float, rate: int, seconds: float = SECONDS, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.fixture
def stereo() -> np.ndarray:
    """1.5 s at 44.1 kHz, [T, 2] as soundfile reads it: a different tone in each ear."""
    return np.stack([sine(LEFT_HZ, RATE_IN), sine(RIGHT_HZ, RATE_IN, amplitude=0.25)], axis=1)


def peak_frequencies(audio: torch.Tensor, rate: int, count: int) -> list[float]:
    spectrum = np.abs(np.fft.rfft(audio.numpy() * np.hanning(len(audio))))
    freqs = np.fft.rfftfreq(len(audio), 1 / rate)
    peaks = [i for i in range(1, len(spectrum) - 1) if spectrum[i - 1] < spectrum[i] >= spectrum[i + 1]]
    return sorted(freqs[i] for i in sorted(peaks, key=lambda i: -spectrum[i])[:count])


def test_stereo_44k_becomes_mono_24k_with_its_content(stereo):
    mono = to_mono(stereo, RATE_IN, RATE_OUT)
    assert isinstance(mono, torch.Tensor) and mono.dtype == torch.float32 and mono.dim() == 1
    assert abs(len(mono) - round(SECONDS * RATE_OUT)) <= 1
    # The same as resampling the channels' mean ...
    expected = soxr.resample(stereo.mean(axis=1), RATE_IN, RATE_OUT, quality="HQ")
    assert np.abs(mono.numpy() - expected[: len(mono)]).max() < 1e-5
    # ... which is the two tones, at their frequencies, sampled at 24 kHz (away from the edges,
    # where the resampling filter sees the clip start and stop).
    tones = 0.5 * (sine(LEFT_HZ, RATE_OUT) + sine(RIGHT_HZ, RATE_OUT, amplitude=0.25))
    assert np.abs(mono.numpy() - tones[: len(mono)])[500:-500].max() < 1e-4
    assert peak_frequencies(mono, RATE_OUT, 2) == pytest.approx([LEFT_HZ, RIGHT_HZ], abs=1.0)


def test_channels_first_and_last_agree(stereo):
    last = to_mono(stereo, RATE_IN)
    first = to_mono(np.ascontiguousarray(stereo.T), RATE_IN)
    from_torch = to_mono(torch.from_numpy(stereo.T.copy()), RATE_IN)
    assert torch.equal(first, last) and torch.equal(from_torch, last)
    single = stereo[:, 0]
    assert torch.equal(to_mono(single[None], RATE_IN), to_mono(single, RATE_IN))  # [1, T]
    assert torch.equal(to_mono(single[:, None], RATE_IN), to_mono(single, RATE_IN))  # [T, 1]


def test_integer_pcm_is_scaled_to_unit_range():
    audio = sine(LEFT_HZ, RATE_OUT, amplitude=0.9)
    pcm16 = np.round(audio * 32767).astype(np.int16)
    pcm32 = np.round(audio.astype(np.float64) * 2**31 * 0.999).astype(np.int32)
    assert to_mono(pcm16, RATE_OUT).numpy() == pytest.approx(audio, abs=1e-4)
    assert to_mono(torch.from_numpy(pcm16), RATE_OUT).numpy() == pytest.approx(audio, abs=1e-4)
    assert to_mono(pcm32, RATE_OUT).numpy() == pytest.approx(audio * 0.999, abs=1e-6)
    assert to_mono(np.full(4, -32768, np.int16), RATE_OUT).tolist() == [-1.0] * 4


def test_same_rate_is_not_resampled():
    audio = sine(LEFT_HZ, RATE_OUT)
    assert np.array_equal(to_mono(audio, RATE_OUT).numpy(), audio)
    assert to_mono(audio.astype(np.float64), RATE_OUT).dtype == torch.float32


@pytest.mark.parametrize("suffix, subtype", [(".wav", "PCM_16"), (".flac", "PCM_24"), (".wav", "FLOAT")])
def test_file_to_mono(tmp_path, stereo, suffix, subtype):
    path = tmp_path / f"clip{suffix}"
    sf.write(path, stereo, RATE_IN, subtype=subtype)
    samples, rate = load_audio(path)
    assert rate == RATE_IN and samples.dtype == np.float32 and samples.shape == (2, len(stereo))
    assert np.abs(samples - stereo.T).max() < 1e-4  # PCM_16 quantisation at most
    mono = to_mono(samples, rate)
    assert abs(len(mono) - round(SECONDS * RATE_OUT)) <= 1
    assert peak_frequencies(mono, RATE_OUT, 2) == pytest.approx([LEFT_HZ, RIGHT_HZ], abs=1.0)


def test_mono_file_loads_1d(tmp_path):
    path = tmp_path / "mono.wav"
    sf.write(path, sine(LEFT_HZ, 16_000), 16_000)
    samples, rate = load_audio(str(path))
    assert rate == 16_000 and samples.shape == (round(SECONDS * 16_000),)


def test_save_wav_round_trip_clips(tmp_path):
    audio = torch.tensor([0.0, 0.5, -0.25, 1.5, -3.0])
    save_wav(tmp_path / "float.wav", audio, RATE_OUT, subtype="FLOAT")
    back, rate = sf.read(tmp_path / "float.wav", dtype="float32")
    assert rate == RATE_OUT and back.tolist() == [0.0, 0.5, -0.25, 1.0, -1.0]
    save_wav(tmp_path / "pcm.wav", audio.numpy(), RATE_OUT)
    assert sf.info(str(tmp_path / "pcm.wav")).subtype == "PCM_16"
    back, _ = load_audio(tmp_path / "pcm.wav")
    assert back == pytest.approx([0.0, 0.5, -0.25, 1.0, -1.0], abs=1 / 32768)


@pytest.mark.parametrize(
    "audio, rate, match",
    [
        (np.array([0.0, np.nan, 0.1], np.float32), RATE_OUT, "NaN or infinite"),
        (np.array([0.0, np.inf], np.float32), RATE_OUT, "NaN or infinite"),
        (np.zeros(0, np.float32), RATE_OUT, "empty"),
        (np.zeros((2, 0), np.float32), RATE_OUT, "empty"),
        (np.zeros(10, np.float32), 0, "sample_rate must be a positive"),
        (np.zeros(10, np.float32), -16_000, "sample_rate must be a positive"),
        (np.zeros(10, np.float32), True, "sample_rate must be a positive"),
        (np.zeros((16, 16), np.float32), RATE_OUT, "cannot tell channels from samples"),
        (np.zeros((1, 2, 100), np.float32), RATE_OUT, r"must be \[T\]"),
        (np.zeros(10, np.uint8), RATE_OUT, "int16/int32"),
    ],
)
def test_bad_audio_is_a_value_error(audio, rate, match):
    with pytest.raises(ValueError, match=match):
        to_mono(audio, rate)


def test_unreadable_files_are_named(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    text = tmp_path / "notes.txt"
    text.write_text("not audio")
    for path in (corrupt, text, tmp_path):  # tmp_path: a folder
        with pytest.raises(ValueError, match=f"cannot read '{path}' as audio"):
            load_audio(path)
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav")


def test_empty_file_is_a_value_error(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), RATE_OUT)
    with pytest.raises(ValueError, match="holds no audio samples"):
        load_audio(path)


def test_save_wav_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="1-D"):
        save_wav(tmp_path / "x.wav", np.zeros((2, 10), np.float32), RATE_OUT)
    with pytest.raises(ValueError, match="NaN"):
        save_wav(tmp_path / "x.wav", np.array([np.nan], np.float32), RATE_OUT)
    with pytest.raises(ValueError, match="subtype"):
        save_wav(tmp_path / "x.wav", np.zeros(10, np.float32), RATE_OUT, subtype="MP3")
