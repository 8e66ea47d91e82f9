"""TFDS sources that read only what `tfds build` prepared: a run never downloads, and
data that is not there is one line naming the command that prepares it. Every TFDS task
(WMT, C4, GLUE) makes its source here."""

from typing import Mapping, Optional

import seqio

from hpo.core.errors import UserError


class PreparedTfdsSource(seqio.TfdsDataSource):
    """seqio's TFDS source, read-only (seqio would otherwise let TFDS download and prepare)."""

    def __init__(self, tfds_name: str, splits: Mapping[str, str], tfds_data_dir: Optional[str] = None):
        super().__init__(tfds_name=tfds_name, splits=splits, tfds_data_dir=tfds_data_dir, read_only=True)

    def get_dataset(self, *args, **kwargs):
        try:
            return super().get_dataset(*args, **kwargs)
        except AssertionError as e:  # TFDS: "Dataset …: could not find data in …"
            if "could not find data" not in str(e):
                raise
            raise UserError(not_prepared(self.tfds_dataset.name, self.tfds_dataset.builder.data_dir)) from e


def not_prepared(tfds_name: str, version_dir: str) -> str:
    """The line for data that is not prepared: where it was looked for, and how to prepare it."""
    root = version_dir
    for _ in range(tfds_name.split(":")[0].count("/") + 2):  # <root>/<name>[/<config>]/<version>
        root = root.rsplit("/", 1)[0]
    return (f"TFDS data {tfds_name} is not prepared in {root}: run `tfds build {tfds_name} --data_dir={root}` "
            f"where it can download, then give that folder as the task's tfds_data_dir (or TFDS_DATA_DIR); "
            f"hpo never downloads at run time")
