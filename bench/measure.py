"""What every benchmark measures with: model FLOPs and peaks, XLA's static costs, synthetic
batches and step timings. Imports JAX and the model config only (no TensorFlow, seqio or gin),
so the accelerator benchmark (bench/gpu.py) can use it on a machine that has none of those.
"""

import time
from typing import Dict, Optional

import jax
import numpy as np

MIB = 2 ** 20

# Dense bf16 peak FLOP/s by device_kind substring (first match wins; more specific first).
PEAK_BF16_FLOPS = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12),
                   ("A100", 312e12), ("L4", 121e12), ("TPU v4", 275e12), ("TPU v5 lite", 197e12),
                   ("TPU v5e", 197e12), ("TPU v5p", 459e12), ("TPU v6", 918e12))


def peak_flops(device_kind: str) -> Optional[float]:
    """Dense bf16 peak of one device, or None where unknown (CPUs: no MFU)."""
    return next((peak for key, peak in PEAK_BF16_FLOPS if key.lower() in device_kind.lower()), None)


def train_flops_per_example(cfg, inputs: int, targets: int) -> float:
    """Model FLOPs of one training example of a `T5Config`: 3 × the forward matmuls (backward =
    2 × forward).

    Counts the projections, the gated MLP, the logits and full (unmasked)
    attention scores, as MFU conventionally does; norms, softmax and the
    optimizer are left out.
    """
    d, inner, mlp = cfg.emb_dim, cfg.num_heads * cfg.head_dim, cfg.mlp_dim
    attention = lambda q_len, k_len: 2 * 2 * q_len * k_len * inner  # scores and weighted sum
    encoder_layer = inputs * 2 * (4 * d * inner + 3 * d * mlp) + attention(inputs, inputs)
    decoder_layer = (targets * 2 * (6 * d * inner + 3 * d * mlp) + inputs * 2 * 2 * d * inner
                     + attention(targets, targets) + attention(targets, inputs))
    forward = (cfg.num_encoder_layers * encoder_layer + cfg.num_decoder_layers * decoder_layer
               + targets * 2 * d * cfg.vocab_size)
    return 3.0 * forward


def xla_cost(jitted, *args) -> Dict[str, Optional[float]]:
    """XLA's static count of FLOPs and bytes accessed of one call (free once the call has compiled)."""
    cost = jitted.lower(*args).compile().cost_analysis()
    cost = (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else (cost or {})
    return {"flops": cost.get("flops"), "bytes": cost.get("bytes accessed")}


def compiled(jitted, *args):
    """`jitted` compiled for `args` ahead of time: called like it, and its memory plan can be read,
    from one compilation (a `jit` call and a `lower().compile()` would compile twice)."""
    return jitted.lower(*args).compile()


def planned_mib(program) -> float:
    """The memory XLA plans for one call of a compiled program (arguments, outputs and temporaries,
    less what is donated): the same on every machine, where a CPU has no device peak counter."""
    m = program.memory_analysis()
    return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            - m.alias_size_in_bytes) / MIB


def synthetic_batch(rng: np.random.RandomState, size: int, length: int, vocab: int,
                    inputs_length: Optional[int] = None) -> Dict[str, np.ndarray]:
    """A training batch of random tokens in the engine's feature layout (no padding, no packing)."""
    targets = rng.randint(2, vocab, (size, length)).astype(np.int32)
    return {"encoder_input_tokens": rng.randint(2, vocab, (size, inputs_length or length)).astype(np.int32),
            "decoder_target_tokens": targets,
            "decoder_input_tokens": np.pad(targets, ((0, 0), (1, 0)))[:, :-1],
            "decoder_loss_weights": np.ones((size, length), np.float32)}


def timed(step, state, batches):
    """(seconds, state): `step` over `batches` in turn, until its last result is ready."""
    start = time.perf_counter()
    for batch in batches:
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    return time.perf_counter() - start, state
