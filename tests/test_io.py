"""Result files on local disks and on object stores (TensorFlow's ram:// file system stands in
for gs://, through the same tf.io.gfile calls)."""

import pytest

from helpers import fill_the_disk
from hpo.core import distributed, io as hpo_io
from hpo.core.errors import UserError
from hpo.flow import records


def test_text_and_json_on_a_url():
    path = "ram://hpo-io-test/run/record.json"
    hpo_io.write_json(path, {"a": [1, 2]})
    assert hpo_io.exists(path) and hpo_io.isfile(path) and hpo_io.isdir("ram://hpo-io-test/run")
    assert hpo_io.read_json(path) == {"a": [1, 2]}
    hpo_io.write_text(path, "replaced\n")
    assert hpo_io.read_text(path) == "replaced\n"
    assert hpo_io.read_json("ram://hpo-io-test/missing.json", default=[]) == []


def test_records_in_a_model_dir_on_a_url():
    model_dir = "ram://hpo-io-test/model"
    records.add(model_dir, {"task": "t", "strategy": "fixed", "seed": 0, "run_dir": "fixed/seed0", "x": 1})
    records.add(model_dir, {"task": "t", "strategy": "fixed", "seed": 0, "run_dir": "fixed/seed0", "x": 2})
    assert records.load(model_dir) == [{"task": "t", "strategy": "fixed", "seed": 0, "run_dir": "fixed/seed0",
                                        "x": 2}]


def test_urls_stay_urls():
    assert hpo_io.abspath("gs://bucket/dir") == "gs://bucket/dir"
    assert hpo_io.abspath("relative").startswith("/")


def test_only_the_leader_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "is_leader", lambda: False)
    hpo_io.write_text(str(tmp_path / "x.txt"), "no")
    records.add(str(tmp_path), {"task": "t"})
    assert list(tmp_path.iterdir()) == []


def test_a_local_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    hpo_io.write_json(str(path), [1])

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(hpo_io.os, "replace", broken)
    with pytest.raises(UserError, match=f"cannot write {path}: disk full"):
        hpo_io.write_json(str(path), [2])
    assert hpo_io.read_json(str(path)) == [1] and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_a_full_disk_leaves_the_old_records_and_no_partial_file(tmp_path, monkeypatch):
    """ENOSPC after part of the new comparison.json reached the disk: a UserError naming the file,
    the old file byte for byte, no temporary file left behind."""
    records.add(str(tmp_path), {"task": "t", "strategy": "fixed", "seed": 0, "run_dir": "fixed/seed0"})
    before = (tmp_path / "comparison.json").read_bytes()
    fill_the_disk(monkeypatch)
    with pytest.raises(UserError, match="comparison.json: No space left on device"):
        records.add(str(tmp_path), {"task": "t", "strategy": "fixed", "seed": 1, "run_dir": "fixed/seed1"})
    assert (tmp_path / "comparison.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["comparison.json", "comparison.json.lock"]


@pytest.mark.parametrize("through", ["gfile", "os"])
def test_a_directory_copy_is_whole_or_absent(through, tmp_path):
    """PBT's exploit on T5X copies a checkpoint directory, on a local disk or on an object store
    (file by file through gfile, then renamed as T5X renames its own checkpoints on gs://); a
    partial copy left by a killed worker is replaced, never taken for the copy. A file:// URL
    takes the gfile path here (ram://'s rename drops a directory's subdirectories)."""
    root = f"file://{tmp_path}" if through == "gfile" else str(tmp_path)
    hpo_io.write_text(f"{root}/a/x", "x\n")
    hpo_io.write_text(f"{root}/a/sub/y", "y\n")
    hpo_io.write_text(f"{root}/b.hpo-copy/stale", "a killed copy's\n")
    hpo_io.copytree(f"{root}/a", f"{root}/b")
    assert hpo_io.read_text(f"{root}/b/x") == "x\n" and hpo_io.read_text(f"{root}/b/sub/y") == "y\n"
    assert not hpo_io.exists(f"{root}/b/stale") and not hpo_io.exists(f"{root}/b.hpo-copy")
