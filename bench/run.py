"""`make bench`: run the benchmarks, print the figures, write bench/results.json."""

import os
import platform
import sys

import jax

from bench.guided_step import guided_step_ratios
from hpo import io as hpo_io


def main(argv=None) -> int:
    out_path = (argv or sys.argv[1:] or [os.path.join("bench", "results.json")])[0]
    results = {"machine": f"{platform.machine()} {os.cpu_count()} cpus, {jax.devices()[0].device_kind}",
               "jax": jax.__version__}
    print(f"machine: {results['machine']}", flush=True)
    results["guided_step"] = guided_step_ratios()
    for key, value in results["guided_step"].items():
        print(f"guided_step {key}: {value:.4g}" if isinstance(value, float) else f"guided_step {key}: {value}")
    hpo_io.write_json(out_path, results)
    print(f"written: {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
