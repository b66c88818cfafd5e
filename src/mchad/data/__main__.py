"""Download, verify and cache every data set that experiments need, before any run starts.

    python -m mchad.data prepare experiment=cifar10-gmchad [experiment=svhn-mchad ...] [OVERRIDE ...]

Each ``experiment=`` argument composes one config (as ``run.py`` would, with the other
overrides, e.g. ``paths.data_dir=/data``, applied to all of them); every data set it
names (ID train and test, outliers, validation noise, OOD test sets) is fetched,
checked and decoded into the cache, one line per data set. Runs started afterwards,
in parallel or not, only read the cache. Exit status 2 if any data set failed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mchad.config import compose
from mchad.data.datamodule import OODDataModule
from mchad.errors import ConfigError

USAGE = "usage: python -m mchad.data prepare experiment=NAME [experiment=NAME ...] [OVERRIDE ...]"


def prepare(overrides: Sequence[str]) -> int:
    """Prepare the data of each experiment in ``overrides``; return the number of failures."""
    experiments = [o for o in overrides if o.startswith("experiment=")] or [None]
    shared = [o for o in overrides if not o.startswith("experiment=")]
    failures = 0
    for experiment in experiments:
        try:
            cfg = compose([experiment, *shared] if experiment else shared)
            datamodule = OODDataModule.from_config(cfg)
        except ConfigError as error:
            print(f"error: {experiment or 'default config'}: {error}")
            failures += 1
            continue
        for ref in datamodule.data_refs():
            where = ref.root or datamodule.data_dir
            try:
                data = datamodule.load(ref)
            except ConfigError as error:
                print(f"{cfg.name}: {ref.role:<8} {ref.name}/{ref.split}: error: {error}")
                failures += 1
                continue
            print(f"{cfg.name}: {ref.role:<8} {ref.name}/{ref.split}: {len(data)} images ({where})")
    return failures


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] != "prepare":
        print(USAGE, file=sys.stderr)
        return 2
    return 2 if prepare(argv[1:]) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
