"""`make bench-gpu` (bench/gpu.sh): the accelerator benchmark, for a GPU machine as it is.

    python3 -m bench.gpu [OUT.json] [--sizes small,base] [--batch 128] [--length 128]
                         [--repeats 10] [--horizon 4] [--budget 460] [--gin.KEY=VALUE ...]

It needs JAX, flax, optax, orbax, numpy, rich and gin-config only: no TensorFlow,
seqio, TFDS, optuna or clu (tests/test_gpu_bench.py runs it under an import guard),
so it runs on a machine with no package index once gin-config's wheel is carried
(bench/gpu.sh). The built-in engine's model, train step and guided step run on
synthetic token batches of the given shape, for each T5 v1.1 size in bfloat16
(configs/models/t5_1_1_<size>.gin + bf16.gin), with T5's 32k vocabulary and the
base config's Adafactor with its rsqrt schedule.

Each size runs in a child process of its own (a clean device-memory peak, and a
crash or out-of-memory there does not end the others); each section in it is
timed after compilation, one that fails is reported and the next still runs, and
no section starts past the size's share of `--budget` seconds. Figures:

- throughput: training tokens/s (batch × (inputs + targets) per step) and
  MFU = batch × model FLOPs per example ÷ step time ÷ (peak FLOP/s × devices),
  model FLOPs as `bench.measure.train_flops_per_example` counts them, peak the
  device's dense bf16 figure (H100 SXM and H200: 989e12);
- guided: guided ÷ plain step time, paired (A B A B ...), for the one-step
  method, a window of K = `--horizon` steps (4; per step) and forward mode on the learning rate;
- decode: cached greedy and beam-4 sentences/s to the full target length (an
  untrained model never stops early: the worst case);
- memory: the device's peak bytes in use after each section (`memory_stats()`),
  the process's peak so far.
"""

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bench.measure import peak_flops, synthetic_batch, timed, train_flops_per_example

T5_VOCAB = 32128  # T5's SentencePiece vocabulary (32k), padded to a multiple of 128 as T5X does
SECTIONS = ("throughput", "decode", "guided")  # the costliest to compile last
FORBIDDEN = ("tensorflow", "seqio", "tensorflow_datasets", "optuna", "clu")  # absent on the GPU machine
_MARK = "bench.gpu section: "


def _parse(argv: Sequence[str]):
    parser = argparse.ArgumentParser(prog="python3 -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=os.path.join("bench", "results-gpu.json"))
    parser.add_argument("--sizes", default="small,base", help="T5 v1.1 sizes (configs/models/t5_1_1_<size>.gin)")
    parser.add_argument("--batch", type=int, default=128, help="sequences per training step")
    parser.add_argument("--length", type=int, default=128, help="input and target tokens per sequence")
    parser.add_argument("--vocab", type=int, default=T5_VOCAB)
    parser.add_argument("--repeats", type=int, default=10, help="paired steps timed per ratio")
    parser.add_argument("--budget", type=float, default=460, help="seconds for all sizes, start-up included")
    parser.add_argument("--horizon", type=int, default=4, help="the guided window's K")
    parser.add_argument("--dtype", default="bf16.gin", help="the precision's gin file ('' for the model's own)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one size, in this process
    args, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if not a.startswith("--gin.")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.gin = rest  # --gin.KEY=VALUE, passed on to each size's process as given
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for name in ("batch", "length", "vocab", "repeats", "horizon"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer")
    from hpo.core.gin_syntax import configs_dir
    for size in args.sizes:
        if not os.path.isfile(os.path.join(configs_dir(), "models", f"t5_1_1_{size}.gin")):
            parser.error(f"--sizes: no model config models/t5_1_1_{size}.gin")
    return args


# ------------------------------------------------------------------ one size (the child)

class Setup:
    """The configured model, optimizer and schedule, the data-parallel placement, and batches."""

    def __init__(self, args, size: str):
        import gin
        from hpo.core.gin_syntax import configs_dir, gin_binding
        from hpo.engine.models.seq2seq import DecodeConfig, Seq2SeqModel
        from hpo.engine.models.t5 import T5Config
        from hpo.engine.trainer import DataParallel
        from hpo.method import optim

        gin.clear_config()
        gin.add_config_file_search_path(configs_dir())
        files = [f"models/t5_1_1_{size}.gin", *([args.dtype] if args.dtype else [])]
        bindings = [gin_binding(*a[len("--gin."):].split("=", 1)) for a in args.gin if "=" in a]
        gin.parse_config_files_and_bindings(files, bindings, finalize_config=False)
        self.files = files
        self.model = Seq2SeqModel(gin.get_configurable(T5Config)(vocab_size=args.vocab))
        self.decode_config = gin.get_configurable(DecodeConfig)
        self.optimizer = optim.OptimizerConfig(name="adafactor")  # base.gin's
        self.values = self.optimizer.hparams()
        self.schedule = optim.learning_rate_schedule("constant * rsqrt_decay", 1.0, 10000, 10 ** 6)
        self.tx = optim.make_optimizer(self.optimizer, self.values)
        self.par = DataParallel()
        self.batch, self.length = args.batch, args.length
        self.lengths = {"inputs": args.length, "targets": args.length}
        rng = np.random.RandomState(0)
        self.train = [synthetic_batch(rng, args.batch, args.length, args.vocab) for _ in range(4)]
        self.guide = synthetic_batch(rng, args.batch, args.length, args.vocab)

    def state(self, tuner=None):
        from hpo.engine.trainer import init_state
        return self.par.put_state(init_state(self.model, self.tx, 0, self.lengths, tuner))

    def plain_step(self):
        from hpo.engine.trainer import train_step
        values = {k: jnp.float32(v) for k, v in self.values.items()}
        return self.par.jit_step(lambda s, b: train_step(s, b, values, model=self.model, tx=self.tx,
                                                         schedule=self.schedule))

    def tuning(self, **kwargs):
        import optax
        from hpo.method import hyper
        specs = {"learning_rate": hyper.DEFAULT_SPECS["learning_rate"]}
        fixed = {k: v for k, v in self.values.items() if k not in specs}
        return hyper.Tuning(specs=specs, fixed_values=fixed, meta_tx=optax.adam(1e-3), **kwargs)


def _throughput(s: Setup, args) -> Dict:
    step, state = s.plain_step(), s.state()
    batches = [s.par.put_batch(b) for b in s.train]
    _, state = timed(step, state, batches[:1])  # compile
    times = []
    for i in range(args.repeats):
        t, state = timed(step, state, [batches[i % len(batches)]])
        times.append(t)
    step_s = statistics.median(times)
    cfg = s.model.config
    flops = s.batch * train_flops_per_example(cfg, s.length, s.length)
    peak = peak_flops(jax.devices()[0].device_kind)
    return {"model_params": int(sum(x.size for x in jax.tree.leaves(state.params))), "dtype": cfg.dtype,
            "step_s": step_s, "tokens_per_s": s.batch * 2 * s.length / step_s,
            "model_flops_per_step": flops, "peak_flops_per_device": peak,
            "mfu": flops / step_s / (peak * jax.device_count()) if peak else None}


def _guided(s: Setup, args) -> Dict:
    """Guided ÷ plain time per training step: one-step, a window of K steps, forward mode on the learning rate."""
    from hpo.engine import guided_step
    plain = s.plain_step()
    plain_state = s.state()
    out = {}
    k = args.horizon
    variants = (("one_step", {}, 1), (f"horizon_{k}", {"horizon": k}, k),
                ("forward", {"mode": "forward", "forward": ["learning_rate"]}, 1))
    for name, settings, k in variants:
        tuning = s.tuning(**settings)
        step = s.par.jit_step(functools.partial(guided_step.guided_update, model=s.model, tx=s.tx, schedule=s.schedule,
                                                tuning=tuning), stacked=k > 1)
        rows = s.train[:k]
        stack = (lambda r: jax.tree.map(lambda *x: np.stack(x), *r)) if k > 1 else (lambda r: r[0])
        batch = s.par.put_batch({"train": stack(rows), "guide": stack([s.guide] * k)}, stacked=k > 1)
        state = s.state(lambda carry, tuning=tuning: tuning.init(10 ** 6, carry))
        start = time.perf_counter()
        _, state = timed(step, state, [batch])  # compile
        compile_s = time.perf_counter() - start
        placed = [s.par.put_batch(b) for b in rows]  # on the device before the clock starts, as `batch`
        _, plain_state = timed(plain, plain_state, placed[:1])
        ratios = []
        for _ in range(args.repeats):
            p, plain_state = timed(plain, plain_state, placed)
            g, state = timed(step, state, [batch])
            ratios.append(g / p)
        out[f"{name}_over_plain"] = statistics.median(ratios)
        out[f"{name}_first_call_s"] = compile_s
        del state
    return out


def _decode(s: Setup, args) -> Dict:
    decode = s.decode_config()
    rng = np.random.RandomState(1)
    inputs = rng.randint(2, s.model.config.vocab_size, (decode.batch_size, s.length)).astype(np.int32)
    params = s.model.init(jax.random.PRNGKey(0), s.lengths)
    out = {"sentences": len(inputs), "beam_size": decode.beam_size, "max_len": s.length}
    for method in ("greedy", "beam"):
        run = lambda: s.model.predict(params, inputs, s.length, method, decode.beam_size,  # noqa: E731
                                      decode.alpha).block_until_ready()
        run()  # compile
        times = []
        for _ in range(max(2, args.repeats // 5)):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        out[f"{method}_sentences_per_s"] = len(inputs) / statistics.median(times)
    return out


_SECTION_FNS: Dict[str, Callable] = {"throughput": _throughput, "guided": _guided, "decode": _decode}


def _device_peak_mib() -> Optional[float]:
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2 ** 20


def _child(args) -> int:
    """Runs the sections for one size, printing each section's result as a JSON line."""
    deadline = time.monotonic() + args.budget
    start = time.perf_counter()
    setup = Setup(args, args.child)
    _emit({"section": "setup", "files": setup.files, "seconds": time.perf_counter() - start,
           "device": f"{jax.device_count()}x {jax.devices()[0].device_kind}", "jax": jax.__version__})
    for name in SECTIONS:
        if time.monotonic() > deadline:
            _emit({"section": name, "skipped": f"the size's budget ({args.budget:.0f} s) was spent"})
            continue
        start = time.perf_counter()
        try:
            result = _SECTION_FNS[name](setup, args)
        except Exception as e:  # noqa: BLE001  (reported; the next section still runs)
            result = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
        _emit({"section": name, **result, "seconds": time.perf_counter() - start,
               "device_peak_mib": _device_peak_mib()})
    return 0


def _emit(row: Dict) -> None:
    print(_MARK + json.dumps(row), flush=True)


# ------------------------------------------------------------------ all sizes (the parent)

def _run_size(args, size: str, budget: float) -> Dict:
    """One size in a child process: its sections' rows, whatever it got through (a crash or the
    time limit ends it, and what it printed before counts)."""
    command = [sys.executable, "-m", "bench.gpu", "--child", size, "--budget", str(budget),
               "--batch", str(args.batch), "--length", str(args.length), "--vocab", str(args.vocab),
               "--repeats", str(args.repeats), "--horizon", str(args.horizon), "--dtype", args.dtype,
               *args.gin]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryFile("w+") as err:
        try:
            # Sections are not cut off midway: the child's own deadline stops new ones; this is the backstop.
            done = subprocess.run(command, stdout=subprocess.PIPE, stderr=err, text=True, cwd=root,
                                  timeout=budget + 120)
            stdout, ended = done.stdout, (f"exit status {done.returncode}" if done.returncode else None)
        except subprocess.TimeoutExpired as e:
            stdout, ended = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), \
                "stopped: over its time limit"
        err.seek(0)
        tail = err.read()[-1500:]
    out: Dict = {}
    for line in stdout.splitlines():
        if line.startswith(_MARK):
            row = json.loads(line[len(_MARK):])
            out[row.pop("section")] = row
            _report(size, list(out)[-1], out[list(out)[-1]])
    if ended:
        out["ended"] = f"{ended}; stderr: {tail}"
        print(f"[{size}] child {ended}: {tail.strip().splitlines()[-1] if tail.strip() else ''}", flush=True)
    return out


def _report(size: str, section: str, r: Dict) -> None:
    where = f"[{size}] {section}"
    if "error" in r or "skipped" in r:
        print(f"{where}: {'failed: ' + r['error'] if 'error' in r else 'skipped: ' + r['skipped']}", flush=True)
    elif section == "setup":
        print(f"{where}: {' + '.join(r['files'])} on {r['device']}, jax {r['jax']}", flush=True)
    elif section == "throughput":
        mfu = f"{100 * r['mfu']:.1f}% MFU" if r["mfu"] is not None else "MFU n/a (no peak known for this device)"
        print(f"{where}: {r['model_params']:,} parameters, {r['dtype']}: {r['tokens_per_s']:,.0f} "
              f"tokens/s, {1e3 * r['step_s']:.1f} ms/step, {mfu}", flush=True)
    elif section == "guided":
        k = next(key for key in r if key.startswith("horizon_") and key.endswith("_over_plain")).split("_")[1]
        print(f"{where}: guided ÷ plain step time: one-step {r['one_step_over_plain']:.2f}, K = {k} "
              f"{r[f'horizon_{k}_over_plain']:.2f}, forward {r['forward_over_plain']:.2f}", flush=True)
    elif section == "decode":
        print(f"{where}: cached decoding to {r['max_len']} tokens: greedy {r['greedy_sentences_per_s']:.1f}, "
              f"beam {r['beam_size']} {r['beam_sentences_per_s']:.1f} sentences/s", flush=True)
    if section != "setup":
        peak = r.get("device_peak_mib")
        print(f"{where}: took {r.get('seconds', 0):.0f} s; device peak so far "
              f"{'n/a (no counter on this device)' if peak is None else f'{peak:,.0f} MiB'}", flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.child:
        return _child(args)
    from hpo.core import io as hpo_io
    # This process leaves the device alone (JAX would take most of its memory): the children use it.
    start = time.monotonic()
    results = {"cpus": os.cpu_count(), "jax": jax.__version__, "batch": f"{args.batch}x({args.length}+{args.length})",
               "vocab": args.vocab, "gin": args.gin, "budget_s": args.budget,
               "mfu": "batch × train_flops_per_example ÷ step time ÷ (dense bf16 peak × devices)", "sizes": {}}
    print(f"jax {jax.__version__}; batch {results['batch']} tokens; budget {args.budget:.0f} s", flush=True)
    for i, size in enumerate(args.sizes):
        left = args.budget - (time.monotonic() - start)
        results["sizes"][size] = _run_size(args, size, max(0.0, left / (len(args.sizes) - i)))
        results.setdefault("device", results["sizes"][size].get("setup", {}).get("device"))
        hpo_io.write_json(args.out, results)  # written after each size (write then rename)
    results["elapsed_s"] = time.monotonic() - start
    hpo_io.write_json(args.out, results)
    print(f"took {results['elapsed_s']:.0f} s; written: {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
