"""The Mimi codec: 24 kHz mono audio <-> frames of RVQ codes (12.5 frames/s), via transformers' MimiModel.

CSM speaks in Mimi codes: `num_codebooks` codes per 80 ms frame (1920 samples). `MimiCodec` is a
thin wrapper that checks its inputs and runs in float32 (the codec is small, and reduced
precision is audible). In the int8 modes (`load_codec(..., quantize=...)`), the Linears of its
transformers hold int8 weights, and on a CPU with bf16 arithmetic their inputs are rounded to bf16
(csm.quantize.Int8Linear): a trade made for memory, measured on random weights only.
`load_codec` builds one from the Hub ("kyutai/mimi") or from the codec a transformers-layout CSM
checkpoint carries.

Decoding streams: `MimiCodec.stream_decoder()` turns codes into audio chunk by chunk, and the
chunks, concatenated, are the one-shot decode (up to float rounding). See `MimiStreamDecoder`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import DynamicCache, MimiConfig, MimiModel
from transformers.models.mimi.modeling_mimi import MimiConv1d, MimiConvTranspose1d, MimiResnetBlock

from csm.hub import CheckpointError
from csm.limits import check_codec_config
from csm.loading import release_freed_memory
from csm.quantize import check_quantize, codec_int8_pays, quantize_codec_int8

DEFAULT_REPO = "kyutai/mimi"

# Mimi checkpoints (kyutai/mimi, and the `codec_model.` tensors of sesame/csm-1b) use the original
# flat module names; transformers 5 nests them under `encoder.` / `decoder.` halves. A name is
# renamed only when the model has no tensor by its own name, so either layout loads.
_CHECKPOINT_RENAMES = (
    ("encoder.layers.", "encoder.encoder_seanet.layers."),
    ("encoder_transformer.", "encoder.encoder_transformer."),
    ("downsample.", "encoder.downsample."),
    ("upsample.", "decoder.upsample."),
    ("decoder_transformer.", "decoder.decoder_transformer."),
    ("decoder.layers.", "decoder.decoder_seanet.layers."),
)


class MimiCodec:
    """Encode 1-D audio to codes [num_codebooks, F] and decode codes back to 1-D audio.

    Uses the first `num_codebooks` of Mimi's codebooks (CSM-1B uses all 32). Every method takes and
    returns tensors on `self.device`; inputs elsewhere are moved there.
    """

    def __init__(self, model: MimiModel, num_codebooks: int):
        config = model.config
        if not 1 <= num_codebooks <= config.num_quantizers:
            raise ValueError(f"num_codebooks must be in [1, {config.num_quantizers}], got {num_codebooks}")
        if config.audio_channels != 1:
            raise ValueError(f"CSM speaks mono audio, but this Mimi has {config.audio_channels} channels")
        self.model = model.eval().requires_grad_(False)
        self.num_codebooks = num_codebooks
        self.codebook_size = int(config.codebook_size)
        self.sample_rate = int(config.sampling_rate)
        self.frame_rate = float(config.frame_rate)
        self.samples_per_frame = round(self.sample_rate / self.frame_rate)
        hop = _decoder_hop(model)
        if self.samples_per_frame * self.frame_rate != self.sample_rate or hop != self.samples_per_frame:
            raise ValueError(
                f"inconsistent Mimi config: {self.sample_rate} Hz at {self.frame_rate} frames/s, "
                f"but the decoder makes {hop} samples per frame"
            )
        _fold_centroids(model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.no_grad()
    def encode(self, audio: Tensor) -> Tensor:
        """1-D audio at `sample_rate` -> codes [num_codebooks, F], int64.

        F = ceil(T / samples_per_frame): Mimi pads a last partial frame with zeros.
        """
        if not isinstance(audio, Tensor) or audio.dim() != 1 or not audio.is_floating_point():
            shape = tuple(audio.shape) if isinstance(audio, Tensor) else type(audio).__name__
            raise ValueError(f"encode expects 1-D float audio [T] (see csm.audio.to_mono), got {shape}")
        if audio.shape[0] < self.samples_per_frame:
            raise ValueError(
                f"audio is too short to encode: {audio.shape[0]} samples, but one Mimi frame is "
                f"{self.samples_per_frame} samples ({1000 / self.frame_rate:g} ms at {self.sample_rate} Hz)"
            )
        if not torch.isfinite(audio).all():
            raise ValueError("audio contains NaN or infinite samples")
        samples = audio.to(device=self.device, dtype=self.dtype)[None, None]  # [B=1, C=1, T]
        codes = self.model.encode(samples, num_quantizers=self.num_codebooks, return_dict=True).audio_codes
        return codes[0]

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """Codes [num_codebooks, F] -> 1-D float32 audio of F * samples_per_frame samples."""
        codes = self._check_codes(codes)
        return self.model.decode(codes[None], return_dict=True).audio_values[0, 0]

    def stream_decoder(self) -> MimiStreamDecoder:
        """A fresh streaming decoder; any number can run at once, each with its own state."""
        return MimiStreamDecoder(self)

    def _check_codes(self, codes: Tensor) -> Tensor:
        """Validate codes [num_codebooks, F >= 1] in [0, codebook_size); return them on `device`."""
        shaped = isinstance(codes, Tensor) and codes.dim() == 2 and codes.shape[0] == self.num_codebooks
        if not shaped or codes.shape[1] < 1:
            shape = tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
            raise ValueError(f"codes must be [num_codebooks={self.num_codebooks}, frames >= 1], got {shape}")
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise ValueError(f"codes must be integers, got {codes.dtype}")
        codes = codes.to(device=self.device, dtype=torch.long)
        out_of_range = (codes < 0) | (codes >= self.codebook_size)
        if out_of_range.any():  # the one host sync per call
            bad = int(codes[out_of_range][0])
            raise ValueError(f"code {bad} is out of range: Mimi codes are in [0, {self.codebook_size})")
        return codes


@torch.no_grad()
def _fold_centroids(model: MimiModel) -> None:
    """Store each codebook's centroids (embed_sum / cluster_usage) once, where both encoding and decoding read them.

    transformers computes them on first use and caches them beside embed_sum: Mimi's 32 codebooks
    would hold 67 MB twice. The same division, done once, goes into embed_sum (usage set to 1, so
    the ratio is unchanged) and the cache points at it: the same bits, and no second copy.

    A later `load_state_dict` folds the loaded sums again (a hook). The cache does not follow a move:
    move the model before wrapping it in a MimiCodec, or wrap it again after (which folds again).
    """
    for codebook in model.modules():
        if hasattr(codebook, "_embed") and hasattr(codebook, "embed_sum"):
            _fold(codebook)
            if not getattr(codebook, "_csm_refolds_on_load", False):
                codebook.register_load_state_dict_post_hook(lambda module, _: _fold(module))
                codebook._csm_refolds_on_load = True


@torch.no_grad()
def _fold(codebook: nn.Module) -> None:
    codebook._embed = None  # anything cached before a move or a load is stale
    codebook.embed_sum.copy_(codebook.embed)  # transformers' own rule computes them
    codebook.cluster_usage.fill_(1.0)
    codebook._embed = codebook.embed_sum.detach()  # the same memory (a plain tensor, not a second buffer)


class MimiStreamDecoder:
    """Decodes codes chunk by chunk: `decode(codes [N, f])` returns the f frames' f * samples_per_frame
    samples, and the chunks, concatenated, equal `MimiCodec.decode` of all the codes.

    Mimi's decoder is causal, so a frame's samples depend only on that frame and earlier ones.
    Each stage carries what crosses a chunk boundary:

    - quantizer (codes -> latents): per frame, no state.
    - transposed convs (the latent upsampling, and each SEANet upsampling): an input sample spreads
      over `kernel_size` outputs, so the last `kernel_size - stride` outputs of a chunk still await the
      next chunk's contributions. Mimi trims exactly those from the right of its one-shot output, so
      the first `length * stride` outputs are finished: they are emitted, and the unfinished tail is
      kept and added to the next chunk's head (overlap-add; the bias is added once, at emission).
    - decoder transformer: the KV cache (sliding window, as in one-shot decoding) and the position.
    - causal convs: the last `padding_total` inputs, where the one-shot path sees its left padding.
    - ELU and residual sums: per sample, no state.

    So every chunk is complete when returned; nothing is held back and there is nothing to flush.
    The state lives here, never in the codec's modules, so decoders can interleave.
    """

    def __init__(self, codec: MimiCodec):
        self.codec = codec
        self.upsample, self.transformer, self.seanet = _decoder_parts(codec.model)
        _check_streamable(self.upsample, self.seanet)
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next chunk is decoded as the start of new audio."""
        self._conv_inputs: dict[nn.Module, Tensor] = {}  # causal conv -> its last padding_total inputs
        self._overlap: dict[nn.Module, Tensor] = {}  # transposed conv -> its unfinished output tail
        self._kv_cache = DynamicCache(config=self.transformer.config)
        self._position = 0  # transformer steps seen (2 per frame for Mimi)

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """Codes [num_codebooks, f >= 1] -> the next f * samples_per_frame samples, 1-D float32."""
        codes = self.codec._check_codes(codes)
        hidden = self.codec.model.quantizer.decode(codes[None])  # [1, hidden, f]
        if self.upsample is not None:
            hidden = self._conv_transpose(self.upsample, hidden)
        hidden = self._transformer(hidden)
        for layer in self.seanet.layers:
            hidden = self._layer(layer, hidden)
        return hidden[0, 0]

    def _transformer(self, hidden: Tensor) -> Tensor:
        steps = hidden.shape[-1]
        positions = torch.arange(self._position, self._position + steps, device=hidden.device)[None]
        out = self.transformer(hidden.transpose(1, 2), position_ids=positions, cache=self._kv_cache, use_cache=True)
        self._position += steps
        return out.last_hidden_state.transpose(1, 2)

    def _layer(self, layer: nn.Module, x: Tensor) -> Tensor:
        if isinstance(layer, MimiConv1d):
            return self._causal_conv(layer, x)
        if isinstance(layer, MimiConvTranspose1d):
            return self._conv_transpose(layer, x)
        if isinstance(layer, MimiResnetBlock):
            h = x
            for sublayer in layer.block:
                h = self._layer(sublayer, h)
            return self._layer(layer.shortcut, x) + h
        return layer(x)  # ELU or Identity: per sample

    def _causal_conv(self, layer: MimiConv1d, x: Tensor) -> Tensor:
        context = int(layer.padding_total)  # (kernel_size - 1) * dilation; stride is 1 in the decoder
        past = self._conv_inputs.get(layer)
        if past is None:  # the start of the stream: what one-shot decoding pads with
            if layer.pad_mode == "replicate":
                past = x[..., :1].expand(-1, -1, context)
            else:
                past = x.new_zeros(*x.shape[:2], context)
        x = torch.cat([past, x], dim=-1)
        self._conv_inputs[layer] = x[..., x.shape[-1] - context :]
        return layer.conv(x)

    def _conv_transpose(self, layer: MimiConvTranspose1d, x: Tensor) -> Tensor:
        conv = layer.conv
        stride = conv.stride[0]
        y = F.conv_transpose1d(x, conv.weight, None, stride, groups=conv.groups)  # [B, C, (L-1)*stride + k]
        tail = self._overlap.get(layer)
        if tail is not None:
            y[..., : tail.shape[-1]] += tail
        finished = x.shape[-1] * stride
        self._overlap[layer] = y[..., finished:]
        y = y[..., :finished]
        return y if conv.bias is None else y + conv.bias[:, None]


# ---------------------------------------------------------------------------------------------
# Loading


def load_codec(
    name_or_path: str | None,
    num_codebooks: int,
    revision: str | None = None,
    device=None,
    dtype: torch.dtype | None = None,
    token: str | None = None,
    codec_state_dict: dict[str, Tensor] | None = None,
    codec_config: dict | MimiConfig | None = None,
    quantize: str | None = None,
) -> MimiCodec:
    """Build a MimiCodec on `device` (default CPU), in float32 (but see `quantize`).

    With `codec_config` and `codec_state_dict` (a CSM checkpoint's `config.json["codec_config"]`
    and its `codec_model.*` tensors with that prefix stripped), the codec is built from those and
    nothing is downloaded: a sizing value out of bounds (csm.limits) is a CheckpointError, and weights
    that do not fit the config a ValueError, both before the codec's memory is allocated. Otherwise
    `MimiModel.from_pretrained(name_or_path or "kyutai/mimi")`.
    `dtype` is there to refuse anything but float32 loudly: the codec is small, and bf16 is audible.
    `quantize` ("int8" or "int8-dynamic", as the CSM model's): int8 weights for the Linears of Mimi's
    transformers (csm.quantize.quantize_codec_int8), weight-only in both modes, where that is not slower
    (csm.quantize.codec_int8_pays: CUDA, or a CPU with bf16 arithmetic); elsewhere the codec stays float32.
    """
    quantize = check_quantize(quantize)
    device = torch.device(device if device is not None else "cpu")
    if dtype not in (None, torch.float32):
        raise ValueError(f"the codec runs in float32 (reduced precision is audible), got dtype={dtype}")
    dtype = torch.float32
    if (codec_state_dict is None) != (codec_config is None):
        raise ValueError("pass codec_config and codec_state_dict together (both come from the CSM checkpoint)")
    if codec_state_dict is not None:
        config = _checked_config(codec_config)
        # Build on the meta device first, to compare shapes before allocating: a config that does
        # not fit the weights must not get to allocate whatever it asks for.
        with torch.device("meta"):
            state = _matched_state(MimiModel(config), codec_state_dict)
        with torch.device(device):
            model = MimiModel(config).to(dtype)
        model.load_state_dict(state, strict=True)  # copies into the model's device and dtype
    else:
        source = name_or_path or DEFAULT_REPO
        try:
            model = MimiModel.from_pretrained(source, revision=revision, token=token, dtype=dtype)
        except OSError as e:  # transformers reports unreachable, missing and gated repos as OSError
            raise CheckpointError(
                f"cannot load the Mimi codec from {source}: {e}\nThis checkpoint does not carry the codec, so it "
                f"comes from {source}: connect to the Hub once (it is then cached), or pass a local folder."
            ) from e
        model = model.to(device=device, dtype=dtype)
    if quantize and codec_int8_pays(device):  # elsewhere the codec stays float32: int8 would be slower
        quantize_codec_int8(model)
        release_freed_memory()  # the float weights it replaced
    return MimiCodec(model, num_codebooks)


def _checked_config(codec_config: dict | MimiConfig) -> MimiConfig:
    """A MimiConfig from a checkpoint's `codec_config`, its sizes bounded (csm.limits) before anything is built."""
    if isinstance(codec_config, MimiConfig):
        return codec_config
    codec_config = check_codec_config(codec_config, "load_codec")
    try:
        return MimiConfig(**codec_config)
    except Exception as e:  # transformers' own checks: TypeError, ValueError or huggingface_hub's StrictDataclassError
        raise CheckpointError(f"the codec config is not a valid Mimi config: {e}") from e


def _matched_state(model: MimiModel, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """`state_dict` under `model`'s names (either layout); a ValueError names any missing, extra or misshapen tensor."""
    expected = model.state_dict()
    state = {}
    for name, tensor in state_dict.items():
        if name not in expected:
            for old, new in _CHECKPOINT_RENAMES:
                if name.startswith(old) and new + name[len(old) :] in expected:
                    name = new + name[len(old) :]
                    break
        state[name] = tensor
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{name} {tuple(state[name].shape)} != {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in state and state[name].shape != tensor.shape
    ]
    found = {"missing tensors": missing, "unexpected tensors": unexpected, "wrong shapes": wrong_shape}
    problems = [f"{what}: {_short_list(names)}" for what, names in found.items() if names]
    if problems:
        raise ValueError("the codec weights do not fit the codec config; " + "; ".join(problems))
    return state


def _short_list(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


# ---------------------------------------------------------------------------------------------
# The decoder's structure


def _decoder_parts(model: MimiModel) -> tuple[MimiConvTranspose1d | None, nn.Module, nn.Module]:
    """(latent upsampling or None, decoder transformer, SEANet decoder) of transformers' MimiModel."""
    decoder = model.decoder
    if decoder is None:
        raise ValueError("this Mimi was built without a decoder (decoder_config=None)")
    return decoder.upsample, decoder.decoder_transformer, decoder.decoder_seanet


def _decoder_hop(model: MimiModel) -> int:
    """Audio samples per code frame: the product of the decoder's upsampling strides."""
    upsample, _, seanet = _decoder_parts(model)
    hop = 1
    for module in ([upsample] if upsample is not None else []) + list(seanet.modules()):
        if isinstance(module, MimiConvTranspose1d):
            hop *= module.conv.stride[0]
    return hop


def _check_streamable(upsample: nn.Module | None, seanet: nn.Module) -> None:
    """Refuse, up front, a decoder whose one-shot output the stream decoder could not reproduce."""
    layers = list(_leaf_layers(seanet.layers)) + ([upsample] if upsample is not None else [])
    for layer in layers:
        if isinstance(layer, MimiConvTranspose1d):
            conv = layer.conv
            if layer.padding_left != 0 or conv.padding[0] or conv.output_padding[0] or conv.dilation[0] != 1:
                raise NotImplementedError("streaming needs causal transposed convs trimmed right (trim_right_ratio=1)")
        elif isinstance(layer, MimiConv1d):
            if not layer.causal or layer.conv.stride[0] != 1 or layer.pad_mode not in ("constant", "replicate"):
                raise NotImplementedError("streaming needs causal stride-1 convs padded with zeros or replicas")
        elif not isinstance(layer, (nn.ELU, nn.Identity)):
            raise NotImplementedError(f"streaming does not know how to carry state through {type(layer).__name__}")


def _leaf_layers(layers):
    """The SEANet's layers in the order `MimiStreamDecoder._layer` meets them, residual blocks opened."""
    for layer in layers:
        if isinstance(layer, MimiResnetBlock):
            yield from _leaf_layers([*layer.block, layer.shortcut])
        else:
            yield layer
