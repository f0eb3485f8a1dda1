"""CPU weight packing: the model's Linears swapped for oneDNN-packed ones, ~1.5x faster batch-1 decode.

Kept apart from csm.models, which is the plain model: packing is an inference-time optimisation
that `csm.loading.load_model` applies (pack_weights=True) to each weight as soon as it is read.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import torch
import torch.nn as nn
from torch import Tensor

from csm.models import Model


class PackedLinear(nn.Module):
    """A bias-free Linear whose weight oneDNN has reordered into its blocked layout (CPU only).

    Same bytes as the weight, but batch-1 products stream them about 1.5x faster than `F.linear`
    on the plain layout, and a decode step is nothing but such products. bf16 results are
    bit-identical to `F.linear`; fp32 ones differ in the last bits (summation order). The packed
    weight is not a parameter, so a packed model's state_dict leaves it out: load with
    `pack_weights=False` to get a model to save or train.
    """

    def __init__(self, weight: Tensor):
        super().__init__()
        self.out_features, self.in_features = weight.shape  # [out, in], as nn.Linear's
        self.nbytes = weight.nbytes
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), 1)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, self.in_features), self.packed, None, "none", [], "")
        return y.view(*x.shape[:-1], self.out_features)


class CodebookHeads(nn.Module):
    """The depth decoder's audio heads, `audio_head` [N-1, D, V], as one Linear-like module [V, D] per head.

    `model.codebook_logits` calls `heads(hidden, i)` where the plain model computes `hidden @ audio_head[i]`.
    """

    def __init__(self, heads):
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def forward(self, hidden: Tensor, index: int) -> Tensor:
        return self.heads[index](hidden)


class PackedCodebookHeads(CodebookHeads):
    """Each head packed as a Linear (CPU only): 31 of them a frame read 130 MB in bf16, and packed they
    stream about 1.5x faster (bit-identical in bf16)."""

    def __init__(self, audio_head: Tensor):
        super().__init__(PackedLinear(head.T) for head in audio_head)


def swap_audio_head(model: Model, make_heads) -> bool:
    """Replace the float `audio_head` [N-1, D, V] with `make_heads(audio_head)`; False if it was swapped already."""
    if not isinstance(model.audio_head, Tensor):
        return False
    heads = make_heads(model.audio_head)
    del model.audio_head  # a Parameter: unregister it before a module takes the name
    model.audio_head = heads
    return True


@functools.cache  # the CPU does not change while the process runs: ask once
def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX-512 BF16 or AMX) and this torch's oneDNN uses them."""
    flags = _cpu_flags()
    has_instructions = bool(flags.get("avx512_bf16") or flags.get("amx_bf16"))
    return has_instructions and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _cpu_flags() -> dict:
    if hasattr(torch.cpu, "get_capabilities"):  # cpuinfo's view, on every OS (recent torch)
        return dict(torch.cpu.get_capabilities())
    try:  # older torch: Linux's view
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    found = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return {flag: True for flag in found.group(1).split()} if found else {}


@functools.cache  # the build and the CPU do not change while the process runs: probe once per dtype
def can_pack_linear(dtype: torch.dtype) -> bool:
    """Whether this build and CPU run oneDNN-packed products in `dtype` (checked on a tiny one)."""
    if not torch.backends.mkldnn.is_available() or dtype not in (torch.float32, torch.bfloat16):
        return False
    if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    try:
        # On the CPU whatever the default device (a cached False would stop packing for the process).
        probe = nn.Linear(16, 8, bias=False, dtype=dtype, device="cpu")
        x = torch.ones(2, 16, dtype=dtype, device="cpu")
        return torch.allclose(PackedLinear(probe.weight)(x).float(), probe(x).float(), atol=1e-2)
    except (RuntimeError, AttributeError):
        return False


def packable(weight: Tensor) -> bool:
    """A loaded CPU weight in a dtype oneDNN packs here (not one still on the meta device, mid-load)."""
    return not weight.is_meta and weight.device.type == "cpu" and can_pack_linear(weight.dtype)


def pack_linear_weights(model: Model, decoder: bool = True) -> int:
    """CPU: swap the transformer stacks' and the projection's Linears for PackedLinear, and the audio heads for
    PackedCodebookHeads; returns how many. `decoder=False` leaves the depth decoder's stack and the projection
    plain, for csm.compiling to copy first.

    Inference only (no autograd through packed weights). Leaves alone what oneDNN cannot run, and weights
    still on the meta device: `csm.loading` calls this after each tensor it reads.
    """
    # codebook0_head stays a Linear: it is small, one product per frame.
    modules = [model, *model.backbone.modules(), *(model.decoder.modules() if decoder else [])]
    slots = [
        (module, name)
        for module in modules
        for name, child in module.named_children()
        if isinstance(child, nn.Linear)
        and (module is not model or (name == "projection" and decoder))
        and packable(child.weight)
    ]
    for module, name in slots:
        setattr(module, name, PackedLinear(getattr(module, name).weight))
    # The heads: 31 products a frame, as many bytes as a decoder layer's MLP.
    heads = isinstance(model.audio_head, Tensor) and packable(model.audio_head)
    return len(slots) + (heads and swap_audio_head(model, PackedCodebookHeads))
