"""CPU, opt-in: one take's depth-decoder step compiled by inductor: bf16 frames about 1.5x faster than eager.

A frame runs the depth decoder 31 times. Eager, each step is 17 batch-1 products in oneDNN and dozens of
small ops (norms, rope, residual adds, SiLU) between them. Compiled here with freezing and max-autotune,
inductor fuses the small ops into C++ loops and picks, per product, its own C++ GEMM template over the
weights it prepacks (faster than oneDNN's for a batch of one, where it can run); with its C++ wrapper a
step is one call. The compiled step is a twin of the decoder: plain copies of its Linears and its own
one-row, 32-slot caches, so its single compiled shape never changes whatever the model's caches do
(several takes re-create them); steps of several takes run the model's own eager decoder.

Why opt-in (`load_model(..., compile_decoder=True)`): the fused ops round differently, so its codes
differ from eager's for the same seed (a session records which made it); it needs a C++ compiler at run
time; compiling takes about 26 s at load (2 cores); and the twin's weights and the compiled ones cost
about 0.5 GB more peak memory for CSM-1B in bf16 (bench/RESULTS.md). If compiling or running the compiled step fails, for any reason, eager steps
take over with one log line: the model is then the default one.
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn as nn
from torch import Tensor

from csm.models import Model, Transformer
from csm.packing import pack_linear_weights

log = logging.getLogger("csm")

# freezing: the weights are constants, which inductor prepacks; max_autotune with the CPP backend: its own
# GEMM template where it wins (timed at compile time, its tables not printed); cpp_wrapper: one C++ call.
INDUCTOR_OPTIONS = {
    "freezing": True,
    "cpp_wrapper": True,
    "max_autotune": True,
    "max_autotune_gemm_backends": "CPP,ATEN",
    "autotune_num_choices_displayed": 0,
}


class DecoderTwin(nn.Module):
    """The depth decoder and the projection, plain and with their own one-row caches: what is compiled."""

    def __init__(self, decoder: Transformer, projection: nn.Linear, num_codebooks: int):
        super().__init__()
        self.decoder, self.projection = decoder, projection
        self.decoder.attend_written_only = False  # all 32 slots, masked: static shapes
        weight = projection.weight
        self.decoder.setup_cache(1, num_codebooks, weight.dtype, weight.device)

    def forward(self, inputs: Tensor, positions: Tensor) -> Tensor:
        """One position: inputs [1, 1, D] at positions [1, 1] -> the decoder's state [1, D_dec]."""
        return self.decoder(self.projection(inputs), positions)[:, -1]


class CompiledDecoderStep:
    """`Model.decoder_step` for one take, compiled: installed as the model's `decoder_step`."""

    def __init__(self, model: Model, twin: DecoderTwin):
        self.model, self.twin = model, twin
        self.compiled = torch.compile(twin, dynamic=False, fullgraph=True)
        self.failed = False

    def __call__(self, inputs: Tensor, positions: Tensor) -> Tensor:
        hidden = self.run_compiled(inputs, positions) if not self.failed and inputs.shape[0] == 1 else None
        # Several takes, or a failure: the model's own eager step.
        return Model.decoder_step(self.model, inputs, positions) if hidden is None else hidden

    def run_compiled(self, inputs: Tensor, positions: Tensor) -> Tensor | None:
        """The twin's steps, a position at a time (a frame's first step has two), so one compiled shape serves
        them all; None if that failed (for any reason: eager is slower, but the request goes on)."""
        try:
            for i in range(inputs.shape[1]):
                hidden = self.compiled(standard(inputs[:, i : i + 1]), standard(positions[:, i : i + 1]))
            return hidden
        except Exception as error:
            self.give_up(error)
            return None

    def give_up(self, error: Exception) -> None:
        """From now on the model is the default one. The steps of this frame so far are in the twin's caches:
        the model's decoder gets them, so a frame broken off midway goes on from where it was."""
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        log.warning("The compiled depth-decoder step failed (%s: %s); it runs eagerly from now on",
                    type(error).__name__, first_line)  # fmt: skip
        self.failed = True
        if self.model.decoder.layers[0].attn.kv_cache is not None:
            for ours, twins in zip(self.model.decoder.layers, self.twin.decoder.layers):
                ours.attn.kv_cache.k[:1].copy_(twins.attn.kv_cache.k)
                ours.attn.kv_cache.v[:1].copy_(twins.attn.kv_cache.v)
        del self.model.decoder_step  # the model's own method again
        # Dynamo's cache of compiled code may still hold the twin's weights: they are not all given back.
        self.twin = self.compiled = None


def standard(t: Tensor) -> Tensor:
    """A copy of `t` with contiguous strides: compiled code is specialised on its inputs' strides, and a slice
    of a frame's first two positions, or an expanded tensor, has others than a step's own input."""
    return t.clone(memory_format=torch.contiguous_format)


def check_compile_decoder(device: torch.device, dtype: torch.dtype, quantize: str | None) -> None:
    """Raise ValueError where compiling the decoder step does not apply (before any weight is read)."""
    if device.type != "cpu":
        raise ValueError(f"compiling the decoder step is for the CPU, not {device.type} (CUDA replays graphs)")
    if quantize:
        raise ValueError(f"compiling the decoder step is for float weights, not {quantize} ones")
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(
            f"compiling the decoder step is for float32 or bfloat16, not {str(dtype).removeprefix('torch.')}"
        )


def refuse_compile_decoder_here(parser, device: str, dtype: torch.dtype, quantize: str | None, named: str) -> None:
    """A command's check, as csm.quantize.refuse_quantize_here: where compiling does not apply, an argparse usage
    error that names the option (`named`), not a traceback."""
    try:
        check_compile_decoder(torch.device(device), dtype, quantize)
    except ValueError as e:
        parser.error(f"{named}: {e}")


def compile_decoder(model: Model, pack: bool = True) -> bool:
    """Copy the model's still plain decoder and projection into a twin, pack the model's own (if `pack`, as by
    default) and compile the twin's step now. Returns whether it compiled; if not, the model is the default one."""
    import torch._inductor.config  # here, not at the top: importing it takes a second or two

    if not isinstance(model.projection, nn.Linear):
        raise ValueError("compile_decoder needs the decoder as loaded, plain: load_model(..., compile_decoder=True)")
    twin = DecoderTwin(copy.deepcopy(model.decoder), copy.deepcopy(model.projection), model.num_codebooks)
    if pack:
        pack_linear_weights(model)  # the decoder's Linears and the projection, left plain for the copy
    step = model.decoder_step = CompiledDecoderStep(model, twin)
    # Compiled now, once, with these options (patched process-wide while it compiles: load one model at a time).
    with torch.inference_mode(), torch._inductor.config.patch(INDUCTOR_OPTIONS):  # the twin's own caches
        step.run_compiled(torch.zeros(1, 1, twin.projection.in_features, dtype=model.dtype), torch.zeros(1, 1).long())
    return not step.failed


def decoder_is_compiled(model: Model) -> bool:
    """Whether the model's one-take decoder steps run compiled (and have not fallen back to eager)."""
    step = model.__dict__.get("decoder_step")
    return isinstance(step, CompiledDecoderStep) and not step.failed
