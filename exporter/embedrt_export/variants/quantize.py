"""Int8 variants of a text graph for CPUs, built with ``onnxruntime.quantization``.

Two recipes, both with int8 weights and activations quantized at run time:

* **dynamic, per ISA** (``int8_<isa>``): ``quantize_dynamic`` with the settings of optimum's
  ``AutoQuantizationConfig.<isa>(is_static=False)``, which is what sentence-transformers'
  ``export_dynamic_quantized_onnx_model`` ships: u8 activations, per-channel symmetric weights,
  s8 weights except on AVX2 (u8, so ``vpmaddubsw`` cannot saturate), reduced range on AVX-512
  without VNNI. Fast (MLAS int8 GEMM), but each MatMul's activations share *one* scale per batch
  tensor, computed at run time: a sentence's embedding depends on the other sentences (and the
  padding) in its batch (1−cos ~1e-2), and the outlier channels of BERT's LayerNorm and GELU
  outputs cost ranking fidelity (all-MiniLM-L6-v2: Spearman ~0.990, top-10 overlap ~0.86).
* **blockwise** (``int8_blockwise``): ``MatMulNBitsQuantizer`` with 8 bits, blocks of 32 along K,
  symmetric, ``accuracy_level=4``: MatMulNBits quantizes each activation *row* to int8 per block
  of 32 at run time, so nothing depends on the batch and an outlier channel only coarsens its own
  block. On ONNX Runtime's x64 kernels it runs at fp32 speed; its gains are fidelity and smaller
  linear weights (figures: benchmarks/README.md, "int8").

Static QDQ with calibrated per-tensor activation scales is batch-invariant too, but was measured
and rejected: one scale per tensor cannot cover the outlier channels (MinMax, Percentile and
Entropy calibration and SmoothQuant all left Spearman <= 0.92 on MiniLM, and a single FFN-output
MatMul quantized alone already drops top-10 overlap to 0.77-0.93).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from ..onnx_edit import with_op_domains

BLOCK_SIZE = 32
# QAttention (from a fused Attention op) and MatMul; embedding tables (Gather/EmbedLayerNormalization)
# stay fp32: quantizing them saves memory, not time, and costs fidelity.
DYNAMIC_OP_TYPES = ("MatMul", "Attention")


@dataclass(frozen=True)
class DynamicConfig:
    """``quantize_dynamic`` settings for one CPU ISA (activations are always dynamic u8)."""

    weight_type: str  # name of an onnxruntime.quantization.QuantType member
    per_channel: bool
    reduce_range: bool


ISA_CONFIGS: dict[str, DynamicConfig] = {
    "avx2": DynamicConfig(weight_type="QUInt8", per_channel=True, reduce_range=False),
    "avx512": DynamicConfig(weight_type="QInt8", per_channel=True, reduce_range=True),
    "avx512_vnni": DynamicConfig(weight_type="QInt8", per_channel=True, reduce_range=False),
    "arm64": DynamicConfig(weight_type="QInt8", per_channel=True, reduce_range=False),
}


def quantize_dynamic_int8(onnx_bytes: bytes, isa: str) -> bytes:
    """Dynamic int8 for ``isa`` (a key of :data:`ISA_CONFIGS`); batch-dependent, see the module doc."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if isa not in ISA_CONFIGS:
        raise ValueError(f"unknown ISA {isa!r}; expected one of {sorted(ISA_CONFIGS)}")
    config = ISA_CONFIGS[isa]
    with tempfile.TemporaryDirectory(prefix="embedrt-quant-") as tmp:
        out = Path(tmp) / "int8.onnx"
        quantize_dynamic(
            onnx.load_from_string(onnx_bytes), out, weight_type=QuantType[config.weight_type],
            per_channel=config.per_channel, reduce_range=config.reduce_range,
            op_types_to_quantize=list(DYNAMIC_OP_TYPES),
            # Shape inference cannot type the outputs of fused com.microsoft ops; they are all float.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "WeightSymmetric": True},
        )
        return out.read_bytes()


def quantize_blockwise_int8(onnx_bytes: bytes, block_size: int = BLOCK_SIZE) -> bytes:
    """Blockwise int8 MatMulNBits graph: batch-invariant and ranking-preserving, see module doc.

    Block size 32 is part of the recipe: with 128, ORT's kernels for a single row and for many rows
    round differently and a sentence's embedding moves by ~1e-4 with its batch.
    """
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(onnx.load_from_string(onnx_bytes), bits=8, block_size=block_size,
                                     is_symmetric=True, accuracy_level=4)
    quantizer.process()
    return with_op_domains(quantizer.model.model).SerializeToString()
