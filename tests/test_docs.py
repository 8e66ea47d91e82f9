"""The docs cannot rot: every shell command that README.md and docs/*.md show in a ```sh block is
either run here (offline, in seconds) or listed below as not runnable here, with the reason; the
flags of every `hpo` command are `hpo`'s, its gin files exist, and every relative link resolves.

A command added to the docs fails `test_every_command_is_run_or_listed` until it is put in one of
the lists; a listed command that the docs no longer show fails it too."""

import concurrent.futures
import importlib.util
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCS_PAGES = sorted((ROOT / "docs").glob("*.md"))
BIN = os.path.dirname(sys.executable)  # the venv's bin: `hpo`, `tfds`, `pip`

COMMAND_FENCES = {"sh"}  # one command a line (a trailing backslash continues it; `#` starts a comment)
OUTPUT_FENCES = {"text"}  # what a command prints: not run

# Run as shown, in one temporary directory (with the venv's bin first on the PATH and `.venv` there
# linking to it): the command, and text its output must hold. The `hpo … --help` commands run
# together, through the `hpo` entry point in one process (each `hpo` process spends seconds on imports).
RUN = {
    "hpo run --help": "--strategy STRATEGY",
    "hpo probe --help": "--probe_steps",
    "hpo table --help": "--out OUT_DIR",
    "hpo run --strategy=fixed --gin_file=test.gin --model_dir=tiny": "test BLEU",
    "hpo table tiny": "synthetic_translation | fixed",
}

# Run with the script's own --dry_run (it prints every command instead of running it).
DRY_RUN = {
    "experiments/tpu_vm.sh --tpu hpo-v4 --zone us-central2-b --model_dir gs://BUCKET/hpo --storage "
    "postgresql://hpo:PASSWORD@10.0.0.5:5432/hpo -- --strategy=fixed,guided,optuna "
    "--gin_file=t5x/examples/t5/t5_1_1/small.gin --gin_file=t5x/translation.gin "
    "--gin.MIXTURE_OR_TASK_NAME=wmt19_lten": ".venv/bin/hpo run --multihost --backend=t5x",
}

TRAINS = "trains for minutes to hours"
T5X_RUN = "trains with T5X for minutes or more"
NETWORK = "needs the network"
PLACEHOLDER = "names placeholder paths (DIR, /path/to/…)"

# Shown, not run here: the command, and why.
NOT_RUN = {
    # README.md
    "make demo": TRAINS + " (the demo)",
    "make test": "the whole suite, about 30 minutes",
    ".venv/bin/hpo run --strategy=fixed,guided,optuna,pbt --model_dir=hpo-results": TRAINS + " (the demo, then PBT)",
    "tfds build wmt19_translate/lt-en:1.0.0": NETWORK + " (downloads WMT19)",
    ".venv/bin/hpo run --gin_file=tasks/wmt19_lten.gin --gin_file=models/t5_1_1_small.gin --gin_file=bf16.gin "
    "--model_dir=wmt19": "needs prepared TFDS WMT19 data; " + TRAINS,
    "make setup-t5x": NETWORK + " or ../shared/wheels; installs packages",
    ".venv/bin/hpo run --backend=t5x": T5X_RUN,
    # docs/benchmarks.md
    "make bench": "a few minutes of benchmarks (tests/test_bench.py runs it)",
    "make bench-gpu": "a GPU benchmark (tests/test_gpu_bench.py runs it at a tiny size on the CPU)",
    # docs/configuration.md
    "hpo run --strategy=fixed --model_dir=/tmp/run1": TRAINS + " (the embedded task's full budget)",
    "hpo run --strategy=fixed,guided --gin_file=default.gin --gin_file=paper.gin --model_dir=DIR":
        TRAINS + "; " + PLACEHOLDER,
    "HPO_DATA_DIR=/tmp/paperdata hpo run --strategy=fixed,guided --gin_file=default.gin --gin_file=paper.gin "
    "--model_dir=/tmp/paper1": TRAINS,
    "HPO_DATA_DIR=/tmp/paperdata hpo run --strategy=guided --gin_file=default.gin --gin_file=paper.gin "
    "--model_dir=/tmp/paper2 --gin.Guided.tune=['learning_rate']": TRAINS,
    "hpo table /tmp/paper1 /tmp/paper2": "tabulates the two runs above",
    "experiments/embedded_comparison.sh DIR --gin_file=default.gin --gin_file=paper.gin --claims "
    "--gin.Guided.mode='one_step'": TRAINS + " (20 minutes); " + PLACEHOLDER,
    # docs/development.md
    "make test-unit": "the unit tier of the suite, about a minute (this file's own tier runs within it)",
    # docs/probe.md
    "hpo probe --model_dir=DIR --seeds=0,1 --probe_steps=0,25,50": TRAINS + "; " + PLACEHOLDER,
    "HPO_DATA_DIR=/tmp/probedata hpo probe --model_dir=/tmp/probe2": TRAINS + " (10 minutes)",
    # docs/robustness.md
    "python experiments/kill_harness.py --work_dir /tmp/kills --kills_per_strategy 30 --preempt_every 3 -- "
    "--gin_file=test.gin": "kills and reruns hpo run 30 times a strategy (tests/test_kill.py runs 7)",
    # docs/strategies.md
    "experiments/embedded_comparison.sh DIR --claims --gin.Guided.mode='one_step'": TRAINS + "; " + PLACEHOLDER,
    "hpo run --strategy=guided --seeds=3: --claims --model_dir=DIR-fwd1": TRAINS,
    "hpo run --strategy=guided --seeds=3: --gin.Guided.discount=0.99 --model_dir=DIR-fwd0.99": TRAINS,
    "hpo table DIR DIR-fwd1 DIR-fwd0.99 DIR-fwd0.9": "tabulates the runs above; " + PLACEHOLDER,
    # docs/t5-glue.md
    "hpo run --gin_file=t5/embedded.gin": TRAINS + " (T5 pretraining, then GLUE fine-tuning)",
    # docs/t5x.md
    "hpo run --backend=t5x": T5X_RUN,
    "hpo run --backend=t5x --strategy=fixed,guided,optuna --model_dir=DIR "
    "--gin_file=t5x/examples/t5/t5_1_1/tiny.gin --gin_file=t5x/translation.gin": T5X_RUN,
    ".venv/bin/pip install -e .[t5x]": NETWORK + "; installs packages",
    ".venv/bin/pip install --no-deps "
    "git+https://github.com/google-research/t5x@cc342d419ec3e3e9c4bf1df33c82330cafdc1e16 "
    "git+https://github.com/google/airio@69897df7d9a427b947a9f7bb4164c7782b43e601 "
    "git+https://github.com/google-research/jestimator@326824a477feef6d92e6f44175000907a72899ca":
        NETWORK + "; installs packages",
    "hpo run --backend=t5x --strategy=fixed,guided,optuna --model_dir=DIR "
    "--gin_file=t5x/examples/t5/t5_1_1/small.gin --gin_file=t5x/configs/runs/finetune.gin "
    "--gin_file=t5x/optax_adafactor.gin --gin_file=t5x/translation_tasks.gin "
    "--gin.INITIAL_CHECKPOINT_PATH=/path/to/checkpoint_1000000 --gin.TRAIN_STEPS=1010000":
        "needs a T5X checkpoint; " + T5X_RUN,
    "hpo run --backend=t5x --gin_file=t5x/t5_embedded.gin": T5X_RUN,
    "hpo run --backend=t5x --gin_file=t5x/examples/t5/t5_1_1/small.gin --gin_file=t5x/pretrain_glue.gin "
    "--gin.MIXTURE_OR_TASK_NAME=c4_span_corruption --gin.TASK_FEATURE_LENGTHS={'inputs': 512, 'targets': 114} "
    "--gin.GlueFinetuning.source='tfds' --gin.t5_vocabulary.path=/path/to/sentencepiece.model":
        "needs prepared C4 and GLUE data and a vocabulary; " + T5X_RUN,
}


# --- Reading the pages --------------------------------------------------------------------------

def fences(page: pathlib.Path):
    """(language, first line number, lines) of each fenced block."""
    blocks, block = [], None
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("```"):
            if block is None:
                block = (line[3:].strip(), number, [])
            else:
                blocks.append(block)
                block = None
        elif block is not None:
            block[2].append(line)
    assert block is None, f"{page.name}:{block[1]}: a code fence is not closed"
    return blocks


def commands(page: pathlib.Path):
    """(where, text as shown, key) of each command: the key is its words, as the shell splits them,
    joined by single spaces."""
    found = []
    for language, start, lines in fences(page):
        if language not in COMMAND_FENCES:
            continue
        text, first = "", None
        for offset, line in enumerate(lines):
            if not line.strip() and not text:
                continue
            first = start + 1 + offset if not text else first
            text += line.rstrip() + "\n"
            if not line.rstrip().endswith("\\"):
                words = shlex.split(text.replace("\\\n", " "), comments=True)  # as the shell joins lines
                if words:
                    found.append((f"{page.relative_to(ROOT)}:{first}", text.strip(), " ".join(words)))
                text = ""
        assert not text, f"{page.name}:{first}: a command ends with a backslash"
    return found


def all_commands():
    return [c for page in PAGES for c in commands(page)]


def hpo_words(key: str):
    """The arguments of the `hpo` command in a docs command (also after a script's `--`), or None."""
    words = shlex.split(key)
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value prefixes
        words = words[1:]
    if words and words[0] in ("hpo", ".venv/bin/hpo"):
        return words[1:]
    if words and words[0] == "experiments/tpu_vm.sh" and "--" in words:
        return ["run", *words[words.index("--") + 1:]]
    return None


# --- The partition ------------------------------------------------------------------------------

def test_fences_are_labelled():
    for page in PAGES:
        for language, start, _ in fences(page):
            assert language in COMMAND_FENCES | OUTPUT_FENCES, (
                f"{page.relative_to(ROOT)}:{start}: a code fence must say ```sh (commands, checked by "
                f"tests/test_docs.py) or ```text (output), not {language!r}")


def test_every_command_is_run_or_listed():
    listed = [RUN, DRY_RUN, NOT_RUN]
    assert not set(RUN) & set(DRY_RUN) and not (set(RUN) | set(DRY_RUN)) & set(NOT_RUN)
    shown = all_commands()
    unknown = [f"{where}: {key}" for where, _, key in shown if not any(key in group for group in listed)]
    assert not unknown, ("commands in the docs that tests/test_docs.py neither runs nor lists as not "
                         "runnable here (add each to RUN, DRY_RUN or NOT_RUN):\n" + "\n".join(unknown))
    keys = {key for _, _, key in shown}
    stale = [key for group in listed for key in group if key not in keys]
    assert not stale, "listed in tests/test_docs.py, but no longer in the docs:\n" + "\n".join(stale)
    assert all(reason for reason in NOT_RUN.values())


def _gin_file_exists(name: str) -> bool:
    if os.path.exists(ROOT / "configs" / name):
        return True
    if name.startswith(("t5x/examples/", "t5x/configs/")):  # T5X's own, found where T5X is installed
        spec = importlib.util.find_spec("t5x")
        return spec is None or os.path.exists(pathlib.Path(spec.origin).parent.parent / name)
    return False


def test_gin_files_exist():
    missing = []
    for where, _, key in all_commands():
        for word in hpo_words(key) or []:
            if word.startswith("--gin_file=") and not _gin_file_exists(word.split("=", 1)[1]):
                missing.append(f"{where}: {word}")
    assert not missing, "gin files that neither configs/ nor T5X has:\n" + "\n".join(missing)


# --- Links and pages ----------------------------------------------------------------------------

def _prose(page: pathlib.Path) -> str:
    """The page without its fenced blocks and code spans."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(page: pathlib.Path):
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, -1, -2 for repeats."""
    seen, anchors = {}, set()
    for line in _prose_lines_with_headings(page):
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _prose_lines_with_headings(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return [line for line in text.splitlines() if re.match(r"#{1,6} ", line)]


def test_relative_links_resolve():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page)):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_docs_page_is_linked_and_says_what_it_covers():
    index = (ROOT / "docs" / "README.md").read_text()
    for page in DOCS_PAGES:
        lines = page.read_text().splitlines()
        assert lines[0].startswith("# ") and not lines[1] and lines[2] and not lines[3], (
            f"{page.name}: a title, then one line saying what the page covers")
        if page.name != "README.md":
            assert f"]({page.name})" in index, f"docs/README.md does not link {page.name}"


# --- Running them -------------------------------------------------------------------------------

def _run(command: str, cwd, timeout=300):
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", ""), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _check(command, expected, out):
    assert out.returncode == 0, f"{command}\nexit status {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    assert expected in out.stdout + out.stderr, f"{command}\nprinted no {expected!r}:\n{out.stdout[-2000:]}"
    return out.stdout


# The `hpo` console script's entry point, called with each argv in turn; prints a JSON list of
# {"code", "stdout"}.
HELP_DRIVER = r"""
import contextlib, io, json, sys
from importlib.metadata import entry_points
entry = next(e for e in entry_points(group="console_scripts") if e.name == "hpo").load()
results = []
for argv in json.loads(sys.argv[1]):
    sys.argv = ["hpo", *argv]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = entry()
        except SystemExit as stop:
            code = stop.code
    results.append({"code": code or 0, "stdout": out.getvalue()})
print(json.dumps(results))
"""


def _helps(keys, cwd):
    argvs = [shlex.split(key)[1:] for key in keys]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", HELP_DRIVER, json.dumps(argvs)], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{keys}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    results = json.loads(out.stdout.splitlines()[-1])
    for key, result in zip(keys, results):
        assert result["code"] == 0, f"{key}\nexit status {result['code']}\n{result['stdout'][-2000:]}"
        assert RUN[key] in result["stdout"], f"{key}\nprinted no {RUN[key]!r}:\n{result['stdout'][-2000:]}"
    return {key: result["stdout"] for key, result in zip(keys, results)}


def _flags(help_text: str):
    return set(re.findall(r"(--[a-z_]+)", help_text))


@pytest.mark.integration
def test_commands_run(tmp_path):
    """RUN's and DRY_RUN's commands exit 0 and print what they should; every `hpo` command the docs
    show uses only flags that its `--help` lists."""
    (tmp_path / ".venv").symlink_to(pathlib.Path(BIN).parent)
    (tmp_path / "experiments").symlink_to(ROOT / "experiments")
    shown = {key: text for _, text, key in all_commands()}
    helps = [key for key in RUN if re.fullmatch(r"hpo \w+ --help", key)]
    rest = [key for key in RUN if key not in helps]  # in order: the tiny run, then its table

    def chain(keys, dry_run=False):
        outputs = {}
        for key in keys:
            text = shown[key]
            if dry_run:
                script, _, args = text.partition(" ")
                text = f"{script} --dry_run {args}"
            outputs[key] = _check(text, (DRY_RUN if dry_run else RUN)[key], _run(text, tmp_path))
        return outputs

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        jobs = [pool.submit(chain, rest), pool.submit(_helps, helps, tmp_path), pool.submit(chain, list(DRY_RUN), True)]
        outputs = {k: v for job in jobs for k, v in job.result().items()}

    known = {"run": _flags(outputs["hpo run --help"]), "probe": _flags(outputs["hpo probe --help"]),
             "table": _flags(outputs["hpo table --help"])}
    unknown = []
    for where, _, key in all_commands():
        words = hpo_words(key)
        if not words:
            continue
        assert words[0] in known, f"{where}: no such command: hpo {words[0]}"
        for word in words[1:]:
            flag = word.split("=", 1)[0]
            if flag.startswith("--") and not flag.startswith("--gin.") and flag not in known[words[0]]:
                unknown.append(f"{where}: hpo {words[0]} {flag}")
    assert not unknown, "flags that `hpo … --help` does not list:\n" + "\n".join(unknown)
