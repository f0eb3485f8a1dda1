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
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from csm.models import Model
from csm.packing import CodebookHeads, cpu_computes_bf16, swap_audio_head

QUANTIZE_CHOICES = ("int8", "int8-dynamic")
# What each choice covers, for anyone comparing outputs across versions (a bundle's manifest says it).
# "int8": 1, before 2026-11-26: the Linears and the audio heads; 2: the embedding tables as well; 3: and
# the Linears of the Mimi codec's transformers (quantize_codec_int8).
# "int8-dynamic": int8's scheme with int8 activations, per row on a symmetric grid, in DYNAMIC_SLOTS;
# 1: int8's scheme 2; 2: int8's scheme 3.
INT8_SCHEME = 3
QUANTIZE_SCHEMES = {"int8": INT8_SCHEME, "int8-dynamic": 2}
KERNEL_MAX_ROWS = 16  # above this many rows, converting the weight and one GEMM beat _weight_int8pack_mm (CPU)
KERNEL_ROW_MULTIPLE = 16  # torch's CPU bf16 kernel reads 16 input features at a time (and crashes on others)
CONVERT_BLOCK_ELEMENTS = 1 << 22  # CPU prefill: weights converted in blocks of this many (8 MB in bf16)
QUANTIZE_BLOCK_ELEMENTS = 1 << 24  # rows quantized together: a 64 MB fp32 temporary at most
DYNAMIC_BLOCK_ROWS = 64  # DynamicInt8Linear: rows per product in a prefill (fbgemm runs them near full speed)
SMALLEST_NORMAL = torch.finfo(torch.float32).tiny  # the divisor of an all-zero row (which stays zero)


def check_quantize(quantize: str | None, device: torch.device | None = None) -> str | None:
    """None (float weights) or one of QUANTIZE_CHOICES; anything else is a ValueError that lists them, as is
    "int8-dynamic" on a `device` that cannot run it (anything but a CPU with fbgemm and VNNI)."""
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be None or one of {list(QUANTIZE_CHOICES)}, got {quantize!r}")
    if quantize == "int8-dynamic" and device is not None and not (device.type == "cpu" and has_dynamic_int8_kernel()):
        where = "this CPU lacks AVX-512 VNNI or torch's fbgemm" if device.type == "cpu" else f"not on {device.type}"
        raise ValueError(
            f"quantize='int8-dynamic' runs only on a CPU with AVX-512 VNNI and torch's fbgemm ({where}; quantized "
            f"engine {torch.backends.quantized.engine!r}): use quantize='int8', or the CPU if it has them"
        )
    return quantize


def refuse_quantize_here(parser, quantize: str | None, device: str) -> None:
    """A command's check: a `quantize` its `--device` cannot run is an argparse usage error, not a traceback."""
    try:
        check_quantize(quantize, torch.device(device))
    except (ValueError, RuntimeError) as e:
        parser.error(f"--quantize {quantize}: {e}")


def quantize_scheme(quantize: str | None) -> int | None:
    """The version of what `quantize` covers (QUANTIZE_SCHEMES), None for float weights."""
    return QUANTIZE_SCHEMES.get(quantize) if quantize else None


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


@functools.cache
def has_dynamic_int8_kernel() -> bool:
    """Whether this CPU runs `DynamicInt8Linear` right: fbgemm (torch's "x86" or "fbgemm" engine) with
    VNNI-style int32 sums. Checked on the worst case, where 16-bit pair sums (CPUs before VNNI) saturate.
    False too where torch no longer has the quantized ops (it has marked quantized tensors deprecated)."""
    if torch.backends.quantized.engine not in ("x86", "fbgemm"):
        return False
    try:
        weight = torch.full((8, 4 * KERNEL_ROW_MULTIPLE), 0.5)
        got = DynamicInt8Linear(weight)(torch.ones(1, weight.shape[1]))
        return torch.allclose(got, torch.full_like(got, 0.5 * weight.shape[1]), rtol=1e-2)
    except (RuntimeError, NotImplementedError, AttributeError):  # a build without fbgemm, a torch without the ops
        return False


class DynamicInt8Linear(nn.Module):
    """A bias-free Linear with int8 weights (one scale per output channel) whose activations are quantized
    too, to 8 bits per row at run time, so that the product is int8 x int8 in fbgemm (CPU only).

    On a CPU with AVX-512 VNNI this reads the weight near memory speed, about 1.7x faster than
    `_weight_int8pack_mm` for the decoder's gate_up (bench/RESULTS.md), at the cost of a second rounding:
    each row's activations to the grid max|row| * k / 127, k = -127..127.

    fbgemm quantizes a whole input with one range (its min and max), which would tie the rows (the takes
    of a batch) together. Here each row is divided by its largest magnitude and a row [1, -128/127, 0...]
    is appended, so the range is the same whatever the rows, and its steps are exactly 1/127: every row
    is quantized alone, and a take's result does not depend on the others. The packed weight is fbgemm's,
    not a tensor: it stays on the CPU, and `state_dict()` refuses (quantize the float checkpoint at load).
    """

    def __init__(self, weight: Tensor):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        ints, scales = quantize_per_channel(weight, torch.float32)
        channels = torch.zeros(self.out_features, dtype=torch.long)
        # Without torch's notice that quantized tensors are deprecated: not the user's to act on.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*deprecated")
            quantized = torch._make_per_channel_quantized_tensor(ints, scales.double(), channels, 0)
        self.packed = torch.ops.quantized.linear_prepack(quantized, None)
        self.nbytes = ints.nbytes + scales.nbytes
        # fbgemm's range [-128/127, 1] over 255 steps: a step of 1/127 with zero at 128, so +-1 are exact.
        range_row = torch.zeros(1, self.in_features)
        range_row[0, :2] = torch.tensor([1.0, -128 / 127])[: self.in_features]
        self.register_buffer("range_row", range_row, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] <= DYNAMIC_BLOCK_ROWS:
            return self.product(rows).view(*x.shape[:-1], self.out_features)
        # A prefill's rows a block at a time, into the output: its float32 products whole would be
        # 20 MB for a 312-frame prompt's gate_up. The same bits, as each row is quantized alone.
        y = rows.new_empty(rows.shape[0], self.out_features)
        for start in range(0, rows.shape[0], DYNAMIC_BLOCK_ROWS):
            block = slice(start, start + DYNAMIC_BLOCK_ROWS)
            y[block] = self.product(rows[block])
        return y.view(*x.shape[:-1], self.out_features)

    def product(self, rows: Tensor) -> Tensor:
        """[M, in] -> [M, out] in the rows' dtype."""
        floats = rows.float()
        largest = torch.linalg.vector_norm(floats, ord=float("inf"), dim=1, keepdim=True).clamp_min_(SMALLEST_NORMAL)
        units = torch.cat([floats / largest, self.range_row])  # [M + 1, in]: each row's largest is +-1
        products = torch.ops.quantized.linear_dynamic(units, self.packed, False)[:-1]
        return products.mul_(largest).to(rows.dtype)  # in place: no second float32 copy

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        raise RuntimeError(
            "a model quantized with int8-dynamic has no state_dict (its packed weights are fbgemm's): save the "
            "float model, and load it with quantize='int8-dynamic'"
        )

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights and activations"


class DynamicInt8CodebookHeads(CodebookHeads):
    """Each head a DynamicInt8Linear [V, D]."""

    def __init__(self, audio_head: Tensor):
        super().__init__(DynamicInt8Linear(head.T) for head in audio_head)


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


# "int8-dynamic" quantizes the activations where fbgemm pays, the wide products with short rows, whose
# inputs come straight from an RMSNorm. On trained Llama-style weights those inputs can have outlier
# channels, which per-row rounding suffers from: measured on random weights only (bench/RESULTS.md).
# down_proj (the product of two activations, long-tailed), o_proj and the projection run as fast
# weight-only, so they stay weight-only: quantizing them too cost 3 dB more on random weights.
DYNAMIC_SLOTS = ("qkv_proj", "gate_up_proj", "codebook0_head")


def quantize_int8(model: Model, dynamic: bool = False) -> int:
    """Swap the Linears of both stacks, the projection, codebook0_head, audio_head and the two embedding
    tables for int8 ones; `dynamic`: those of DYNAMIC_SLOTS and the audio heads as DynamicInt8Linear.

    Returns how many were swapped. Each float weight is freed once its module is replaced (if nothing
    else holds it). Inference only. Call before `setup_caches`, or again after it: caches are untouched.
    Weights still on the meta device (a load in progress, csm.loading) are left for a later call.
    """
    modules = [model, *model.backbone.modules(), *model.decoder.modules()]
    slots = [
        (module, name)
        for module in modules
        for name, child in module.named_children()
        if isinstance(child, nn.Linear) and not child.weight.is_meta
    ]
    for module, name in slots:
        linear = DynamicInt8Linear if dynamic and name in DYNAMIC_SLOTS else Int8Linear
        setattr(module, name, linear(getattr(module, name).weight))
    tables = [
        name
        for name in ("text_embeddings", "audio_embeddings")
        if isinstance(getattr(model, name), nn.Embedding) and not getattr(model, name).weight.is_meta
    ]
    for name in tables:
        setattr(model, name, Int8Embedding(getattr(model, name).weight))
    heads = DynamicInt8CodebookHeads if dynamic else Int8CodebookHeads
    head_loaded = not (isinstance(model.audio_head, Tensor) and model.audio_head.is_meta)
    return len(slots) + len(tables) + (head_loaded and swap_audio_head(model, heads))


def codec_int8_pays(device: torch.device) -> bool:
    """Whether the float32 codec's int8 products run about as fast as its float ones here: on CUDA, and on a
    CPU with bf16 arithmetic (inputs rounded to bf16, int8_compute_dtype). Elsewhere torch's float32 int8
    kernel is scalar: a streamed frame of Mimi decoded about 3x slower than in float32."""
    return device.type == "cuda" or (device.type == "cpu" and cpu_computes_bf16())


def quantize_codec_int8(codec_model: nn.Module) -> int:
    """Swap the codec's bias-free Linears for Int8Linear (weight-only, in both int8 modes); returns how many.

    In Mimi those are the products of its two 8-layer transformers: 201 of its 317 MB of float32
    weights. Its convolutions and codebooks stay float32. Mimi adds each transformer layer's output
    through a learned scale, so their rounding reaches the audio damped (bench/RESULTS.md). On a CPU
    with bf16 arithmetic, calls of up to KERNEL_MAX_ROWS rows (a streamed chunk of up to 8 frames)
    also round their inputs to bf16; longer ones (a one-shot decode, an encode) keep them float32.
    """
    slots = [
        (module, name)
        for module in codec_model.modules()
        for name, child in module.named_children()
        if isinstance(child, nn.Linear) and child.bias is None
    ]
    for module, name in slots:
        setattr(module, name, Int8Linear(getattr(module, name).weight))
    return len(slots)
