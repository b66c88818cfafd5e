"""Download, verify and cache every data set that experiments need, before any run starts; check the cache.

    mchad-data prepare experiment=cifar10-gmchad [experiment=svhn-mchad ...] [OVERRIDE ...]
    mchad-data verify [experiment=cifar10-gmchad | data=cifar100 ...] [OVERRIDE ...]

Each ``experiment=`` argument composes one config (as ``mchad-train`` would, with the other
overrides, e.g. ``paths.data_dir=/data``, applied to all of them; without any, the default
config); every data set it names (ID train and test, outliers, validation noise, OOD test
sets) is fetched, checked and decoded into the cache, one line per data set. Runs started
afterwards, in parallel or not, only read the cache.

Bad input (an unknown experiment, key or value) is found before anything is downloaded
and ends with one line ``error: <what was wrong>: <how to fix it>`` on stderr, exit
status 2. A data set that cannot be prepared (no network, a corrupted download) is
reported on its own line and the others are still prepared; the command then ends with
one ``error:`` line on stderr and exit status 2. ``--help`` lists the options.

``verify`` reads every byte of the cache entries the same configs name and compares them with
the sha256 recorded when each entry was written (runs check only sizes and headers when they
open an entry), one line per data set; exit status 1 when an entry is damaged or missing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mchad.errors import ConfigError, command, fail

PROG = "mchad-data"

EXAMPLES = f"""\
examples:
  {PROG} prepare experiment=cifar10-gmchad experiment=svhn-gmchad
  {PROG} prepare experiment=quickstart paths.data_dir=/data
  {PROG} verify experiment=cifar10-gmchad paths.data_dir=/data
  {PROG} prepare --help
"""

VERIFY_EXAMPLES = f"""\
Composes the configs as prepare does (experiment=NAME repeatable; data=NAME or any other override
applies to all of them) and hashes every cache entry they read against the sha256 recorded when it
was written. Exit status: 0 when every entry matches, 1 when one is damaged or not cached (each has
its own line), 2 for bad input.

examples:
  {PROG} verify experiment=cifar10-gmchad experiment=svhn-gmchad paths.data_dir=/data
  {PROG} verify data=cifar100
"""

PREPARE_EXAMPLES = f"""\
Each experiment=NAME composes one config, as {command("train")} would; the other overrides apply to
all of them. Without experiment=, the default config is prepared. Every config is checked
before anything is downloaded. Exit status: 0 when every data set is ready, 2 for bad
input or when a data set could not be prepared (each failure has its own line).

examples:
  {PROG} prepare experiment=cifar10-gmchad experiment=svhn-gmchad
  {PROG} prepare experiment=cifar10-gmchad experiment=cifar100-gmchad paths.data_dir=/data
  {PROG} prepare experiment=quickstart data.download=false    # no download: check the files already there
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Download, verify and cache the data sets of experiments before any run starts.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subcommands = {
        "prepare": (
            "fetch, verify and cache every data set the experiments name (one line per data set)",
            "Fetch, verify and cache every data set the given experiments need (ID train and test,\n"
            "outliers, validation noise, OOD test sets), one line per data set.",
            PREPARE_EXAMPLES,
        ),
        "verify": (
            "hash every cache entry the experiments read against its recorded sha256 (one line per data set)",
            "Hash every cache entry the given configs read and compare it with the sha256 recorded\n"
            "when it was written, one line per data set.",
            VERIFY_EXAMPLES,
        ),
    }
    for name, (summary, description, examples) in subcommands.items():
        subcommand = commands.add_parser(
            name,
            help=summary,
            description=description,
            epilog=examples,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        subcommand.add_argument(
            "overrides",
            nargs="*",
            metavar="OVERRIDE",
            help=f"experiment=NAME (repeatable: one config each), data=NAME or any {command('train')} override, "
            "e.g. paths.data_dir=/data",
        )
    return parser


def _datamodules(overrides: Sequence[str]) -> list:
    """(config name, OODDataModule) for each ``experiment=`` in ``overrides``; ConfigError names the bad one."""
    from mchad.config import compose

    experiments = [o for o in overrides if o.startswith("experiment=")] or [None]
    shared = [o for o in overrides if not o.startswith("experiment=")]
    modules = []
    for experiment in experiments:
        try:
            cfg = compose([experiment, *shared] if experiment else shared)
            # imports torch: only once a config composes, so that bad input is answered at once
            from mchad.data.datamodule import OODDataModule

            modules.append((cfg.name, OODDataModule.from_config(cfg)))
        except ConfigError as error:
            raise ConfigError(f"{experiment or 'default config'}: {error}") from None
    return modules


def prepare(overrides: Sequence[str]) -> tuple[int, int]:
    """Prepare the data of each experiment in ``overrides``; return (failed, total) data sets.

    Raises ConfigError, before anything is downloaded, when an experiment's config does not compose.
    """
    modules = _datamodules(overrides)
    failures = total = 0
    for name, datamodule in modules:
        for ref in datamodule.data_refs():
            total += 1
            where = ref.root or datamodule.data_dir
            try:
                data = datamodule.load(ref)
            except ConfigError as error:
                print(f"{name}: {ref.role:<8} {ref.name}/{ref.split}: error: {error}", flush=True)
                failures += 1
                continue
            print(f"{name}: {ref.role:<8} {ref.name}/{ref.split}: {len(data)} images ({where})", flush=True)
    return failures, total


def verify(overrides: Sequence[str]) -> tuple[int, int]:
    """Hash the cache entries of each config in ``overrides``; return (damaged or missing, total) entries."""
    from mchad.data.cache import CacheEntry
    from mchad.data.registry import cache_entry

    failures = total = 0
    verified: dict[CacheEntry, tuple[int | None, str | None]] = {}
    for name, datamodule in _datamodules(overrides):
        for ref in datamodule.data_refs():
            total += 1
            cached = cache_entry(ref.name, ref.split, datamodule.data_dir, ref.root)
            if cached not in verified:  # experiments share entries (outliers: 0.9 GB), each is read once
                verified[cached] = cached.verify()
            count, problem = verified[cached]
            entry = cached.folder / f"{cached.stem}.*"
            where = f"{name}: {ref.role:<8} {ref.name}/{ref.split}"
            if problem:
                failures += 1
                rebuild = f"{command('data')} prepare with the same arguments"
                fix = f"run {rebuild}" if problem == "not cached" else f"delete {entry} and run {rebuild}"
                print(f"{where}: {problem} ({entry}): {fix}", flush=True)
            else:
                print(f"{where}: ok, {count} images, sha256 matches ({entry})", flush=True)
    return failures, total


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    try:
        if args.command == "verify":
            failures, total = verify(args.overrides)
            if failures:
                print(f"error: {failures} of {total} cache entries are damaged or missing (see the lines above)",
                      file=sys.stderr)  # fmt: skip
            return 1 if failures else 0
        failures, total = prepare(args.overrides)
    except ConfigError as error:
        fail(str(error))
    if failures:
        fail(
            f"{failures} of {total} data sets could not be prepared (see the lines above): "
            "fix what they name and run the command again; the prepared ones stay cached"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
