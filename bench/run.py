"""`make bench`: run the benchmarks, print the figures, write bench/results.json.

    python -m bench.run [OUT.json] [--sizes small,base] [--gin bf16.gin] [--gin.KEY=VALUE ...]
                        [--repeats 20] [--skip guided,decode,memory,data_wait] [--verbose]

Gin files and bindings apply to every section (on top of base.gin and
default.gin); `--sizes` runs the throughput section once per T5 size
(configs/models/t5_1_1_<size>.gin, before the --gin files so that e.g.
bf16.gin still applies). Ratios are medians of paired (A B A B ...) timings,
so they stay meaningful on a shared machine; absolute figures do not.

On a GPU or TPU, run bench/gpu.sh (`make bench-gpu`) instead: T5 v1.1 small and base in
bfloat16, with nothing but JAX and gin-config.
"""

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import time
from typing import List, Optional, Sequence

from hpo.core.errors import UserError
from hpo.core.gin_syntax import configs_dir, gin_binding

# The sections' modules (JAX, TensorFlow, seqio) are imported where they run: after `_quiet`.

SECTIONS = ("throughput", "guided", "horizon", "forward", "decode", "memory", "data_wait", "resume", "t5x")


def _parse(argv: Sequence[str]):
    bindings = [a[len("--gin."):] for a in argv if a.startswith("--gin.")]
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=os.path.join("bench", "results.json"))
    parser.add_argument("--sizes", default="", help="T5 sizes for the throughput section, e.g. small,base")
    parser.add_argument("--gin", action="append", default=[], help="gin file (repeatable), e.g. bf16.gin")
    parser.add_argument("--repeats", type=int, default=20, help="paired steps timed per ratio")
    parser.add_argument("--skip", default="", help=f"sections to leave out: {','.join(SECTIONS)}")
    parser.add_argument("--verbose", action="store_true", help="show the libraries' start-up logs and advice too")
    args = parser.parse_args([a for a in argv if not a.startswith("--gin.")])
    args.bindings = [gin_binding(*b.split("=", 1)) for b in bindings if "=" in b]
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.skip - set(SECTIONS):
        raise UserError(f"--skip: unknown section '{min(args.skip - set(SECTIONS))}' "
                        f"(choose from {', '.join(SECTIONS)})")
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for size in args.sizes:
        if not os.path.isfile(os.path.join(configs_dir(), _size_gin(size))):
            raise UserError(f"--sizes: no model config {_size_gin(size)}")
    return args


def _size_gin(size: str) -> str:
    return f"models/t5_1_1_{size}.gin"


_machine = ""  # a short tag, set by _run, that ends every figure's line


def _line(name: str, value, unit: str = "", note: str = "") -> None:
    text = "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
    print(f"{name}: {text}{' ' + unit if unit and value is not None else ''}{'  (' + note + ')' if note else ''}"
          f"  [{_machine}]", flush=True)


def _report_throughput(label: str, r: dict) -> None:
    print(f"throughput[{label}]: batch {r['batch']} tokens, {r['dtype']}, {r['model_params']} parameters",
          flush=True)
    where = f"throughput[{label}]"
    _line(f"{where} engine", r["engine_tokens_per_s"], "tokens/s")
    _line(f"{where} reference (bare Flax + optax)", r["reference_tokens_per_s"], "tokens/s")
    _line(f"{where} engine ÷ reference", r["engine_over_reference"], "",
          f"median of {r['repeats']} paired steps; target ≥ 0.95")
    _line(f"{where} engine ÷ reference, XLA bytes accessed", r["engine_over_reference_xla_bytes"])
    _line(f"{where} model FLOPs", r["model_flops_per_step"], "FLOP/step")
    _line(f"{where} MFU", r["engine_mfu"], "", f"of {r['device_kind']} bf16 peak" if r["engine_mfu"] is not None
          else f"no peak FLOP/s known for '{r['device_kind']}'")


@contextlib.contextmanager
def _compilation_cache():
    """A persistent compilation cache for this run only: sections that build the
    same step (throughput, data wait) compile it once. Timings are unaffected."""
    import jax
    if jax.config.jax_compilation_cache_dir:  # the caller has one already
        yield
        return
    with tempfile.TemporaryDirectory(prefix="hpo-bench-jax-cache-") as path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        try:
            yield
        finally:
            jax.config.update("jax_compilation_cache_dir", None)


def _quiet() -> None:
    """The figures alone, as `hpo run` shows its lines alone: TensorFlow's and JAX's start-up
    logs and seqio's and TFDS's advice go (`--verbose` keeps them); errors stay."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.ERROR)
    from hpo.core import quiet
    quiet.libraries()


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--verbose" not in argv:
        _quiet()
    try:
        args = _parse(argv)
    except UserError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    with _compilation_cache():
        try:
            return _run(args)
        except UserError as e:
            print(f"bench: error: {e}", file=sys.stderr)
            return 2


def _throughput(args, gin_files):
    from bench.throughput import train_throughput
    out = {}
    for size in args.sizes or ["default"]:
        files = gin_files if size == "default" else ["default.gin", _size_gin(size), *args.gin]
        out[size] = train_throughput(files, args.bindings, repeats=args.repeats)
        _report_throughput(size, out[size])
    return out


def _guided(args, gin_files):
    from bench.guided_step import guided_step_ratios
    r = guided_step_ratios(gin_files, repeats=args.repeats)
    for key, value in r.items():
        if key.startswith(("ratio@", "plain_step_s@")):
            _line(f"guided_step {key}", value, "" if key.startswith("ratio") else "s")
    return r


def _horizon(args, gin_files):
    from bench.horizon import horizon_costs
    r = horizon_costs(gin_files, args.bindings, repeats=max(3, args.repeats // 4))
    for k in sorted(int(key.split("@")[1]) for key in r if key.startswith("step_ratio@")):
        _line(f"guided horizon {k}: step time ÷ plain", r[f"step_ratio@{k}"], "",
              f"planned memory {r[f'mib@{k}']:.1f} MiB = {r[f'mib_ratio@{k}']:.2f}x plain "
              f"({r['plain_mib']:.1f} MiB), batch {r['batch']}")
    return r


def _forward(args, gin_files):
    from bench.forward import forward_costs
    r = forward_costs(args.gin, args.bindings, repeats=max(3, args.repeats // 4))
    for label, v in r.items():
        for mode in ("one_step", "forward"):
            _line(f"guided {mode} [{label}]: step time ÷ plain", v[f"{mode}_step_ratio"], "",
                  f"planned memory {v[f'{mode}_mib']:.1f} MiB = {v[f'{mode}_mib_ratio']:.2f}x plain "
                  f"({v['plain_mib']:.1f} MiB), {v[f'{mode}_forward_values']} forward values, "
                  f"{v['optimizer']}, batch {v['batch']}")
    return r


def _decode(args, gin_files):
    from bench.decode_speed import cache_speedups, decode_speed
    r = decode_speed(gin_files, args.bindings)
    note = f"{r['sentences']} test sentences, untrained model: every sentence runs to the full length {r['max_len']}"
    _line("decode greedy", r["greedy_sentences_per_s"], "sentences/s", note)
    _line(f"decode beam {r['beam_size']}", r["beam_sentences_per_s"], "sentences/s", note)
    r["cache"] = c = cache_speedups(gin_files, args.bindings)
    for key in (k[: -len("_speedup")] for k in c if k.endswith("_speedup")):
        method, length = key.split("@")
        _line(f"decode {method} at {length} tokens, cached ÷ uncached speed", c[f"{key}_speedup"], "",
              f"{c[f'{key}_cached_sentences_per_s']:.1f} vs {c[f'{key}_uncached_sentences_per_s']:.1f} "
              f"sentences/s, {c['sentences']} random inputs, untrained model")
    return r


def _memory(args, gin_files):
    from bench.memory import training_memory
    r = training_memory(gin_files, args.bindings)
    _line("memory peak RSS", r["peak_rss_mib"], "MiB", f"{r['steps']}-step training run in a subprocess")
    _line("memory device peak", r["device_peak_mib"], "MiB", "peak_bytes_in_use; n/a on CPU")
    return r


def _data_wait(args, gin_files):
    from bench.data_wait import data_wait
    r = data_wait(gin_files, args.bindings)
    _line("data wait", 100 * r["data_wait_fraction"], "% of step time",
          f"{r['data_wait_ms_per_step']:.2f} ms of {1e3 * r['step_s']:.0f} ms per step, real pipeline, "
          f"{r['steps']} steps")
    return r


def _resume(args, gin_files):
    from bench.resume import resume_times
    r = resume_times(gin_files, args.bindings)
    for n in sorted(int(k.split("@")[1]) for k in r if k.startswith("restore_s@")):
        _line(f"resume at step {n}", r[f"restore_s@{n}"], "s",
              f"restore the pipeline's position + first batch; reading {n} batches instead: "
              f"{r[f'skip_s@{n}']:.2f} s; position checkpoint {r[f'checkpoint_mib@{n}']:.1f} MiB")
    return r


def _t5x(args, gin_files):
    from bench.t5x_step import SIZES, in_subprocess
    out = {}
    for size in SIZES:
        r = out[size] = in_subprocess(size, args.repeats)
        where = f"t5x[{size}]"
        print(f"{where}: batch {r['batch']} tokens, float32, {r['model_params']} parameters, hpo's optax "
              f"Adafactor on both", flush=True)
        _line(f"{where} T5X train step", r["t5x_tokens_per_s"], "tokens/s", "t5x.trainer.Trainer")
        _line(f"{where} built-in engine step", r["engine_tokens_per_s"], "tokens/s")
        _line(f"{where} T5X ÷ engine step time", r["t5x_over_engine_step_time"], "",
              f"median of {r['repeats']} paired steps")
        _line(f"{where} hpo's T5X trainer ÷ T5X's step time", r["hpo_t5x_over_t5x_step_time"], "",
              "fixed values injected each step")
        _line(f"{where} guided ÷ plain step time under T5X", r["guided_over_plain_t5x"], "",
              "guide batch = training batch; ideal about 2")
    return out


_SECTION_FNS = {"throughput": _throughput, "guided": _guided, "horizon": _horizon, "forward": _forward,
                "decode": _decode,
                "memory": _memory, "data_wait": _data_wait, "resume": _resume, "t5x": _t5x}
_RESULT_KEYS = {"guided": "guided_step"}  # bench/results.json kept this name before


def _run(args) -> int:
    import jax
    from hpo.core import io as hpo_io
    global _machine
    gin_files = ["default.gin", *args.gin]
    device = jax.devices()[0]
    _machine = f"{jax.device_count()}x {device.device_kind}, {os.cpu_count()} cpus"
    results = {"machine": f"{platform.machine()} {os.cpu_count()} cpus, {jax.device_count()}x {device.device_kind}",
               "jax": jax.__version__, "gin_files": gin_files, "bindings": args.bindings}
    print(f"machine: {results['machine']}  (a shared machine: absolute figures are noisy, ratios less so)",
          flush=True)
    for name in SECTIONS:
        if name not in args.skip:
            start = time.perf_counter()
            results[_RESULT_KEYS.get(name, name)] = _SECTION_FNS[name](args, gin_files)
            print(f"({name} took {time.perf_counter() - start:.0f} s)", flush=True)
    hpo_io.write_json(args.out, results)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
