"""int8 weight-only quantization: the big matrices held as int8 with one scale per output channel.

gpt-fast style, as a module swap after loading: `quantize_int8(model)` replaces every Linear of the
two transformer stacks, the projection and codebook0_head with an `Int8Linear`, the depth
decoder's `audio_head` [N-1, D, V] with `Int8CodebookHeads`, and the text and audio embedding
tables with `Int8Embedding` (one scale per row), freeing each float weight as it goes.
Activations stay in the model's dtype. A decode step is batch-1 matrix-vector products whose time is
the time to stream the weights, so int8 halves it against bf16 (CPU: `bench/RESULTS.md`).

The products use torch's own kernels: `_weight_int8pack_mm` for the few rows of a decode step, and
for the hundreds of rows of a prefill (where that kernel is several times slower than a matrix
product) the int8 weight converted to the activations' dtype, then `F.linear`.
"""

from __future__ import annotations

import functools
import threading

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from csm.models import Model
from csm.packing import CodebookHeads, cpu_computes_bf16, swap_audio_head

QUANTIZE_CHOICES = ("int8",)
# What "int8" covers, for anyone comparing outputs across versions (a bundle's manifest says it):
# 1, before 2026-11-26: the Linears and the audio heads; 2: the embedding tables as well.
INT8_SCHEME = 2
KERNEL_MAX_ROWS = 16  # above this many rows, converting the weight and one GEMM beat _weight_int8pack_mm (CPU)
KERNEL_ROW_MULTIPLE = 16  # torch's CPU bf16 kernel reads 16 input features at a time (and crashes on others)
CONVERT_BLOCK_ELEMENTS = 1 << 22  # CPU prefill: weights converted in blocks of this many (8 MB in bf16)
QUANTIZE_BLOCK_ELEMENTS = 1 << 24  # rows quantized together: a 64 MB fp32 temporary at most


def check_quantize(quantize: str | None) -> str | None:
    """None (float weights) or one of QUANTIZE_CHOICES; anything else is a ValueError that lists them."""
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be None or one of {list(QUANTIZE_CHOICES)}, got {quantize!r}")
    return quantize


def quantize_per_channel(weight: Tensor, scale_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """[out, in] float weight -> int8 [out, in] and scales [out] in `scale_dtype`: symmetric, per output row.

    Each row's largest magnitude maps to 127. Rounding uses the scale as stored (in `scale_dtype`), so
    every weight is off by at most half a step: |w - q * scale| <= scale / 2.
    """
    ints = torch.empty(weight.shape, dtype=torch.int8, device=weight.device)
    scales = torch.empty(weight.shape[0], dtype=scale_dtype, device=weight.device)
    # A block of rows at a time: the fp32 copy of a whole embedding table would be 1 GB at load time.
    step = max(1, QUANTIZE_BLOCK_ELEMENTS // max(1, weight.shape[1]))
    for start in range(0, weight.shape[0], step):
        rows = slice(start, start + step)
        ints[rows], scales[rows] = _quantize_rows(weight[rows], scale_dtype)
    return ints, scales


def _quantize_rows(weight: Tensor, scale_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    # A contiguous fp32 copy (the audio heads arrive transposed), then worked on in place: half the
    # load time of allocating a temporary per step.
    weight = weight.detach().to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    largest = torch.linalg.vector_norm(weight, ord=float("inf"), dim=1)
    scales = torch.where(largest > 0, largest / 127, 1.0).to(scale_dtype)  # an all-zero row: any scale
    ints = weight.div_(scales.float()[:, None]).round_().clamp_(-127, 127).to(torch.int8)
    return ints, scales


def int8_compute_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The activation dtype of the int8 products: on a CPU with bf16 instructions, fp32 activations are
    rounded to bf16 for the product, as torch's fp32 kernel is scalar (about 6x slower there)."""
    if device.type == "cpu" and dtype == torch.float32 and cpu_computes_bf16():
        return torch.bfloat16
    return dtype


@functools.cache
def has_int8_kernel(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `_weight_int8pack_mm` runs, and right, on this device in this dtype (checked on a tiny one)."""
    try:
        x = torch.linspace(-1, 1, 2 * KERNEL_ROW_MULTIPLE, device=device).view(2, -1).to(dtype)
        weight = (torch.arange(8 * KERNEL_ROW_MULTIPLE, device=device) % 25 - 12).to(torch.int8).view(8, -1)
        scales = torch.full((8,), 0.5, device=device, dtype=dtype)
        got = torch.ops.aten._weight_int8pack_mm(x, weight, scales).float()
        return torch.allclose(got, (x.float() @ weight.float().T) * 0.5, atol=0.05, rtol=0.02)
    except (RuntimeError, NotImplementedError):  # no kernel for this device or dtype in this build
        return False


# CPU: one buffer per thread for the converted weight. A fresh 64 MB tensor costs ten times the
# conversion itself in page faults; on CUDA the caching allocator already reuses memory (and a
# buffer that grew would move under a captured graph).
_conversion_buffers = threading.local()


def converted(weight: Tensor, dtype: torch.dtype) -> Tensor:
    """The int8 `weight` as `dtype` (exact: |q| <= 127), in a reused buffer on the CPU."""
    if weight.device.type != "cpu":
        return weight.to(dtype)
    buffers = _conversion_buffers.__dict__.setdefault("by_dtype", {})
    buffer = buffers.get(dtype)
    if buffer is None or buffer.numel() < weight.numel():
        with torch.inference_mode(False):  # a normal tensor: writable in and out of inference mode
            buffer = buffers[dtype] = torch.empty(weight.numel(), dtype=dtype)
    return buffer[: weight.numel()].view(weight.shape).copy_(weight)


class Int8Linear(nn.Module):
    """A bias-free Linear whose weight [out, in] is int8, with one scale per output channel.

    `weight` and `scales` are buffers, so the quantized model's state_dict holds them (1 byte per
    weight); it cannot be loaded back into a float model.
    """

    def __init__(self, weight: Tensor):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.compute_dtype = int8_compute_dtype(weight.device, weight.dtype)
        ints, scales = quantize_per_channel(weight, self.compute_dtype)
        self.register_buffer("weight", ints)
        self.register_buffer("scales", scales)
        self.use_kernel = self.in_features % KERNEL_ROW_MULTIPLE == 0 and has_int8_kernel(
            weight.device, self.compute_dtype
        )

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features)
        if self.use_kernel and rows.shape[0] <= KERNEL_MAX_ROWS:
            rows = rows.to(self.compute_dtype).contiguous()
            y = torch.ops.aten._weight_int8pack_mm(rows, self.weight, self.scales).to(x.dtype)
        else:
            y = self.converted_product(rows)
        return y.view(*x.shape[:-1], self.out_features)

    def converted_product(self, rows: Tensor) -> Tensor:
        """[M, in] -> [M, out] through the weight converted to the rows' dtype: on the CPU a block of output
        channels at a time, so that the reused buffer stays small (8 MB in bf16, not a whole 64 MB weight)."""
        scales = self.scales.to(rows.dtype)
        if rows.device.type != "cpu":
            return F.linear(rows, converted(self.weight, rows.dtype)) * scales
        step = max(1, CONVERT_BLOCK_ELEMENTS // self.in_features)
        blocks = [F.linear(rows, converted(weight, rows.dtype)) for weight in self.weight.split(step)]
        return (blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=-1)) * scales

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


class Int8CodebookHeads(CodebookHeads):
    """Each head an Int8Linear [V, D]: one scale per (codebook, vocabulary entry)."""

    def __init__(self, audio_head: Tensor):
        super().__init__(Int8Linear(head.T) for head in audio_head)


class Int8Embedding(nn.Module):
    """An embedding table [rows, dim] as int8 with one scale per row; a looked-up row comes back in `dtype`.

    The two tables are a quarter of CSM-1B's weights (text 128256 x 2048, audio 32 x 2051 x 2048), and
    a frame reads only its 33 rows, so holding them as int8 saves memory at no cost in speed.
    """

    def __init__(self, weight: Tensor):
        super().__init__()
        self.num_embeddings, self.embedding_dim = weight.shape
        self.dtype = weight.dtype
        ints, scales = quantize_per_channel(weight, weight.dtype)
        self.register_buffer("weight", ints)
        self.register_buffer("scales", scales)

    def forward(self, ids: Tensor) -> Tensor:
        # Exact for |q| <= 127, then one rounding in `dtype`, as a dequantized weight would give.
        return F.embedding(ids, self.weight).to(self.dtype) * F.embedding(ids, self.scales[:, None])

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 weights"


def quantize_int8(model: Model) -> int:
    """Swap the Linears of both stacks, the projection, codebook0_head, audio_head and the two embedding
    tables for int8 ones.

    Returns how many were swapped. Each float weight is freed once its module is replaced (if nothing
    else holds it). Inference only. Call before `setup_caches`, or again after it: caches are untouched.
    """
    modules = [model, *model.backbone.modules(), *model.decoder.modules()]
    slots = [
        (module, name) for module in modules for name, child in module.named_children() if isinstance(child, nn.Linear)
    ]
    for module, name in slots:
        setattr(module, name, Int8Linear(getattr(module, name).weight))
    tables = [
        name for name in ("text_embeddings", "audio_embeddings") if isinstance(getattr(model, name), nn.Embedding)
    ]
    for name in tables:
        setattr(model, name, Int8Embedding(getattr(model, name).weight))
    return len(slots) + len(tables) + swap_audio_head(model, Int8CodebookHeads)
