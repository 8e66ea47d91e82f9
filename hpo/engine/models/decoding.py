"""Greedy and beam-search decoding for `hpo.engine.models.t5.Transformer`.

Both decoders encode once, then decode incrementally as T5X does: each step
feeds one token and reads a per-layer key/value cache of fixed shape
(max_decode_len positions) for self-attention, while cross-attention's keys and
values of the encoder output are computed once; beam search reorders the
caches with its beams. `cache=False` re-runs the decoder over the whole
(right-padded) prefix at every step instead, O(L^2) decoder work: the reference
the cached decoders are tested and benchmarked against.

Both are jitted with `model`, `max_decode_len`, `beam_size` and `cache` static;
`eos_id` and `alpha` are traced, so changing them does not recompile.

Output convention: [B, max_decode_len] int32, EOS kept, everything after the
first EOS set to 0 (padding).
"""

import functools

import jax
import jax.numpy as jnp

from hpo.engine.models.t5 import Transformer

# Finite "minus infinity" for scores, so arithmetic on dead beams stays NaN-free.
NEG_INF = -1.0e7


def _shift_right(tokens):
    """Decoder inputs [0, y_0, ..., y_{L-2}] for outputs [y_0, ..., y_{L-1}]."""
    return jnp.pad(tokens, ((0, 0), (1, 0)))[:, :-1]


def _encode(model, params, encoder_input_tokens):
    return model.apply({"params": params}, encoder_input_tokens, method=Transformer.encode)


def _step_logits(model, params, encoded, encoder_input_tokens, outputs, t):
    """Float32 logits [N, V] for position t given the outputs generated so far."""
    logits = model.apply(
        {"params": params}, encoded, encoder_input_tokens, _shift_right(outputs), method=Transformer.decode
    )
    return jnp.take(logits, t, axis=1)


def _init_cache(model, params, encoded, encoder_input_tokens, max_decode_len: int):
    """The decoder's "cache" collection: zero self-attention keys and values for
    max_decode_len positions, and cross-attention's keys and values of `encoded`."""
    tokens = jnp.zeros((encoded.shape[0], max_decode_len), jnp.int32)
    _, variables = model.apply({"params": params}, encoded, encoder_input_tokens, tokens, decode=True,
                               method=Transformer.decode, mutable=["cache"])
    return variables["cache"]


def _cached_step_logits(model, params, cache, encoded, encoder_input_tokens, outputs, t, max_decode_len: int):
    """(float32 logits [N, V] for position t, the updated cache), feeding the token at t - 1."""
    token = jnp.take(_shift_right(outputs), t, axis=1)[:, None]
    logits, variables = model.apply(
        {"params": params, "cache": cache}, encoded, encoder_input_tokens, token, decode=True, decode_position=t,
        max_decode_len=max_decode_len, method=Transformer.decode, mutable=["cache"])
    return logits[:, 0], variables["cache"]


def _set_position(seqs, t, values):
    """seqs[..., t] = values, with t traced."""
    return jnp.where(jnp.arange(seqs.shape[-1]) == t, values[..., None], seqs)


@functools.partial(jax.jit, static_argnames=("model", "max_decode_len", "cache"))
def greedy_decode(model, params, encoder_input_tokens, max_decode_len: int, eos_id: int = 1, cache: bool = True):
    """Argmax decoding; stops early once every sequence has produced EOS."""
    batch = encoder_input_tokens.shape[0]
    encoded = _encode(model, params, encoder_input_tokens)

    def cond(state):
        t, _, finished, _ = state
        return (t < max_decode_len) & ~jnp.all(finished)

    def body(state):
        t, outputs, finished, kv = state
        if cache:
            logits, kv = _cached_step_logits(model, params, kv, encoded, encoder_input_tokens, outputs, t,
                                             max_decode_len)
        else:
            logits = _step_logits(model, params, encoded, encoder_input_tokens, outputs, t)
        token = jnp.where(finished, 0, jnp.argmax(logits, -1).astype(jnp.int32))
        return t + 1, _set_position(outputs, t, token), finished | (token == eos_id), kv

    kv = _init_cache(model, params, encoded, encoder_input_tokens, max_decode_len) if cache else {}
    init = (jnp.array(0), jnp.zeros((batch, max_decode_len), jnp.int32), jnp.zeros((batch,), bool), kv)
    return jax.lax.while_loop(cond, body, init)[1]


def length_penalty(length, alpha: float):
    """GNMT length penalty, as in the Flax WMT example."""
    return ((5.0 + length) / 6.0) ** alpha


def _gather_beams(x, idx):
    """x: [B, K, ...], idx: [B, K'] -> [B, K', ...]."""
    return jax.vmap(lambda xb, ib: xb[ib])(x, idx)


def _beam_step(state, log_probs, beam_size, alpha, eos_id):
    """One beam-search step: extend alive beams, update alive and finished pools.
    Returns (new state, each new alive beam's parent beam [B, K])."""
    t, alive, alive_lp, fin, fin_scores, fin_flags = state
    batch, _, vocab = log_probs.shape
    # Top 2K extensions guarantee K non-EOS candidates for the alive pool.
    cand_lp, flat_idx = jax.lax.top_k((alive_lp[..., None] + log_probs).reshape(batch, -1), 2 * beam_size)
    token = (flat_idx % vocab).astype(jnp.int32)
    cand = _set_position(_gather_beams(alive, flat_idx // vocab), t, token)
    is_eos = token == eos_id

    alive_lp, idx = jax.lax.top_k(jnp.where(is_eos, NEG_INF, cand_lp), beam_size)
    alive = _gather_beams(cand, idx)
    parents = _gather_beams(flat_idx // vocab, idx)

    # Like HF transformers, an EOS candidate only finishes if it ranks within the
    # top K; this makes beam_size=1 exactly greedy decoding.
    rank_ok = jnp.arange(2 * beam_size) < beam_size
    new_flags = is_eos & rank_ok & (cand_lp > NEG_INF / 2)
    new_scores = jnp.where(new_flags, cand_lp / length_penalty(t + 1, alpha), NEG_INF)
    fin_scores, idx = jax.lax.top_k(jnp.concatenate([fin_scores, new_scores], 1), beam_size)
    fin = _gather_beams(jnp.concatenate([fin, cand], 1), idx)
    fin_flags = _gather_beams(jnp.concatenate([fin_flags, new_flags], 1), idx)
    return (t + 1, alive, alive_lp, fin, fin_scores, fin_flags), parents


def _reorder_self_attention_cache(cache, parents):
    """Each alive beam's self-attention keys and values become its parent's; the encoder's
    (cross-attention) are the same for every beam of a sentence."""
    batch, beam_size = parents.shape

    def reorder(path, x):
        if path[-1].key not in ("cached_key", "cached_value"):
            return x
        return _gather_beams(x.reshape(batch, beam_size, *x.shape[1:]), parents).reshape(x.shape)

    return jax.tree_util.tree_map_with_path(reorder, cache)


@functools.partial(jax.jit, static_argnames=("model", "max_decode_len", "beam_size", "cache"))
def beam_search(
    model,
    params,
    encoder_input_tokens,
    max_decode_len: int,
    beam_size: int = 4,
    alpha: float = 0.6,
    eos_id: int = 1,
    cache: bool = True,
):
    """Beam search returning the best beam by length-penalised log-prob."""
    batch = encoder_input_tokens.shape[0]
    beams = lambda x: jnp.repeat(x, beam_size, axis=0)  # [B, ...] -> [B*K, ...]
    enc_tokens = beams(encoder_input_tokens)
    encoded = beams(_encode(model, params, encoder_input_tokens))
    max_penalty = length_penalty(max_decode_len, alpha)

    def cond(state):
        t, _, alive_lp, _, fin_scores, fin_flags, _ = state
        # Log-probs only fall as sequences grow, so an alive beam can at best reach
        # alive_lp / max_penalty; stop once no alive beam can enter the finished pool.
        worst_finished = jnp.min(jnp.where(fin_flags, fin_scores, NEG_INF), axis=1)
        done = worst_finished > alive_lp[:, 0] / max_penalty
        return (t < max_decode_len) & ~jnp.all(done)

    def body(state):
        t, alive, kv = state[0], state[1], state[-1]
        outputs = alive.reshape(batch * beam_size, -1)
        if cache:
            logits, kv = _cached_step_logits(model, params, kv, encoded, enc_tokens, outputs, t, max_decode_len)
        else:
            logits = _step_logits(model, params, encoded, enc_tokens, outputs, t)
        log_probs = jax.nn.log_softmax(logits).reshape(batch, beam_size, -1)
        state, parents = _beam_step(state[:-1], log_probs, beam_size, alpha, eos_id)
        return (*state, _reorder_self_attention_cache(kv, parents) if cache else kv)

    seqs = jnp.zeros((batch, beam_size, max_decode_len), jnp.int32)
    # Only beam 0 starts alive, so the first step does not pick K copies of it.
    alive_lp = jnp.tile(jnp.array([0.0] + [NEG_INF] * (beam_size - 1)), (batch, 1))
    init = (
        jnp.array(0),
        seqs,
        alive_lp,
        seqs,
        jnp.full((batch, beam_size), NEG_INF),
        jnp.zeros((batch, beam_size), bool),
        _init_cache(model, params, encoded, enc_tokens, max_decode_len) if cache else {},
    )
    _, alive, alive_lp, fin, fin_scores, fin_flags, _ = jax.lax.while_loop(cond, body, init)

    # Beams cut at max_decode_len compete too (scored at full length); after an
    # early stop they provably lose to the finished ones.
    scores = jnp.concatenate([jnp.where(fin_flags, fin_scores, NEG_INF), alive_lp / max_penalty], 1)
    best = jnp.argmax(scores, axis=1)
    return _gather_beams(jnp.concatenate([fin, alive], 1), best[:, None])[:, 0]
