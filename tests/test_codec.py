"""The Mimi codec: shapes and checks, loading from both sources, and streaming decode equal to one-shot."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import MimiConfig, MimiModel

from csm.codec import MimiCodec, load_codec

SPF = 1920  # samples per frame at 24 kHz and 12.5 frames/s
TOLERANCE = 1e-4  # max abs difference allowed between streamed and one-shot audio (fp32)

# Real rates (24 kHz, 12.5 Hz, [8, 6, 5, 4] upsampling, 2048 codes) in a tiny body. The sliding
# window is 8 transformer steps (4 frames) so that a few dozen frames cross it many times, and
# the layer scale is large so that the transformer (and its KV cache) shapes the audio.
TINY_MIMI = dict(
    hidden_size=32, num_filters=8, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4,
    num_key_value_heads=4, codebook_size=2048, codebook_dim=16, vector_quantization_hidden_dimension=16,
    num_quantizers=8, upsample_groups=32, sliding_window=8, layer_scale_initial_scale=0.5,
)  # fmt: skip


def build_mimi(seed: int = 0, **overrides) -> MimiModel:
    """A random MimiModel whose codebooks are random too."""
    torch.manual_seed(seed)
    model = MimiModel(MimiConfig(**{**TINY_MIMI, **overrides})).eval()
    randomize_codebooks(model)
    return model


@torch.no_grad()
def randomize_codebooks(model: MimiModel) -> None:
    """Mimi's init leaves the codebooks at zero: codes would not matter, nor would loading them."""
    for module in model.modules():
        if hasattr(module, "embed_sum"):
            module.embed_sum.normal_()
            module.cluster_usage.uniform_(0.5, 2.0)
            module._embed = None
    model.decoder.decoder_seanet.layers[-1].conv.weight.mul_(0.1)  # audio around [-1, 1]


def random_codes(frames: int, num_codebooks: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 2048, (num_codebooks, frames), generator=torch.Generator().manual_seed(seed))


def stream(decoder, codes: torch.Tensor, chunk_sizes: list[int]) -> torch.Tensor:
    assert sum(chunk_sizes) == codes.shape[1]
    chunks, start = [], 0
    for size in chunk_sizes:
        chunk = decoder.decode(codes[:, start : start + size])
        assert chunk.shape == (size * SPF,) and chunk.dtype == torch.float32
        chunks.append(chunk)
        start += size
    return torch.cat(chunks)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def codec() -> MimiCodec:
    return MimiCodec(build_mimi(), num_codebooks=8)


@pytest.fixture(scope="module")
def codes() -> torch.Tensor:
    return random_codes(24)


@pytest.fixture(scope="module")
def one_shot(codec, codes) -> torch.Tensor:
    audio = codec.decode(codes)
    assert audio.abs().max() > 0.1  # not silence: the comparisons below mean something
    return audio


# ---------------------------------------------------------------------------------------------
# Encode and decode


def test_attributes(codec):
    assert (codec.sample_rate, codec.frame_rate, codec.samples_per_frame) == (24_000, 12.5, SPF)
    assert (codec.num_codebooks, codec.codebook_size) == (8, 2048)
    assert codec.device == torch.device("cpu") and codec.dtype == torch.float32


@pytest.mark.parametrize("samples", [SPF, SPF + 1, 3 * SPF - 1, 3 * SPF, 36_000])
def test_encode_shape_dtype_range(codec, samples):
    audio = 0.3 * torch.randn(samples, generator=torch.Generator().manual_seed(samples))
    codes = codec.encode(audio)
    assert codes.dtype == torch.long and codes.shape == (8, math.ceil(samples / SPF))
    assert 0 <= codes.min() and codes.max() < 2048


def test_fewer_codebooks_are_a_prefix(codec):
    audio = 0.3 * torch.randn(5 * SPF, generator=torch.Generator().manual_seed(1))
    fewer = MimiCodec(codec.model, num_codebooks=3)
    assert torch.equal(fewer.encode(audio), codec.encode(audio)[:3])
    assert fewer.decode(codec.encode(audio)[:3]).shape == (5 * SPF,)


def test_decode_length_and_round_trip_shapes(codec, codes, one_shot):
    assert one_shot.shape == (24 * SPF,) and one_shot.dtype == torch.float32
    assert codec.encode(one_shot).shape == (8, 24)
    assert codec.decode(codes[:, :1]).shape == (SPF,)


def test_decoding_is_causal(codec, codes, one_shot):
    """A frame's audio depends on no later frame: the premise of emitting each chunk complete."""
    for frames in (1, 5, 13):
        assert max_diff(codec.decode(codes[:, :frames]), one_shot[: frames * SPF]) < TOLERANCE


# ---------------------------------------------------------------------------------------------
# Streaming


@pytest.mark.parametrize(
    "chunk_sizes",
    [[1] * 24, [1, 3, 2, 7, 5, 6], [2, 8, 8, 6], [24], [5, 1, 1, 17]],
    ids=["single-frames", "uneven", "generator-like", "all-at-once", "long-tail"],
)
def test_stream_equals_one_shot(codec, codes, one_shot, chunk_sizes):
    streamed = stream(codec.stream_decoder(), codes, chunk_sizes)
    assert max_diff(streamed, one_shot) < TOLERANCE


def test_stream_state_matters(codec, codes, one_shot):
    """Chunks decoded without each other's state are wrong at every boundary, so the test above can fail."""
    separate = torch.cat([codec.stream_decoder().decode(codes[:, i : i + 4]) for i in range(0, 24, 4)])
    assert max_diff(separate, one_shot) > 100 * TOLERANCE


def test_sliding_window_is_crossed(codes, one_shot):
    """24 frames are 48 transformer steps: the 8-step window changes the audio, so streaming covers it."""
    unwindowed = MimiCodec(build_mimi(sliding_window=1000), num_codebooks=8).decode(codes)
    assert max_diff(unwindowed, one_shot) > 10 * TOLERANCE


def test_interleaved_decoders_are_independent(codec, codes, one_shot):
    other_codes = random_codes(12, seed=1)
    other_one_shot = codec.decode(other_codes)
    first, second = codec.stream_decoder(), codec.stream_decoder()
    first_chunks, second_chunks = [], []
    for (a, b), (c, d) in zip([(0, 3), (3, 4), (4, 10), (10, 24)], [(0, 1), (1, 6), (6, 8), (8, 12)]):
        first_chunks.append(first.decode(codes[:, a:b]))
        second_chunks.append(second.decode(other_codes[:, c:d]))
        codec.decode(other_codes[:, :2])  # one-shot decoding in between touches no stream state
    assert max_diff(torch.cat(first_chunks), one_shot) < TOLERANCE
    assert max_diff(torch.cat(second_chunks), other_one_shot) < TOLERANCE


def test_reset_starts_a_new_stream(codec, codes, one_shot):
    decoder = codec.stream_decoder()
    stream(decoder, random_codes(7, seed=2), [3, 4])
    decoder.reset()
    assert max_diff(stream(decoder, codes, [4, 20]), one_shot) < TOLERANCE


@pytest.mark.slow
def test_stream_equals_one_shot_at_real_size():
    """Mimi's real architecture (random weights): 512 wide, 8 layers, a 250-step window crossed."""
    torch.manual_seed(0)
    model = MimiModel(MimiConfig(layer_scale_initial_scale=0.3)).eval()  # the transformer shapes the audio
    randomize_codebooks(model)
    codec = MimiCodec(model, num_codebooks=32)
    codes = random_codes(140, num_codebooks=32)
    one_shot = codec.decode(codes)
    assert one_shot.abs().max() > 0.1
    streamed = stream(codec.stream_decoder(), codes, [2] + [8] * 17 + [2])
    assert max_diff(streamed, one_shot) < TOLERANCE


# ---------------------------------------------------------------------------------------------
# Loading


def test_load_by_path(tmp_path, codes):
    model = build_mimi(seed=3)
    model.save_pretrained(tmp_path)
    loaded = load_codec(str(tmp_path), num_codebooks=8)
    assert loaded.dtype == torch.float32 and loaded.device == torch.device("cpu")
    assert torch.equal(loaded.decode(codes), MimiCodec(model, 8).decode(codes))


def test_load_from_config_and_state_dict(tmp_path, codes):
    """Both tensor layouts: the checkpoints' flat names (as saved) and transformers 5's module names."""
    model = build_mimi(seed=4)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    expected = MimiCodec(model, 8).decode(codes)
    for state in (load_file(str(tmp_path / "model.safetensors")), model.state_dict()):
        loaded = load_codec(None, 8, codec_config=config, codec_state_dict=state)
        assert torch.equal(loaded.decode(codes), expected)


def test_load_codec_carried_by_a_csm_checkpoint(tmp_path, codes):
    """What the generator does with a transformers-layout CSM checkpoint: config.json["codec_config"]
    and the `codec_model.` tensors with that prefix stripped."""
    from transformers import CsmConfig, CsmForConditionalGeneration

    tiny = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)
    torch.manual_seed(5)
    csm = CsmForConditionalGeneration(
        CsmConfig(
            num_codebooks=8, vocab_size=2051, text_vocab_size=64, **tiny, codec_config=TINY_MIMI,
            depth_decoder_config=dict(num_codebooks=8, backbone_hidden_size=32, vocab_size=2051, **tiny),
        )
    )  # fmt: skip
    randomize_codebooks(csm.codec_model)
    csm.save_pretrained(tmp_path)
    codec_config = json.loads((tmp_path / "config.json").read_text())["codec_config"]
    weights = load_file(str(tmp_path / "model.safetensors"))
    state = {k.removeprefix("codec_model."): v for k, v in weights.items() if k.startswith("codec_model.")}
    loaded = load_codec(None, 8, codec_config=codec_config, codec_state_dict=state)
    expected = MimiCodec(csm.codec_model, 8).decode(codes)
    assert expected.abs().max() > 0.1 and torch.equal(loaded.decode(codes), expected)


# ---------------------------------------------------------------------------------------------
# Memory: the codebooks' centroids held once, and int8 weights for the transformers (int8 modes)


def test_centroids_are_held_once_and_give_transformers_own_codes_and_audio(codes):
    """transformers caches each codebook's centroids beside embed_sum (Mimi: 67 MB twice); MimiCodec
    folds them into embed_sum. The codes and the audio stay those of transformers' own model, bit for bit."""
    reference = build_mimi(seed=6)
    audio = 0.3 * torch.randn(6 * SPF, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        expected_codes = reference.encode(audio[None, None], num_quantizers=8).audio_codes[0]
        expected_audio = reference.decode(codes[None]).audio_values[0, 0]
    codec = MimiCodec(build_mimi(seed=6), 8)
    assert torch.equal(codec.encode(audio), expected_codes)
    assert torch.equal(codec.decode(codes), expected_audio)
    codebooks = [m for m in codec.model.modules() if hasattr(m, "embed_sum")]
    assert len(codebooks) == 8
    assert all(c._embed is not None and c._embed.data_ptr() == c.embed_sum.data_ptr() for c in codebooks)
    codec.model.load_state_dict(build_mimi(seed=6).state_dict())  # sums and usage as saved: folded again
    assert torch.equal(codec.decode(codes), expected_audio)


def saved_mimi(tmp_path, seed: int) -> tuple[MimiModel, dict, dict]:
    model = build_mimi(seed=seed)
    model.save_pretrained(tmp_path)
    return model, json.loads((tmp_path / "config.json").read_text()), load_file(str(tmp_path / "model.safetensors"))


def snr_db(reference: torch.Tensor, other: torch.Tensor) -> float:
    return 10 * math.log10(reference.pow(2).mean().item() / max((reference - other).pow(2).mean().item(), 1e-30))


@pytest.mark.parametrize("quantize", ["int8", "int8-dynamic"])
def test_int8_codec_holds_its_transformers_in_int8_and_stays_close(tmp_path, codes, quantize, monkeypatch):
    """Both int8 modes quantize the Linears of Mimi's transformers, weight-only. Bounds, set about 20 dB under
    what this tiny Mimi gives (91 dB one-shot, 90 streamed, 42 dB for the transformer's own part)."""
    from csm.quantize import Int8Linear

    monkeypatch.setattr("csm.codec.codec_int8_pays", lambda device: True)  # whatever this CPU has
    _, config, state = saved_mimi(tmp_path, seed=7)
    float_codec = load_codec(None, 8, codec_config=config, codec_state_dict=state)
    codec = load_codec(None, 8, codec_config=config, codec_state_dict=state, quantize=quantize)
    linears = [type(m) for m in codec.model.modules() if isinstance(m, (torch.nn.Linear, Int8Linear))]
    assert linears == [Int8Linear] * 24  # 2 transformers x 2 layers x (q, k, v, o, fc1, fc2)
    expected = float_codec.decode(codes)
    assert 70 < snr_db(expected, codec.decode(codes)) < float("inf")  # int8 rounding, not the float model itself
    assert 70 < snr_db(expected, stream(codec.stream_decoder(), codes, [1, 3, 2, 7, 5, 6])) < float("inf")
    hidden = torch.randn(1, 10, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        added = [c.model.decoder.decoder_transformer(hidden).last_hidden_state - hidden for c in (float_codec, codec)]
    assert 25 < snr_db(*added) < float("inf")
    audio = 0.3 * torch.randn(6 * SPF, generator=torch.Generator().manual_seed(7))
    assert (codec.encode(audio) == float_codec.encode(audio)).float().mean() > 0.9


def test_the_codec_stays_float_where_int8_would_be_slower(tmp_path, codes, monkeypatch):
    """A CPU without bf16 arithmetic runs int8 x float32 in a scalar kernel: there the codec keeps its floats."""
    monkeypatch.setattr("csm.quantize.cpu_computes_bf16", lambda: False)
    _, config, state = saved_mimi(tmp_path, seed=9)
    codec = load_codec(None, 8, codec_config=config, codec_state_dict=state, quantize="int8")
    assert sum(isinstance(m, torch.nn.Linear) for m in codec.model.modules()) == 24
    assert torch.equal(
        codec.decode(codes), load_codec(None, 8, codec_config=config, codec_state_dict=state).decode(codes)
    )


def test_load_codec_refuses_an_unknown_quantize(tmp_path):
    _, config, state = saved_mimi(tmp_path, seed=8)
    with pytest.raises(ValueError, match=r"quantize must be None or one of \['int8', 'int8-dynamic'\], got 'int4'"):
        load_codec(None, 8, codec_config=config, codec_state_dict=state, quantize="int4")


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda s: s.pop("upsample.conv.weight"), r"missing tensors: decoder\.upsample\.conv\.weight"),
        (lambda s: s.update({"decoder.layers.99.conv.bias": torch.zeros(1)}), r"unexpected tensors: decoder\.layers\."),
        (lambda s: s.update({"upsample.conv.weight": torch.zeros(3, 1, 4)}), r"wrong shapes: decoder\.upsample\.conv"),
    ],
    ids=["missing", "unexpected", "wrong-shape"],
)
def test_bad_state_dict_is_named(tmp_path, edit, match):
    model = build_mimi()
    model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    edit(state)
    with pytest.raises(ValueError, match=match):
        load_codec(None, 8, codec_config=model.config.to_dict(), codec_state_dict=state)


def test_load_codec_refuses_bad_arguments(codec):
    state = codec.model.state_dict()
    with pytest.raises(ValueError, match="together"):
        load_codec(None, 8, codec_state_dict=state)
    with pytest.raises(ValueError, match="float32"):
        load_codec(None, 8, dtype=torch.bfloat16, codec_config=TINY_MIMI, codec_state_dict=state)
    with pytest.raises(ValueError, match=r"num_codebooks must be in \[1, 8\]"):
        MimiCodec(codec.model, num_codebooks=9)


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "audio, match",
    [
        (torch.zeros(SPF - 1), "too short to encode: 1919 samples"),
        (torch.full((2 * SPF,), float("nan")), "NaN or infinite"),
        (torch.zeros(1, 2 * SPF), r"1-D float audio \[T\].*\(1, 3840\)"),
        (torch.zeros(2 * SPF, dtype=torch.int16), "1-D float audio"),
    ],
)
def test_encode_refuses_bad_audio(codec, audio, match):
    with pytest.raises(ValueError, match=match):
        codec.encode(audio)


@pytest.mark.parametrize(
    "bad_codes, match",
    [
        (torch.full((8, 3), 2048), "code 2048 is out of range"),
        (torch.full((8, 3), -1), "code -1 is out of range"),
        (torch.zeros(7, 3, dtype=torch.long), r"codes must be \[num_codebooks=8, frames >= 1\], got \(7, 3\)"),
        (torch.zeros(8, 0, dtype=torch.long), r"got \(8, 0\)"),
        (torch.zeros(8, dtype=torch.long), r"got \(8,\)"),
        (torch.zeros(8, 3), "must be integers"),
    ],
)
def test_decode_refuses_bad_codes(codec, bad_codes, match):
    with pytest.raises(ValueError, match=match):
        codec.decode(bad_codes)
    with pytest.raises(ValueError, match=match):
        codec.stream_decoder().decode(bad_codes)
