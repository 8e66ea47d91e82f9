"""The encoder-decoder model as the trainer sees it: init, loss, predict.

As in T5X, the loss and the decoding live with the model; the trainer only
sequences steps. Everything here is a pure function of its arguments.
"""

import dataclasses
import functools
from typing import Mapping

import gin
import jax
import jax.numpy as jnp

from hpo.core.errors import UserError, finite_number, positive_int
from hpo.engine.models import decoding, losses
from hpo.engine.models.t5 import T5Config, Transformer

DECODE_METHODS = ("greedy", "beam")

gin.external_configurable(T5Config, module="hpo")  # models/*.gin size it


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """How test and dev sets are translated."""
    method: str = "greedy"  # or "beam"
    beam_size: int = 4
    alpha: float = 0.6  # GNMT length penalty
    batch_size: int = 128

    def __post_init__(self):
        if self.method not in DECODE_METHODS:
            raise UserError(f"DecodeConfig.method must be one of {', '.join(DECODE_METHODS)}, got {self.method!r}")
        positive_int(self.beam_size, "DecodeConfig.beam_size")
        positive_int(self.batch_size, "DecodeConfig.batch_size")
        finite_number(self.alpha, "DecodeConfig.alpha")


@dataclasses.dataclass(frozen=True)
class Seq2SeqModel:
    config: T5Config
    z_loss: float = 1e-4

    @property
    def module(self) -> Transformer:
        return Transformer(self.config)

    def init(self, rng, lengths: Mapping[str, int]):
        return self._init(rng, lengths["inputs"], lengths["targets"])

    # One compiled program: run eagerly, init would compile each of its many small ops.
    @functools.partial(jax.jit, static_argnames=("self", "inputs_length", "targets_length"))
    def _init(self, rng, inputs_length: int, targets_length: int):
        enc = jnp.ones((1, inputs_length), jnp.int32)
        dec = jnp.ones((1, targets_length), jnp.int32)
        return self.module.init(rng, enc, dec, dec)["params"]

    def loss(self, params, batch, rng=None, label_smoothing=0.0, train=True):
        """Returns (summed token loss, number of target tokens) on `batch`.

        The caller divides: summing first keeps the mean exact across devices.
        """
        logits = self.module.apply(
            {"params": params},
            batch["encoder_input_tokens"], batch["decoder_input_tokens"], batch["decoder_target_tokens"],
            encoder_segment_ids=batch.get("encoder_segment_ids"),
            decoder_segment_ids=batch.get("decoder_segment_ids"),
            enable_dropout=train, rngs={"dropout": rng} if train and rng is not None else None)
        weights = batch.get("decoder_loss_weights")
        if weights is None:
            weights = (batch["decoder_target_tokens"] > 0).astype(jnp.float32)
        return losses.cross_entropy(logits, batch["decoder_target_tokens"], weights,
                                    label_smoothing, self.z_loss if train else 0.0)

    def mean_loss(self, params, batch, rng=None, label_smoothing=0.0, train=True):
        total, weight = self.loss(params, batch, rng, label_smoothing, train)
        return total / jnp.maximum(weight, 1.0)

    @functools.partial(jax.jit, static_argnames=("self", "max_len", "method", "beam_size", "alpha", "cache"))
    def predict(self, params, encoder_input_tokens, max_len: int, method: str = "greedy",
                beam_size: int = 4, alpha: float = 0.6, cache: bool = True):
        """Output token ids [B, max_len], zero after EOS (`cache`: incremental decoding)."""
        if method == "beam":
            return decoding.beam_search(self.module, params, encoder_input_tokens, max_len,
                                        beam_size=beam_size, alpha=alpha, cache=cache)
        return decoding.greedy_decode(self.module, params, encoder_input_tokens, max_len, cache=cache)
