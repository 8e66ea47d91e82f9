"""The benchmarks run on the tiny config and return sane figures (never timing targets)."""

import json
import math

import jax
import jax.numpy as jnp
import pytest

from bench import run  # bench/ is on pytest's pythonpath (pyproject.toml)
from bench.data_wait import data_wait
from bench.decode_speed import decode_speed
from bench.forward import VARIANTS, forward_costs
from bench.horizon import horizon_costs
from bench.memory import training_memory
from bench.resume import resume_times
from bench.measure import peak_flops, train_flops_per_example
from bench.throughput import experiment, train_throughput

TINY = ["test.gin"]


@pytest.mark.integration
def test_engine_and_bare_loop_train_the_same_model_at_comparable_speed():
    r = train_throughput(TINY, repeats=2)
    # Same parameters, batch, dropout and Adafactor settings: the same loss after the same steps.
    assert r["engine_last_loss"] == pytest.approx(r["reference_last_loss"], rel=1e-4)
    assert r["engine_tokens_per_s"] > 0 and r["reference_tokens_per_s"] > 0
    assert 0.2 < r["engine_over_reference"] < 5
    assert r["engine_over_reference_xla_flops"] == pytest.approx(1.0, abs=0.1)
    assert r["batch"] == "8x(16+16)"
    assert (r["engine_mfu"] is None) == (peak_flops(jax.devices()[0].device_kind) is None)


@pytest.mark.integration
def test_model_flops_match_xla_count_of_the_forward_pass():
    exp = experiment(TINY)
    lengths, size = exp.data.task_feature_lengths, exp.data.batch_size
    params = exp.model.init(jax.random.PRNGKey(0), lengths)
    ones = lambda n: jnp.ones((size, lengths[n]), jnp.int32)
    batch = {"encoder_input_tokens": ones("inputs"), "decoder_input_tokens": ones("targets"),
             "decoder_target_tokens": ones("targets")}
    cost = jax.jit(lambda p, b: exp.model.loss(p, b, train=False)).lower(params, batch).compile().cost_analysis()
    xla = (cost[0] if isinstance(cost, list) else cost)["flops"]
    ours = size * train_flops_per_example(exp.model.config, lengths["inputs"], lengths["targets"]) / 3
    assert ours <= xla <= 1.15 * ours  # XLA also counts norms, softmax and activations


def test_peak_flops_table():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("NVIDIA A100-SXM4-40GB") == 312e12
    assert peak_flops("cpu") is None


@pytest.mark.integration
def test_decode_speed_reports_greedy_and_beam():
    r = decode_speed(TINY, repeats=1)
    assert r["sentences"] == 16 and r["beam_size"] == 4
    # Which is faster is a figure for `make bench`, not a bound: on a loaded machine beam won once.
    assert 0 < r["beam_sentences_per_s"] < math.inf and 0 < r["greedy_sentences_per_s"] < math.inf


@pytest.mark.integration
def test_data_wait_is_a_fraction_of_the_step():
    r = data_wait(TINY, steps=3, warmup=1)
    assert 0 <= r["data_wait_fraction"] < 1
    assert r["step_s"] > 0 and r["data_wait_ms_per_step"] >= 0


@pytest.mark.integration
def test_horizon_costs_time_and_plan_memory_per_window():
    r = horizon_costs(TINY, horizons=(1, 2), repeats=1)
    assert r["plain_step_s"] > 0 and r["plain_mib"] > 0
    for k in (1, 2):
        assert 0 < r[f"step_ratio@{k}"] < math.inf and r[f"mib@{k}"] > 0
    # A window keeps each step's parameters and optimizer state for the reverse pass.
    assert r["mib@2"] > r["mib@1"] >= r["plain_mib"]


@pytest.mark.integration
def test_forward_costs_time_and_plan_memory_per_variant():
    # Two of the four variants (each compiles three programs): per-group rates, and the paper regime
    # as shipped (LAMB, six values, the learning rate forward beside five one-step values).
    assert [v[0] for v in VARIANTS] == ["learning rate", "4 learning rates", "paper regime, six values",
                                        "paper regime as shipped"]
    r = forward_costs(TINY, repeats=1, variants=["4 learning rates", "paper regime as shipped"])
    assert list(r) == ["4 learning rates", "paper regime as shipped"]
    assert [v["forward_forward_values"] for v in r.values()] == [4, 1]
    assert r["paper regime as shipped"]["optimizer"] == "lamb" and len(r["paper regime as shipped"]["tuned"]) == 6
    for v in r.values():
        assert v["one_step_forward_values"] == 0 and v["plain_mib"] > 0
        for mode in ("one_step", "forward"):
            assert 0 < v[f"{mode}_step_ratio"] < math.inf
        # A tangent per forward value: more memory than the one-step step.
        assert v["forward_mib"] > v["one_step_mib"]


@pytest.mark.integration
def test_resume_times_at_two_positions():
    r = resume_times(TINY, positions=(2, 6))
    for n in (2, 6):
        assert r[f"restore_s@{n}"] > 0 and r[f"skip_s@{n}"] > 0 and r[f"checkpoint_mib@{n}"] > 0


@pytest.mark.integration
def test_training_memory_of_a_subprocess_run():
    r = training_memory(TINY, steps=2, share_compilation_cache=True)
    assert r["steps"] == 2
    assert 100 < r["peak_rss_mib"] < 64 * 1024  # jax and TensorFlow alone take a few hundred MiB
    if jax.devices()[0].platform == "cpu":
        assert r["device_peak_mib"] is None


def test_run_writes_json_and_rejects_bad_options(tmp_path, capsys):
    out = tmp_path / "results.json"
    assert run.main([str(out), "--skip", ",".join(run.SECTIONS)]) == 0
    written = json.loads(out.read_text())
    assert written["jax"] == jax.__version__ and written["gin_files"] == ["default.gin"]
    assert "machine: " in capsys.readouterr().out
    assert run.main([str(out), "--sizes", "huge"]) == 2
    assert run.main([str(out), "--skip", "everything"]) == 2


@pytest.mark.integration
def test_make_bench_prints_its_figures_alone(tmp_path):
    """As a user starts it (a new interpreter): the data-wait section, which builds the real
    seqio pipeline, prints its figure and nothing of TensorFlow's, JAX's or seqio's
    (`--verbose` would keep them)."""
    import os
    import subprocess
    import sys
    others = ",".join(s for s in run.SECTIONS if s != "data_wait")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-m", "bench.run", str(tmp_path / "out.json"), "--skip", others],
                          capture_output=True, text=True, timeout=600, cwd=repo)
    assert done.returncode == 0 and done.stderr == "", done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["machine", "data wait", lines[2].split(":")[0], "written"], lines
    assert lines[1].endswith("cpus]") and lines[2].startswith("(data_wait took "), lines
