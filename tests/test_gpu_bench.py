"""The accelerator benchmark (bench/gpu.sh → bench/gpu.py) on the CPU at a tiny size, with only
what the GPU machine has: an import guard in every process makes the packages it lacks fail to
import, and gin-config comes from the wheel the command carries. So the path cannot rot between
the rare times a GPU is at hand."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from bench import gpu
from bench.measure import train_flops_per_example
from hpo.engine.models.t5 import T5Config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--sizes", "tiny", "--batch", "2", "--length", "8", "--vocab", "128", "--repeats", "2", "--horizon", "2",
        "--dtype", "",
        "--gin.DecodeConfig.batch_size=3"]

# sitecustomize runs first in every Python process that has this folder on its path (the benchmark's
# parent and each size's child): it refuses the packages and the installed hpo, and logs where each
# top-level module came from.
GUARD = textwrap.dedent("""
    import atexit, json, os, sys

    class _Absent:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {forbidden!r}:
                raise ImportError(name + " is not on the GPU machine")

    sys.meta_path.insert(0, _Absent())
    # Nor is hpo installed there: the checkout on PYTHONPATH is all (no editable install's finder,
    # which would map hpo.cli to cli/).
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]

    def _log():
        with open(os.environ["GPU_BENCH_IMPORTS"], "a") as f:
            f.write(json.dumps({{name: getattr(module, "__file__", None)
                                for name, module in list(sys.modules.items()) if "." not in name}}) + "\\n")

    atexit.register(_log)
""")


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu-bench")
    (tmp / "guard").mkdir()
    (tmp / "guard" / "sitecustomize.py").write_text(GUARD.format(forbidden=set(gpu.FORBIDDEN)))
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(tmp / "guard"),
           "GPU_SITE": str(tmp / "site"), "GPU_BENCH_IMPORTS": str(tmp / "imports.jsonl")}
    out = subprocess.run([os.path.join(REPO, "bench", "gpu.sh"), str(tmp / "results-gpu.json"), *TINY],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    with open(tmp / "imports.jsonl") as f:
        imports = [json.loads(line) for line in f]
    results = json.load(open(tmp / "results-gpu.json")) if out.returncode == 0 else None
    return out, results, imports, str(tmp / "site")


@pytest.mark.integration
def test_it_imports_nothing_the_gpu_machine_lacks_and_gin_from_the_carried_wheel(stand_in):
    out, _, imports, site = stand_in
    assert out.returncode == 0, out.stderr[-3000:]
    runs = [modules for modules in imports if "bench" in modules]  # (pip installed the wheel in another)
    assert len(runs) == 2  # the benchmark and the one size's child, each guarded
    for modules in imports:
        assert not set(modules) & set(gpu.FORBIDDEN)
    assert any("gin" in modules for modules in runs)  # the size's child parses its gin files
    for modules in runs:
        assert modules["hpo"].startswith(REPO)  # the checkout's, as on the GPU machine
        assert "gin" not in modules or modules["gin"].startswith(site)  # not the venv's gin-config
    assert any("hpo" in modules and "flax" in modules for modules in runs)  # the engine's model and steps ran


@pytest.mark.integration
def test_it_reports_every_figure_of_every_section(stand_in):
    out, results, _, _ = stand_in
    assert out.returncode == 0, out.stderr[-3000:]
    tiny = results["sizes"]["tiny"]
    assert "cpu" in results["device"].lower()
    t = tiny["throughput"]
    config = T5Config(vocab_size=128, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64, num_encoder_layers=1,
                      num_decoder_layers=1)  # configs/models/t5_1_1_tiny.gin
    assert t["model_flops_per_step"] == 2 * train_flops_per_example(config, 8, 8)
    assert t["tokens_per_s"] == pytest.approx(2 * 16 / t["step_s"])
    assert t["mfu"] is None  # no peak FLOP/s for a CPU
    g = tiny["guided"]
    for variant in ("one_step", "horizon_2", "forward"):
        assert 0 < g[f"{variant}_over_plain"] < 100
    d = tiny["decode"]
    assert d["sentences"] == 3 and d["greedy_sentences_per_s"] > 0 and d["beam_sentences_per_s"] > 0
    for section in ("throughput", "decode", "guided"):
        assert tiny[section]["seconds"] > 0 and "device_peak_mib" in tiny[section]
        assert f"[tiny] {section}: took" in out.stdout
    assert "tokens/s" in out.stdout and "guided ÷ plain step time: one-step" in out.stdout and "K = 2" in out.stdout


def _child(monkeypatch, capsys, *args):
    """bench.gpu's per-size process, in this one, with fake sections; its rows."""
    monkeypatch.setattr(gpu, "_SECTION_FNS", {
        "throughput": lambda s, a: (_ for _ in ()).throw(RuntimeError("out of memory")),
        "decode": lambda s, a: {"greedy_sentences_per_s": 1.0}, "guided": lambda s, a: {"one_step_over_plain": 2.0}})
    assert gpu.main(["--child", "tiny", *TINY[2:], *args]) == 0
    return {row.pop("section"): row for row in (json.loads(line[len(gpu._MARK):])
                                                for line in capsys.readouterr().out.splitlines())}


def test_a_failing_section_is_reported_and_the_next_still_run(monkeypatch, capsys):
    rows = _child(monkeypatch, capsys)
    assert rows["throughput"]["error"] == "RuntimeError: out of memory"
    assert rows["decode"]["greedy_sentences_per_s"] == 1.0 and rows["guided"]["one_step_over_plain"] == 2.0


def test_no_section_starts_once_the_budget_is_spent(monkeypatch, capsys):
    rows = _child(monkeypatch, capsys, "--budget", "0")
    assert [rows[s]["skipped"] for s in gpu.SECTIONS] == ["the size's budget (0 s) was spent"] * 3


@pytest.mark.parametrize("args, message", [
    (["--sizes", "huge"], "no model config models/t5_1_1_huge.gin"),
    (["--batch", "0"], "--batch must be a positive integer"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_arguments_are_one_line_and_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        gpu.main(args)
    assert e.value.code == 2 and message in capsys.readouterr().err
