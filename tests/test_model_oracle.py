"""Our CSM equals transformers' CsmForConditionalGeneration (an independent implementation) in fp32."""

import pytest
import torch

from csm.loading import load_model, resolve_checkpoint
from csm.models import Model
from tests.oracle import (
    AUDIO_VOCAB,
    CONFIGS,
    build_oracle,
    oracle_embeds,
    our_frames,
    save_original_layout,
    save_transformers_layout,
)

NUM_FRAMES = 20


def prompt_parts(num_codebooks: int, with_audio: bool, seed: int = 1) -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    text = ("text", torch.randint(5, 100, (9,), generator=g))
    if not with_audio:
        return [text]
    # A context turn: its text, its audio frames, then the all-zero end-of-audio frame; then the target text.
    codes = torch.randint(1, AUDIO_VOCAB - 3, (6, num_codebooks), generator=g)
    codes = torch.cat([codes, torch.zeros(1, num_codebooks, dtype=torch.long)])
    target = ("text", torch.randint(5, 100, (5,), generator=g))
    return [text, ("audio", codes), target]


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request, tmp_path_factory):
    oracle = build_oracle(request.param)
    folder = save_transformers_layout(oracle, tmp_path_factory.mktemp(request.param))
    ours = Model.from_pretrained(str(folder), device="cpu", dtype=torch.float32)
    return request.param, oracle, ours


def our_greedy_frames(model: Model, tokens, mask, num_frames: int) -> torch.Tensor:
    model.setup_caches(tokens.shape[0])
    pos = torch.arange(tokens.shape[1])[None].expand(tokens.shape[0], -1)
    frames = []
    for _ in range(num_frames):
        frame = model.generate_frame(tokens, mask, pos, temperature=0.9, topk=1)
        frames.append(frame)
        # Feed the frame back: its audio columns present, the text column empty.
        tokens = torch.cat([frame, torch.zeros_like(frame[:, :1])], dim=1)[:, None]
        mask = torch.ones_like(tokens, dtype=torch.bool)
        mask[..., -1] = False
        pos = pos[:, -1:] + 1
    return torch.stack(frames, dim=1)


def oracle_greedy_frames(oracle, parts, num_frames: int) -> torch.Tensor:
    kwargs = dict(do_sample=False, depth_decoder_do_sample=False, max_new_tokens=num_frames)
    with torch.no_grad():
        if all(kind == "text" for kind, _ in parts):
            ids = torch.cat([v for _, v in parts])[None]
            return oracle.generate(input_ids=ids, **kwargs)
        return oracle.generate(inputs_embeds=oracle_embeds(oracle, parts), **kwargs)


@pytest.mark.parametrize("with_audio", [False, True], ids=["text-prompt", "audio-prompt"])
def test_backbone_and_decoder_logits_match(pair, with_audio):
    _, oracle, ours = pair
    n = oracle.config.num_codebooks
    parts = prompt_parts(n, with_audio)
    tokens, mask = our_frames(parts, n)
    ours.setup_caches(1)
    with torch.no_grad():
        hidden = ours.backbone_hidden(tokens, mask, torch.arange(tokens.shape[1])[None])
        logits = ours.codebook0_head(hidden)
        expected_hidden = oracle.backbone_model(inputs_embeds=oracle_embeds(oracle, parts)).last_hidden_state
        expected = oracle.lm_head(expected_hidden)
    assert logits.shape == expected.shape == (1, tokens.shape[1], AUDIO_VOCAB)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)
    assert expected.std() > 0.1  # the comparison means something: logits are far from flat

    codes = torch.randint(0, AUDIO_VOCAB, (3, n), generator=torch.Generator().manual_seed(2))
    last = expected_hidden[0, -3:]
    ours.setup_caches(3)
    with torch.no_grad():
        dec = ours.decoder_logits(last, codes)
        dec_expected = oracle.depth_decoder(
            input_ids=torch.nn.functional.pad(codes[:, :-1], (1, 0)), backbone_last_hidden_state=last
        ).logits
    assert dec.shape == dec_expected.shape == (3, n - 1, AUDIO_VOCAB)
    torch.testing.assert_close(dec, dec_expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("with_audio", [False, True], ids=["text-prompt", "audio-prompt"])
def test_greedy_frames_equal_transformers_generate(pair, with_audio):
    _, oracle, ours = pair
    n = oracle.config.num_codebooks
    parts = prompt_parts(n, with_audio)
    expected = oracle_greedy_frames(oracle, parts, NUM_FRAMES)
    tokens, mask = our_frames(parts, n)
    got = our_greedy_frames(ours, tokens, mask, NUM_FRAMES)
    # transformers stops early at an all-zero frame; a random model should not produce one.
    assert expected.shape == (1, NUM_FRAMES, n)
    assert torch.equal(got, expected)
    assert len(torch.unique(got[..., 0])) > 1  # not a degenerate constant stream


@pytest.mark.parametrize("as_pickle", [False, True], ids=["safetensors", "pt"])
def test_original_layout_gives_identical_frames(pair, tmp_path, as_pickle):
    name, oracle, ours = pair
    folder = save_original_layout(oracle, tmp_path / "original", as_pickle=as_pickle)
    original = Model.from_pretrained(str(folder), device="cpu", dtype=torch.float32)
    # Every tensor equal: compared unpacked, as packed Linears are not in a state dict.
    plain = [
        load_model(resolve_checkpoint(str(f)), device="cpu", dtype=torch.float32, pack_weights=False).state_dict()
        for f in (folder, save_transformers_layout(oracle, tmp_path / "transformers"))
    ]
    assert plain[0].keys() == plain[1].keys() and len(plain[0]) > 10
    for k in plain[0]:
        assert torch.equal(plain[0][k], plain[1][k]), k
    n = oracle.config.num_codebooks
    tokens, mask = our_frames(prompt_parts(n, with_audio=True), n)
    assert torch.equal(our_greedy_frames(original, tokens, mask, 8), our_greedy_frames(ours, tokens, mask, 8))


def test_batch_rows_are_independent(pair):
    """Two different prompts of the same length in one batch give each its own single-row result."""
    _, _, ours = pair
    n = ours.num_codebooks
    rows = [our_frames(prompt_parts(n, with_audio=True, seed=s), n) for s in (3, 4)]
    tokens, mask = torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])
    pos = torch.arange(tokens.shape[1])[None].expand(2, -1)
    ours.setup_caches(2)
    batched = ours.generate_frame(tokens, mask, pos, temperature=1.0, topk=1)
    for i, (t, m) in enumerate(rows):
        ours.setup_caches(1)
        single = ours.generate_frame(t, m, pos[:1], temperature=1.0, topk=1)
        assert torch.equal(batched[i : i + 1], single)
