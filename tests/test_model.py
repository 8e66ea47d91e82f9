"""Tests for the T5 v1.1-style Transformer in hpo.engine.models.t5.

XLA compilation dominates the run time on CPU, so the tests share one set of
params and mostly one input shape (B=2, Le=Ld=8) to reuse compiled functions.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hpo.engine.models.t5 import T5Config, Transformer, relative_position_bucket
from hpo.flow.backend import num_params

CFG = T5Config(
    vocab_size=32,
    emb_dim=32,
    num_heads=2,
    head_dim=16,
    mlp_dim=64,
    num_encoder_layers=2,
    num_decoder_layers=2,
)
LEN = 8
ATOL = 1e-4


def shift_right(targets):
    return np.pad(targets, ((0, 0), (1, 0)))[:, :-1]


def pad_to(x, length):
    return np.pad(x, ((0, 0), (0, length - x.shape[1])))


def random_batch(seed, batch=2, enc_len=LEN, dec_len=LEN):
    """Random non-padding tokens; targets end in EOS (1)."""
    rng = np.random.RandomState(seed)
    enc = rng.randint(2, CFG.vocab_size, size=(batch, enc_len)).astype(np.int32)
    tgt = rng.randint(2, CFG.vocab_size, size=(batch, dec_len)).astype(np.int32)
    tgt[:, -1] = 1
    return enc, shift_right(tgt), tgt


# Jitted: op-by-op (eager) execution of a whole Transformer is slow on CPU.
@functools.partial(jax.jit, static_argnames=("model", "method", "enable_dropout"))
def apply(model, params, *args, method=None, enable_dropout=False, rngs=None, **kwargs):
    return model.apply(
        {"params": params}, *args, method=method, enable_dropout=enable_dropout, rngs=rngs, **kwargs
    )


@pytest.fixture(scope="module")
def params():
    enc, dec_in, _ = random_batch(0)
    return jax.jit(Transformer(CFG).init)(jax.random.PRNGKey(0), enc, dec_in)["params"]


def param_count(cfg):
    x = jnp.zeros((1, 4), jnp.int32)
    shapes = jax.eval_shape(Transformer(cfg).init, jax.random.PRNGKey(0), x, x)
    return num_params(shapes["params"])


@pytest.mark.integration
def test_shapes_and_dtype(params):
    model = Transformer(CFG)
    enc, dec_in, tgt = random_batch(1)
    logits = apply(model, params, enc, dec_in, tgt)
    assert logits.shape == (2, LEN, CFG.vocab_size)
    assert logits.dtype == jnp.float32
    encoded = apply(model, params, enc, method=Transformer.encode)
    assert encoded.shape == (2, LEN, CFG.emb_dim)
    decoded = apply(model, params, encoded, enc, dec_in, tgt, method=Transformer.decode)
    np.testing.assert_allclose(decoded, logits, atol=ATOL)


def test_num_params(params):
    n = num_params(params)
    e, m, v, inner = CFG.emb_dim, CFG.mlp_dim, CFG.vocab_size, CFG.num_heads * CFG.head_dim
    attn, mlp, rel = 4 * e * inner, 3 * e * m, CFG.num_heads * 32
    enc_layer, dec_layer = 2 * e + attn + mlp, 3 * e + 2 * attn + mlp
    # embedding + layers + (relpos bias + final norm) per stack + logits_dense
    assert n == v * e + 2 * enc_layer + 2 * dec_layer + 2 * (rel + e) + e * v > 0
    assert param_count(CFG) == n
    assert param_count(dataclasses.replace(CFG, emb_dim=48)) > n
    assert param_count(dataclasses.replace(CFG, logits_via_embedding=True)) == n - e * v


@pytest.mark.parametrize(
    "rel,bidirectional,expected",
    [
        (0, True, 0),
        (-1, True, 1),
        (1, True, 17),
        (-7, True, 7),
        (-8, True, 8),
        (-16, True, 10),  # 8 + floor(log(16/8) / log(128/8) * 8) = 8 + 2
        (-128, True, 15),
        (200, True, 31),
        (0, False, 0),
        (3, False, 0),
        (-3, False, 3),
        (-16, False, 16),
        (-32, False, 21),  # 16 + floor(log(2) / log(8) * 16) = 16 + 5
        (-1000, False, 31),
    ],
)
def test_relative_position_bucket(rel, bidirectional, expected):
    got = relative_position_bucket(np.array(rel), bidirectional, 32, 128)
    assert int(got) == expected


def test_padding_does_not_change_logits(params):
    model = Transformer(CFG)
    enc, dec_in, tgt = random_batch(2)
    logits = apply(model, params, enc, dec_in, tgt)
    padded = apply(model, params, pad_to(enc, LEN + 5), pad_to(dec_in, LEN + 3), pad_to(tgt, LEN + 3))
    np.testing.assert_allclose(padded[:, :LEN], logits, atol=ATOL)


def test_batch_independence(params):
    model = Transformer(CFG)
    enc, dec_in, tgt = random_batch(3)
    enc[1, 4:] = 0  # mixed lengths in the batch
    logits = apply(model, params, enc, dec_in, tgt)
    for i in range(2):
        alone = apply(model, params, enc[i : i + 1], dec_in[i : i + 1], tgt[i : i + 1])
        np.testing.assert_allclose(alone[0], logits[i], atol=ATOL)


@pytest.mark.parametrize("with_targets", [False, True])
def test_decoder_causality(params, with_targets):
    model = Transformer(CFG)
    enc, dec_in, tgt = random_batch(4)
    changed_in, changed_tgt = dec_in.copy(), tgt.copy()
    changed_in[:, 4:] = (changed_in[:, 4:] + 7) % 30 + 2
    changed_tgt[:, 3:] = (changed_tgt[:, 3:] + 7) % 30 + 2
    run = lambda d, t: apply(model, params, enc, d, t if with_targets else None)
    base, changed = run(dec_in, tgt), run(changed_in, changed_tgt)
    np.testing.assert_allclose(changed[:, :4], base[:, :4], atol=ATOL)
    assert not np.allclose(changed[:, 4:], base[:, 4:], atol=ATOL)


def test_packing_matches_separate(params):
    model = Transformer(CFG)
    enc = np.array([[3, 4, 5, 1, 8, 9, 1, 0]])
    enc_seg = np.array([[1, 1, 1, 1, 2, 2, 2, 0]])
    tgt = np.array([[6, 7, 1, 10, 11, 12, 1, 0]])
    dec_in = np.array([[0, 6, 7, 0, 10, 11, 12, 0]])  # shifted within each segment
    dec_seg = np.array([[1, 1, 1, 2, 2, 2, 2, 0]])
    packed = apply(model, params, enc, dec_in, tgt, encoder_segment_ids=enc_seg, decoder_segment_ids=dec_seg)
    for enc_one, tgt_one, positions in [
        ([3, 4, 5, 1], [6, 7, 1], slice(0, 3)),
        ([8, 9, 1], [10, 11, 12, 1], slice(3, 7)),
    ]:
        # Right-padding is harmless (tested above); it reuses the compiled shape.
        enc_one, tgt_one = pad_to(np.array([enc_one]), LEN), pad_to(np.array([tgt_one]), LEN)
        alone = apply(model, params, enc_one, shift_right(tgt_one), tgt_one)
        n = positions.stop - positions.start
        np.testing.assert_allclose(packed[0, positions], alone[0, :n], atol=ATOL)


@pytest.mark.integration
def test_dropout(params):
    # Dropout does not change the parameter structure, so the params are shared.
    model = Transformer(dataclasses.replace(CFG, dropout_rate=0.3))
    enc, dec_in, tgt = random_batch(5)
    run = lambda **kw: apply(model, params, enc, dec_in, tgt, **kw)
    off = run()
    np.testing.assert_array_equal(off, run())
    np.testing.assert_allclose(off, apply(Transformer(CFG), params, enc, dec_in, tgt), atol=ATOL)
    on1 = run(enable_dropout=True, rngs={"dropout": jax.random.PRNGKey(1)})
    on1_again = run(enable_dropout=True, rngs={"dropout": jax.random.PRNGKey(1)})
    on2 = run(enable_dropout=True, rngs={"dropout": jax.random.PRNGKey(2)})
    np.testing.assert_array_equal(on1, on1_again)
    assert not np.allclose(on1, on2)
    assert not np.allclose(on1, off)


def test_bfloat16(params):
    enc, dec_in, tgt = random_batch(6)
    model16 = Transformer(dataclasses.replace(CFG, dtype="bfloat16"))
    logits16 = apply(model16, params, enc, dec_in, tgt)
    assert logits16.dtype == jnp.float32
    assert np.all(np.isfinite(logits16))
    logits32 = apply(Transformer(CFG), params, enc, dec_in, tgt)
    # Same params: bf16 logits should track the float32 ones closely.
    assert np.corrcoef(np.ravel(logits16), np.ravel(logits32))[0, 1] > 0.98


def cross_entropy(logits, targets):
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    weights = (targets > 0).astype(jnp.float32)
    return jnp.sum(losses * weights) / jnp.sum(weights)


@pytest.mark.integration
def test_overfits_tiny_batch(params):
    model = Transformer(CFG)
    enc, _, tgt = random_batch(7, batch=4, enc_len=6, dec_len=5)
    tgt[2, 3:] = [1, 0]  # one shorter, padded target
    dec_in = shift_right(tgt)
    opt = optax.adam(1e-2)

    @jax.jit
    def step(params, opt_state):
        loss_fn = lambda p: cross_entropy(model.apply({"params": p}, enc, dec_in, tgt), tgt)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = opt.init(params)
    losses = []
    for _ in range(150):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert losses[0] > 2.0
    assert losses[-1] < 0.02, losses[-10:]
