"""Every TFDS task through TFDS's real builder code, not mock_data's stand-in for it: the
installed TFDS prepares each dataset (its real builder, writer and metadata, with made-up
examples in place of the download) and the run's task reads it back. The mock-data tests
replace the builder's constructor, so a dependency its real code imports (importlib_resources,
once) would go unseen there. Data that is not prepared is one line, and nothing downloads."""

import re

import pytest
import seqio
import tensorflow_datasets as tfds

import tfds_runs
from hpo.cli.main import main
from hpo.core.errors import UserError
from hpo.data import catalog

pytestmark = pytest.mark.integration  # conftest: the test tiers

# The gin files a user runs, with every TFDS task they read; only WMT's vocabulary is made small.
RUNS = {"tasks/wmt19_lten.gin": ("wmt_task.vocab_size = 200", "wmt_task.vocab_examples = 40"),
        "t5/c4_glue.gin": ()}
DATA_DIR_BINDINGS = ("wmt_task.tfds_data_dir", "c4_task.tfds_data_dir", "glue_tfds_task.tfds_data_dir")


def _tasks(gin_file, data_dir):
    names = tfds_runs.run_task_names(gin_file, *RUNS[gin_file], *(f"{b} = '{data_dir}'" for b in DATA_DIR_BINDINGS))
    return [catalog.get_task(name) for name in names]


def _prepare(tfds_name: str, splits, data_dir: str, monkeypatch) -> None:
    """TFDS's own builder prepares `tfds_name` in `data_dir`, its split generators giving
    made-up examples of the builder's own features instead of reading the download."""
    builder = tfds.builder(tfds_name, data_dir=data_dir)  # the real constructor (code_path and all)

    def split_generators(self, dl_manager):  # train's 1% guide slice needs 100 examples
        fake = {split: tfds.testing.mocking.RandomFakeGenerator(self.info.features, 200 if split == "train" else 8)
                for split in splits}
        return {split: ((f"{split}-{i}", ex) for i, ex in enumerate(fake[split])) for split in splits}

    monkeypatch.setattr(type(builder), "_split_generators", split_generators)
    builder.download_and_prepare()
    assert builder.is_prepared() and set(builder.info.splits) == set(splits)


def _wanted(data_dir):
    """Each TFDS dataset the runs read, with the TFDS splits they read, learnt under mock data
    (WMT's task reads its training text for a vocabulary as it is made)."""
    wanted = {}
    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
        for gin_file in RUNS:
            for task in _tasks(gin_file, data_dir):
                loader = task.source.tfds_dataset
                wanted.setdefault(loader.name, set()).update(
                    re.sub(r"\[.*\]$", "", loader._map_split(s)) for s in task.source.splits)
    return wanted


def test_every_tfds_task_reads_what_tfds_real_builder_prepared(tmp_path, monkeypatch):
    wanted = _wanted(tmp_path / "mock")
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path / "hpo"))  # WMT's vocabulary from the prepared text
    for tfds_name, splits in wanted.items():
        _prepare(tfds_name, splits, str(tmp_path / "tfds"), monkeypatch)
    for gin_file in RUNS:
        for task in _tasks(gin_file, tmp_path / "tfds"):
            assert isinstance(task.source, seqio.TfdsDataSource), task.name
            for split in task.source.splits:
                examples = list(task.get_dataset({"inputs": 64, "targets": 64}, split=split, shuffle=False)
                                .as_numpy_iterator())
                assert examples and all(len(ex["inputs"]) and len(ex["targets"]) for ex in examples), task.name
    assert {n.split("/")[0] for n in wanted} == {"wmt19_translate", "c4", "glue"}, wanted
    assert len(wanted) >= 10, wanted  # C4, WMT19 and each GLUE benchmark


@pytest.mark.parametrize("gin_file", RUNS)
def test_data_not_prepared_is_one_line_that_names_tfds_build_and_downloads_nothing(gin_file, tmp_path, capsys,
                                                                                  monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("a run tried to download and prepare TFDS data")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    for task in _tasks(gin_file, tmp_path):
        with pytest.raises(UserError, match=fr"^TFDS data {re.escape(task.source.tfds_dataset.name)} is not "
                                            fr"prepared in {tmp_path}: run `tfds build .* --data_dir={tmp_path}`"):
            next(task.get_dataset({"inputs": 64, "targets": 64}, split="dev", shuffle=False).as_numpy_iterator())
    bindings = [f"--gin.{b}='{tmp_path}'" for b in DATA_DIR_BINDINGS]
    assert main(["run", "--strategy=fixed", f"--gin_file={gin_file}", *bindings,
                 f"--model_dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not prepared in" in err[0] and "tfds build" in err[0], err
