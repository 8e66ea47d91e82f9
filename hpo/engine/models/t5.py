"""A T5 v1.1-style encoder-decoder Transformer in flax.linen, following T5X.

Conventions (as in T5/T5X): token id 0 is padding and also the decoder start
token, id 1 is EOS. Pre-norm residual blocks with RMS norm, no biases anywhere,
gated-GELU MLPs, relative position biases (no absolute positions), and one
token embedding shared by the encoder and decoder inputs.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn

Array = jax.Array

# Additive bias for masked attention logits. T5X uses a large finite value
# rather than -inf so fully-masked (padding) rows give a uniform softmax, not NaN.
_MASK_BIAS = -1e10


@dataclasses.dataclass(frozen=True)
class T5Config:
    vocab_size: int
    emb_dim: int = 512
    num_heads: int = 6
    head_dim: int = 64
    mlp_dim: int = 1024
    num_encoder_layers: int = 8
    num_decoder_layers: int = 8
    dropout_rate: float = 0.0
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    # True = shared input/output embedding (T5 v1.0); v1.1 has a separate output layer.
    logits_via_embedding: bool = False
    dtype: str = "float32"  # activation/compute dtype ("bfloat16" on accelerators)
    param_dtype: str = "float32"

    def __post_init__(self):
        from hpo.core.errors import UserError, positive_int
        for name in ("vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim", "num_encoder_layers",
                     "num_decoder_layers", "relative_attention_num_buckets", "relative_attention_max_distance"):
            positive_int(getattr(self, name), f"T5Config.{name}")
        if not isinstance(self.dropout_rate, (int, float)) or not 0 <= self.dropout_rate < 1:
            raise UserError(f"T5Config.dropout_rate must be in [0, 1), got {self.dropout_rate!r}")
        for name in ("dtype", "param_dtype"):
            try:
                jnp.dtype(getattr(self, name))
            except TypeError:
                raise UserError(f"T5Config.{name}: unknown dtype {getattr(self, name)!r}") from None


def _kernel_init():
    return nn.initializers.variance_scaling(1.0, "fan_in", "normal")


def _wide(cfg: T5Config):
    """Logits and softmax dtype: float32, or float64 when the model computes in it."""
    return jnp.promote_types(jnp.dtype(cfg.dtype), jnp.float32)


def _dtypes(cfg: T5Config) -> dict:
    return dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))


def _norm(cfg: T5Config, name: str) -> nn.Module:
    # T5's "LayerNorm": scale only, no mean subtraction, no bias (i.e. RMS norm).
    return nn.RMSNorm(epsilon=1e-6, name=name, **_dtypes(cfg))


def _dropout(cfg: T5Config) -> nn.Module:
    # T5X shares the dropout mask across sequence positions (broadcast over -2).
    return nn.Dropout(rate=cfg.dropout_rate, broadcast_dims=(-2,))


def relative_position_bucket(
    relative_position, bidirectional: bool = True, num_buckets: int = 32, max_distance: int = 128
):
    """T5's bucketing of relative positions (memory_position - query_position).

    Half the buckets hold exact small distances, the rest are log-spaced up to
    max_distance; bidirectional splits the buckets between the two directions,
    unidirectional maps every future position to bucket 0.
    """
    n = -jnp.asarray(relative_position, jnp.int32)
    ret = jnp.zeros_like(n)
    if bidirectional:
        num_buckets //= 2
        ret += (n < 0).astype(jnp.int32) * num_buckets
        n = jnp.abs(n)
    else:
        n = jnp.maximum(n, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    # eps avoids log(0); n == 0 takes the exact branch anyway.
    val_if_large = max_exact + (
        jnp.log(n.astype(jnp.float32) / max_exact + np.finfo(np.float32).eps)
        / np.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    ).astype(jnp.int32)
    val_if_large = jnp.minimum(val_if_large, num_buckets - 1)
    return ret + jnp.where(is_small, n, val_if_large)


class RelativePositionBias(nn.Module):
    """Per-head learned bias for each relative-position bucket: [1, H, Q, K]."""

    config: T5Config
    bidirectional: bool

    @nn.compact
    def __call__(self, q_len: int, k_len: int, q_offset=0) -> Array:
        """Queries at positions q_offset ... q_offset + q_len - 1 (one, when decoding step by step)."""
        cfg = self.config
        # Positions from arange: cross-segment pairs in packed rows are masked anyway.
        rel = jnp.arange(k_len)[None, :] - (jnp.arange(q_len)[:, None] + q_offset)
        buckets = relative_position_bucket(
            rel, self.bidirectional, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance
        )
        table = self.param(
            "rel_embedding",
            nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
            (cfg.num_heads, cfg.relative_attention_num_buckets),
            jnp.dtype(cfg.param_dtype),
        )
        return table[:, buckets][None].astype(_wide(cfg))


class MultiHeadAttention(nn.Module):
    """Bias-free multi-head attention; `bias` holds masks and position biases.

    Incremental decoding (`decode`, as in T5X) keeps keys and values in the "cache"
    collection, created by a pass over the whole (max length) decoder input:
    self-attention writes the key and value of the one query at `position` into
    its cache and attends over all of it (`bias` masks what is not generated
    yet); cross-attention (`cross`) computes the encoder's keys and values on
    that first pass only.
    """

    config: T5Config
    cross: bool = False

    @nn.compact
    def __call__(self, inputs_q, inputs_kv, bias, deterministic: bool, decode: bool = False, position=None):
        cfg = self.config
        dense = lambda name, init=_kernel_init(): nn.DenseGeneral(
            (cfg.num_heads, cfg.head_dim), use_bias=False, kernel_init=init, name=name, **_dtypes(cfg)
        )
        # As in T5X, the 1/sqrt(head_dim) scaling is folded into the query init.
        query_init = lambda *a: _kernel_init()(*a) * cfg.head_dim**-0.5
        q = dense("query", query_init)(inputs_q)
        if decode and self.cross:
            k = self.variable("cache", "cross_key", lambda: dense("key")(inputs_kv)).value
            v = self.variable("cache", "cross_value", lambda: dense("value")(inputs_kv)).value
        else:
            k = dense("key")(inputs_kv)
            v = dense("value")(inputs_kv)
        if decode and not self.cross:
            cached_k = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
            cached_v = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
            if position is not None:  # one step: write this query's key and value at `position`
                cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k, (0, position, 0, 0))
                cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v, (0, position, 0, 0))
                k, v = cached_k.value, cached_v.value
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(_wide(cfg)) + bias
        weights = jax.nn.softmax(logits).astype(q.dtype)  # softmax in float32
        weights = nn.Dropout(cfg.dropout_rate)(weights, deterministic=deterministic)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
        return nn.DenseGeneral(
            inputs_q.shape[-1],
            axis=(-2, -1),
            use_bias=False,
            kernel_init=_kernel_init(),
            name="out",
            **_dtypes(cfg),
        )(out)


class MlpBlock(nn.Module):
    """Gated-GELU MLP: gelu(x W_0) * (x W_1) -> dropout -> W_o."""

    config: T5Config

    @nn.compact
    def __call__(self, x, deterministic: bool):
        cfg = self.config
        dense = lambda n, name: nn.Dense(
            n, use_bias=False, kernel_init=_kernel_init(), name=name, **_dtypes(cfg)
        )
        h = nn.gelu(dense(cfg.mlp_dim, "wi_0")(x)) * dense(cfg.mlp_dim, "wi_1")(x)
        h = _dropout(cfg)(h, deterministic=deterministic)
        return dense(x.shape[-1], "wo")(h)


class EncoderLayer(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x, bias, deterministic: bool):
        cfg = self.config
        h = _norm(cfg, "pre_attention_layer_norm")(x)
        h = MultiHeadAttention(cfg, name="attention")(h, h, bias, deterministic)
        x = x + _dropout(cfg)(h, deterministic=deterministic)
        h = _norm(cfg, "pre_mlp_layer_norm")(x)
        h = MlpBlock(cfg, name="mlp")(h, deterministic)
        return x + _dropout(cfg)(h, deterministic=deterministic)


class DecoderLayer(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, y, encoded, self_bias, cross_bias, deterministic: bool, decode=False, position=None):
        cfg = self.config
        h = _norm(cfg, "pre_self_attention_layer_norm")(y)
        h = MultiHeadAttention(cfg, name="self_attention")(h, h, self_bias, deterministic, decode, position)
        y = y + _dropout(cfg)(h, deterministic=deterministic)
        h = _norm(cfg, "pre_cross_attention_layer_norm")(y)
        h = MultiHeadAttention(cfg, cross=True, name="encoder_decoder_attention")(
            h, encoded, cross_bias, deterministic, decode)
        y = y + _dropout(cfg)(h, deterministic=deterministic)
        h = _norm(cfg, "pre_mlp_layer_norm")(y)
        h = MlpBlock(cfg, name="mlp")(h, deterministic)
        return y + _dropout(cfg)(h, deterministic=deterministic)


class Encoder(nn.Module):
    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(self, tokens, mask_bias, deterministic: bool):
        cfg = self.config
        x = self.shared_embedding(tokens.astype(jnp.int32))
        x = _dropout(cfg)(x, deterministic=deterministic)
        # One bias table per stack, computed once and shared by all its layers.
        bias = mask_bias + RelativePositionBias(cfg, True, name="relpos_bias")(
            tokens.shape[1], tokens.shape[1]
        )
        for i in range(cfg.num_encoder_layers):
            x = EncoderLayer(cfg, name=f"layers_{i}")(x, bias, deterministic)
        x = _norm(cfg, "encoder_norm")(x)
        return _dropout(cfg)(x, deterministic=deterministic)


class Decoder(nn.Module):
    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(self, encoded, tokens, self_mask_bias, cross_bias, deterministic: bool, decode=False,
                 position=None):
        """`position` (incremental decoding): `tokens` is the one token at that position,
        attending over the cache's keys (`self_mask_bias` is [.., 1, max_len])."""
        cfg = self.config
        y = self.shared_embedding(tokens.astype(jnp.int32))
        y = _dropout(cfg)(y, deterministic=deterministic)
        self_bias = self_mask_bias + RelativePositionBias(cfg, False, name="relpos_bias")(
            tokens.shape[1], self_mask_bias.shape[-1], 0 if position is None else position
        )
        for i in range(cfg.num_decoder_layers):
            y = DecoderLayer(cfg, name=f"layers_{i}")(y, encoded, self_bias, cross_bias, deterministic, decode,
                                                      position)
        y = _norm(cfg, "decoder_norm")(y)
        y = _dropout(cfg)(y, deterministic=deterministic)
        if cfg.logits_via_embedding:
            logits = self.shared_embedding.attend(y) / np.sqrt(y.shape[-1])
        else:
            # T5X computes the output projection in float32.
            logits = nn.Dense(
                cfg.vocab_size,
                use_bias=False,
                dtype=_wide(cfg),
                param_dtype=jnp.dtype(cfg.param_dtype),
                kernel_init=_kernel_init(),
                name="logits_dense",
            )(y)
        return logits.astype(_wide(cfg))


def _to_bias(mask: Array) -> Array:
    return jnp.where(mask > 0, 0.0, _MASK_BIAS).astype(jnp.float32)


def _segment_mask(q_segments, k_segments) -> Array:
    return nn.make_attention_mask(q_segments, k_segments, jnp.equal)


class Transformer(nn.Module):
    """T5 v1.1 encoder-decoder returning float32 logits [B, Ld, vocab]."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.shared_embedding = nn.Embed(
            cfg.vocab_size, cfg.emb_dim, embedding_init=nn.initializers.normal(1.0), **_dtypes(cfg)
        )
        self.encoder = Encoder(cfg, self.shared_embedding)
        self.decoder = Decoder(cfg, self.shared_embedding)

    def _deterministic(self, enable_dropout: bool) -> bool:
        # Dropout needs both the flag and a "dropout" rng (e.g. not during init/eval).
        return not (enable_dropout and self.has_rng("dropout"))

    def encode(self, encoder_input_tokens, encoder_segment_ids=None, enable_dropout: bool = False):
        mask = nn.make_attention_mask(encoder_input_tokens > 0, encoder_input_tokens > 0)
        if encoder_segment_ids is not None:
            mask = nn.combine_masks(mask, _segment_mask(encoder_segment_ids, encoder_segment_ids))
        return self.encoder(encoder_input_tokens, _to_bias(mask), self._deterministic(enable_dropout))

    def decode(
        self,
        encoded,
        encoder_input_tokens,
        decoder_input_tokens,
        decoder_target_tokens=None,
        encoder_segment_ids=None,
        decoder_segment_ids=None,
        enable_dropout: bool = False,
        decode: bool = False,
        decode_position=None,
        max_decode_len: int = None,
    ):
        """Logits of the decoder inputs. `decode`: incremental decoding with a "cache"
        collection, created by a pass over [B, max_decode_len] inputs; then each pass is one
        token [B, 1] at `decode_position` of the generated sequence (max_decode_len long)."""
        if decode_position is not None:  # keys: the cache's max_decode_len positions, those up to here real
            self_mask = (jnp.arange(max_decode_len) <= decode_position)[None, None, None, :]
            cross_mask = nn.make_attention_mask(jnp.ones_like(decoder_input_tokens, bool), encoder_input_tokens > 0)
            return self.decoder(encoded, decoder_input_tokens, _to_bias(self_mask), _to_bias(cross_mask), True,
                                decode, decode_position)
        self_mask = nn.make_causal_mask(decoder_input_tokens)
        if decoder_target_tokens is not None:
            # Padding comes from targets: the start token 0 in the inputs is not padding.
            dec_valid = decoder_target_tokens > 0
            self_mask = nn.combine_masks(self_mask, nn.make_attention_mask(dec_valid, dec_valid))
        else:  # decoding: every prefix position is real
            dec_valid = jnp.ones_like(decoder_input_tokens, dtype=bool)
        cross_mask = nn.make_attention_mask(dec_valid, encoder_input_tokens > 0)
        if decoder_segment_ids is not None:
            self_mask = nn.combine_masks(self_mask, _segment_mask(decoder_segment_ids, decoder_segment_ids))
            cross_mask = nn.combine_masks(cross_mask, _segment_mask(decoder_segment_ids, encoder_segment_ids))
        return self.decoder(
            encoded,
            decoder_input_tokens,
            _to_bias(self_mask),
            _to_bias(cross_mask),
            self._deterministic(enable_dropout),
            decode,
        )

    def __call__(
        self,
        encoder_input_tokens,
        decoder_input_tokens,
        decoder_target_tokens=None,
        encoder_segment_ids=None,
        decoder_segment_ids=None,
        enable_dropout: bool = False,
    ):
        encoded = self.encode(encoder_input_tokens, encoder_segment_ids, enable_dropout)
        return self.decode(
            encoded,
            encoder_input_tokens,
            decoder_input_tokens,
            decoder_target_tokens,
            encoder_segment_ids,
            decoder_segment_ids,
            enable_dropout,
        )


