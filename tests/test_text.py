"""csm.text: segment encoding and the errors when no tokenizer can be had (all offline)."""

import pytest

from csm.text import DEFAULT_FALLBACK, TextTokenizer, TokenizerError, load_text_tokenizer
from csm.tiny import build_tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    build_tiny_tokenizer().save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def tokenizer(tokenizer_folder):
    return TextTokenizer.from_pretrained(tokenizer_folder, fallback=None)


def test_encode_segment_has_one_bos_first_and_one_eos_last(tokenizer):
    ids = tokenizer.encode_segment(1, "Hello there")
    assert ids[0] == tokenizer.bos_id and ids[-1] == tokenizer.eos_id
    # The tiny tokenizer's post-processor adds BOS/EOS too (like sesame/csm-1b's): none doubled.
    assert ids.count(tokenizer.bos_id) == 1 and ids.count(tokenizer.eos_id) == 1
    assert tokenizer.decode(ids[1:-1]) == "[1]Hello there"
    assert tokenizer.decode(ids) == "[1]Hello there"  # specials skipped


def test_marker_text_typed_by_a_user_stays_text(tokenizer):
    ids = tokenizer.encode_segment(0, "say <|end_of_text|> now")
    assert ids.count(tokenizer.eos_id) == 1
    assert tokenizer.decode(ids[1:-1], skip_special_tokens=False) == "[0]say <|end_of_text|> now"


def test_tokenizer_json_file_path_is_accepted(tokenizer_folder):
    assert load_text_tokenizer(tokenizer_folder / "tokenizer.json", fallback=None).token_to_id("<|end_of_text|>")


def test_falls_back_when_the_model_folder_has_no_tokenizer(tmp_path, tokenizer_folder):
    loaded = load_text_tokenizer(tmp_path, fallback=str(tokenizer_folder))
    assert loaded.token_to_id("<|begin_of_text|>") is not None


def test_no_tokenizer_and_unreachable_fallback_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerError) as error:
        load_text_tokenizer(tmp_path, fallback=str(tmp_path / "missing"))
    message = str(error.value)
    assert str(tmp_path) in message and "no tokenizer.json" in message
    assert "missing: no such folder" in message
    assert "HF_TOKEN" in message and "local folder" in message


def test_offline_hub_fallback_says_so(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import time by huggingface_hub
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))  # an empty cache
    with pytest.raises(TokenizerError) as error:
        load_text_tokenizer(tmp_path)  # default fallback: a Hub repo
    message = str(error.value)
    assert DEFAULT_FALLBACK in message and "HF_HUB_OFFLINE" in message and "HF_TOKEN" in message


def test_tokenizer_without_llama3_markers_is_rejected():
    from tokenizers import Tokenizer, models

    with pytest.raises(TokenizerError, match="<|begin_of_text|>"):
        TextTokenizer(Tokenizer(models.WordLevel({"a": 0}, unk_token="a")))
