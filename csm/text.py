"""Text tokenization for CSM: the Llama-3.2 tokenizer, loaded as a plain `tokenizers.Tokenizer`.

A conversation segment's text is `<|begin_of_text|>` + tokens of `"[{speaker}]{text}"` +
`<|end_of_text|>`. We add both markers ourselves instead of trusting the tokenizer's
post-processor, which differs between copies: Llama-3.2's adds only BOS, the reference CSM code
patches it to add BOS and EOS.

Where the tokenizer comes from:

* the transformers layout of sesame/csm-1b (and `csm.tiny`'s checkpoints) ship `tokenizer.json`
  next to the weights; it is used as is.
* the original layout ships no tokenizer: its code loads the one of meta-llama/Llama-3.2-1B,
  a gated repository. We fall back to `unsloth/Llama-3.2-1B`, an ungated copy of its
  `tokenizer.json` (same ids: `<|begin_of_text|>` = 128000, `<|end_of_text|>` = 128001).
  Pass `fallback="meta-llama/Llama-3.2-1B"` to use the original (log in first), a local folder,
  or `fallback=None` to never fall back.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from csm import hub

DEFAULT_FALLBACK = "unsloth/Llama-3.2-1B"
TOKENIZER_FILE = "tokenizer.json"
BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"


class TokenizerError(RuntimeError):
    """No usable text tokenizer. The message says what was tried and what to do."""


def load_text_tokenizer(
    name_or_path: str | Path,
    revision: str | None = None,
    token: str | None = None,
    fallback: str | Path | None = DEFAULT_FALLBACK,
) -> Tokenizer:
    """The `tokenizer.json` of a local folder or Hub repo, else of `fallback` (see the module docstring)."""
    candidates = [(str(name_or_path), revision)]
    if fallback and str(fallback) != str(name_or_path):
        candidates.append((str(fallback), None))  # the model's revision means nothing in another repo
    failures, cache_only = [], False
    for source, rev in candidates:
        try:
            return Tokenizer.from_file(str(_tokenizer_file(source, rev, token, cache_only)))
        except _NotHere as e:
            failures.append(f"- {source}: {e}")
            # Without a network each Hub try waits through ~25 s of retries: do it once, then use the cache.
            cache_only = cache_only or e.hub_unreachable
    no_fallback = "" if fallback else f" (no fallback was tried: pass fallback={DEFAULT_FALLBACK!r})"
    raise TokenizerError(
        "no text tokenizer found. Tried:\n" + "\n".join(failures) + "\n"
        f"To fix: pass a local folder that holds {TOKENIZER_FILE}{no_fallback}, or reach the Hub once "
        "(HF_HUB_OFFLINE unset) so the file gets cached; gated or private repositories also need you "
        "to log in (set HF_TOKEN or run `hf auth login`)."
    )


class _NotHere(Exception):
    """One place that has no usable tokenizer.json; the message says why."""

    def __init__(self, why: str, hub_unreachable: bool = False):
        super().__init__(why)
        self.hub_unreachable = hub_unreachable


def _tokenizer_file(source: str, revision: str | None, token: str | None, cache_only: bool = False) -> Path:
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / TOKENIZER_FILE).is_file():
            return path / TOKENIZER_FILE
        raise _NotHere(f"the folder has no {TOKENIZER_FILE} (an original-layout checkpoint?)")
    if path.is_file() and path.suffix == ".json":
        return path
    if hub.looks_like_path(source):
        raise _NotHere("no such folder")
    try:
        return hub.download(source, TOKENIZER_FILE, revision=revision, token=token, cache_only=cache_only)
    except hub.HubFileError as e:
        hint = " (an original-layout checkpoint?)" if e.reason == hub.NO_FILE else ""
        raise _NotHere(e.why + hint, hub_unreachable=e.hub_unreachable) from None


class TextTokenizer:
    """Encodes CSM text segments: `[bos] + "[speaker]text" + [eos]`.

    Takes over `tokenizer`: it sets `encode_special_tokens`, so marker-like text in user input
    is encoded as text.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        # Text like "<|end_of_text|>" typed by a user stays plain text, never a second marker.
        self.tokenizer.encode_special_tokens = True
        self.bos_id = _token_id(tokenizer, BOS)
        self.eos_id = _token_id(tokenizer, EOS)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, revision=None, token=None, fallback=DEFAULT_FALLBACK):
        return cls(load_text_tokenizer(name_or_path, revision=revision, token=token, fallback=fallback))

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` alone: no BOS/EOS, whatever the post-processor would add."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_segment(self, speaker: int, text: str) -> list[int]:
        return [self.bos_id, *self.encode(f"[{speaker}]{text}"), self.eos_id]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


def _token_id(tokenizer: Tokenizer, token: str) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise TokenizerError(f"the tokenizer has no {token} token: it is not a Llama-3 tokenizer.")
    return token_id
