"""Greedy and beam-search decoding speed (sentences/s) on the task's test set.

Each method is compiled ahead of time for the padded batch `translate` feeds
it, then `translate` (decoding plus detokenisation) is timed.

The parameters are freshly initialised, not trained: such a model almost
never emits EOS, so every sentence runs to the full target length and the
figure is the worst case (a trained model stops earlier).

`cache_speedups` compares incremental decoding (key/value cache) with re-running
the decoder over the prefix at each step, at several target lengths.
"""

import dataclasses
import statistics
import time
from typing import Dict, Sequence

import jax
import numpy as np

from bench.throughput import experiment
from hpo.data import pipeline
from hpo.engine.evaluate import decode_inputs


def decode_speed(gin_files: Sequence[str] = ("default.gin",), bindings: Sequence[str] = (),
                 sentences: int = 128, repeats: int = 2, methods: Sequence[str] = ("greedy", "beam"),
                 seed: int = 0) -> Dict[str, object]:
    """{'<method>_sentences_per_s': ...} over the first `sentences` test sentences, after a warm-up compile."""
    exp = experiment(gin_files, bindings)
    params = exp.model.init(jax.random.PRNGKey(seed), exp.data.task_feature_lengths)
    inputs, _, _ = pipeline.eval_examples(exp.data, "test", sentences)
    vocabulary = pipeline.vocabulary(exp.data)
    max_len = exp.data.task_feature_lengths["targets"]
    out = {"sentences": len(inputs), "decode_batch": exp.decode.batch_size,
           "beam_size": exp.decode.beam_size, "max_len": max_len}
    for method in methods:
        decode = dataclasses.replace(exp.decode, method=method)
        # Compile for the padded batch `translate` passes (same arguments, so the call below hits the cache).
        padded = np.zeros((decode.batch_size, inputs.shape[1]), inputs.dtype)
        exp.model.predict.lower(exp.model, params, padded, max_len, decode.method, decode.beam_size,
                                decode.alpha).compile()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            decode_inputs(exp.model, params, inputs, vocabulary, max_len, decode)
            times.append(time.perf_counter() - start)
        out[f"{method}_sentences_per_s"] = len(inputs) / statistics.median(times)
    return out


def cache_speedups(gin_files: Sequence[str] = ("default.gin",), bindings: Sequence[str] = (),
                   lengths: Sequence[int] = (32, 64, 128), sentences: int = 32, repeats: int = 2,
                   methods: Sequence[str] = ("greedy", "beam"), seed: int = 0) -> Dict[str, float]:
    """{'<method>@<L>_cached_sentences_per_s', '..._uncached_...', '<method>@<L>_speedup'}: decoding
    `sentences` random inputs to L target tokens (an untrained model: always the full L),
    cached and uncached timed in turn."""
    exp = experiment(gin_files, bindings)
    params = exp.model.init(jax.random.PRNGKey(seed), exp.data.task_feature_lengths)
    rng = np.random.RandomState(seed)
    inputs = rng.randint(2, exp.model.config.vocab_size, (sentences, exp.data.task_feature_lengths["inputs"]))
    inputs = inputs.astype(np.int32)
    out = {"sentences": sentences, "beam_size": exp.decode.beam_size}
    for method in methods:
        for length in lengths:
            def run(cache):
                return exp.model.predict(params, inputs, length, method, exp.decode.beam_size, exp.decode.alpha,
                                         cache=cache).block_until_ready()
            times = {True: [], False: []}
            for cache in (True, False):
                run(cache)  # compile
            for _ in range(repeats):
                for cache in (True, False):
                    start = time.perf_counter()
                    run(cache)
                    times[cache].append(time.perf_counter() - start)
            key = f"{method}@{length}"
            cached, uncached = (statistics.median(times[c]) for c in (True, False))
            out[f"{key}_cached_sentences_per_s"] = sentences / cached
            out[f"{key}_uncached_sentences_per_s"] = sentences / uncached
            out[f"{key}_speedup"] = uncached / cached
    return out
