"""T5's span-corruption objective as seqio preprocessors, in TensorFlow ops.

The algorithm of `t5.data.preprocessors.span_corruption` (Raffel et al.,
2020, section 3.1.4), re-implemented here because installing the `t5`
package replaces the seqio and TFDS versions this project pins:

1. the tokenized `targets` of 128 documents at a time are concatenated (no
   separator, as in T5) and cut into chunks of `chunk_lengths(...)[0]` tokens,
   the longest chunk whose corrupted inputs still fit the inputs length;
2. in each chunk, round(length * noise_density) tokens are noise, split into
   round(noise / mean_noise_span_length) spans; the span lengths and the
   lengths of the kept stretches between them are random compositions, and
   the chunk always starts with kept text;
3. inputs = the chunk with each noise span replaced by one sentinel,
   targets = each sentinel followed by the span it replaced. Sentinel i is
   id `vocab_size - 1 - i`, seqio's `<extra_id_i>`.

Randomness comes from stateless ops fed by `seqio.map_over_dataset` seeds, so
`Task.get_dataset(seed=...)` reproduces the corruption exactly.

One deliberate difference: the counts use float64 and the same clamping (at
least one noise token, one kept token and one span) in both `chunk_lengths`
and the noise mask, so the computed lengths hold for every chunk, short
ones included. T5 rounds in float32, which can differ at exact halves.
"""

from typing import Mapping, Tuple

import seqio
import tensorflow as tf

from hpo.core.errors import UserError

DOCUMENTS_PER_GROUP = 128  # T5's reduce_concat_tokens batch size


def span_counts(length: int, noise_density: float, mean_noise_span_length: float) -> Tuple[int, int]:
    """(noise tokens, noise spans) of a chunk of `length` >= 2 tokens, as the mask draws them."""
    noise = min(max(round(length * noise_density), 1), length - 1)
    return noise, max(round(noise / mean_noise_span_length), 1)


def chunk_lengths(inputs_length: int, noise_density: float = 0.15,
                  mean_noise_span_length: float = 3.0) -> Tuple[int, int]:
    """(raw tokens per chunk, longest targets) for corrupted inputs of `inputs_length`.

    T5's `random_spans_helper`: inputs hold the kept tokens, one sentinel per
    span and EOS; targets hold the noise tokens, one sentinel per span and
    EOS. Both grow by at most one token per raw token, so the longest chunk
    whose inputs fit is found by counting up. E.g. 512 -> (568, 114), the
    lengths T5 pretrains with.
    """
    _check_rates(noise_density, mean_noise_span_length)

    def corrupted(length):
        noise, spans = span_counts(length, noise_density, mean_noise_span_length)
        return length - noise + spans + 1, noise + spans + 1

    if inputs_length < corrupted(2)[0]:
        raise UserError(f"inputs length {inputs_length} is too short for span corruption")
    length = 2
    while corrupted(length + 1)[0] <= inputs_length:
        length += 1
    return length, corrupted(length)[1]


def _check_rates(noise_density: float, mean_noise_span_length: float) -> None:
    if not 0 < noise_density < 1:
        raise UserError(f"noise_density must be in (0, 1), got {noise_density}")
    if mean_noise_span_length < 1:
        raise UserError(f"mean_noise_span_length must be at least 1, got {mean_noise_span_length}")


def span_corruption(dataset: tf.data.Dataset, sequence_length: Mapping[str, int],
                    output_features: Mapping[str, seqio.Feature], noise_density: float = 0.15,
                    mean_noise_span_length: float = 3.0) -> tf.data.Dataset:
    """Tokenized documents (`targets`) -> span-corrupted {inputs, targets} chunks.

    A seqio preprocessor: place it after tokenization and before
    `append_eos_after_trim`. Lengths exclude nothing: the EOS appended later
    is counted, so examples fit `sequence_length` without trimming.
    """
    if not sequence_length or "inputs" not in sequence_length or "targets" not in sequence_length:
        raise UserError("span corruption needs 'inputs' and 'targets' sequence lengths")
    raw_length, targets_length = chunk_lengths(sequence_length["inputs"], noise_density,
                                               mean_noise_span_length)
    if sequence_length["targets"] < targets_length:
        raise UserError(f"span corruption of {sequence_length['inputs']} input tokens makes targets "
                        f"of up to {targets_length} tokens; TASK_FEATURE_LENGTHS['targets'] is "
                        f"{sequence_length['targets']}")
    vocabulary = output_features["targets"].vocabulary
    _, max_spans = span_counts(raw_length, noise_density, mean_noise_span_length)
    if max_spans > vocabulary.extra_ids:
        raise UserError(f"span corruption needs {max_spans} sentinels but the vocabulary has "
                        f"{vocabulary.extra_ids} extra ids")
    chunks = concatenate_and_split(dataset, raw_length)
    return _corrupt(chunks, first_sentinel=vocabulary.vocab_size - 1, noise_density=noise_density,
                    mean_noise_span_length=mean_noise_span_length)


def concatenate_and_split(dataset: tf.data.Dataset, chunk_length: int) -> tf.data.Dataset:
    """Groups of documents' `targets` -> consecutive {"targets": chunk} of at most `chunk_length`.

    T5's reduce_concat_tokens + split_tokens: only a group's last chunk is short.
    """
    groups = dataset.map(lambda ex: ex["targets"]).padded_batch(DOCUMENTS_PER_GROUP)

    def split(group):
        tokens = tf.reshape(group, [-1])
        tokens = tf.boolean_mask(tokens, tokens != 0)  # drop padding (id 0 is never a token)
        size = tf.size(tokens, out_type=tf.int64)
        limits = tf.concat([tf.range(0, size, chunk_length), [size]], axis=0)
        return tf.RaggedTensor.from_row_splits(tokens, limits)

    chunks = groups.map(split, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    return chunks.map(lambda chunk: {"targets": chunk})


@seqio.map_over_dataset(num_seeds=2)
def _corrupt(example, seeds, first_sentinel, noise_density, mean_noise_span_length):
    tokens = example["targets"]
    noise = noise_mask(tf.size(tokens), noise_density, mean_noise_span_length, seeds)
    return {"inputs": spans_to_sentinels(tokens, noise, first_sentinel),
            "targets": spans_to_sentinels(tokens, tf.logical_not(noise), first_sentinel)}


def noise_mask(length, noise_density: float, mean_noise_span_length: float, seeds) -> tf.Tensor:
    """Bool [length]: T5's random_spans_noise_mask (kept text first, then noise, alternating)."""
    padded = tf.maximum(length, 2)  # room for one kept and one noise token
    real = tf.cast(padded, tf.float64)
    noise = tf.cast(tf.round(real * noise_density), tf.int32)
    noise = tf.minimum(tf.maximum(noise, 1), padded - 1)
    spans = tf.cast(tf.round(tf.cast(noise, tf.float64) / mean_noise_span_length), tf.int32)
    spans = tf.maximum(spans, 1)
    noise_lengths = _random_segmentation(noise, spans, seeds[0])
    kept_lengths = _random_segmentation(padded - noise, spans, seeds[1])
    interleaved = tf.reshape(tf.stack([kept_lengths, noise_lengths], axis=1), [-1])
    stretch = tf.repeat(tf.range(2 * spans), interleaved)  # odd stretches are noise
    return tf.equal(stretch % 2, 1)[:length]


def _random_segmentation(num_items, num_segments, seed) -> tf.Tensor:
    """Lengths of `num_segments` non-empty segments summing to `num_items`, uniformly drawn."""
    is_cut = tf.cast(tf.range(num_items - 1) < num_segments - 1, tf.int32)
    starts = tf.pad(seqio.utils.stateless_shuffle(is_cut, seed), [[1, 0]])
    return tf.math.bincount(tf.cumsum(starts), minlength=num_segments, dtype=tf.int32)


def spans_to_sentinels(tokens: tf.Tensor, mask: tf.Tensor, first_sentinel: int) -> tf.Tensor:
    """`tokens` with each run of masked tokens replaced by one sentinel, counting down."""
    previous = tf.pad(mask[:-1], [[1, 0]])
    starts = tf.logical_and(mask, tf.logical_not(previous))
    sentinels = first_sentinel + 1 - tf.cumsum(tf.cast(starts, tokens.dtype))
    replaced = tf.where(starts, sentinels, tokens)
    return tf.boolean_mask(replaced, tf.logical_not(tf.logical_and(mask, previous)))
