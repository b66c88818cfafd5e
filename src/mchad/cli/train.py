"""``mchad-train`` and ``mchad-eval``: Hydra applications over the project's config.

    mchad-train experiment=cifar10-mchad [OVERRIDE ...]          # one run
    mchad-train -m experiment=cifar10-mchad seed=1,2,3           # a sweep
    mchad-eval ckpt_path=RUN/checkpoints/best.ckpt [testsets=...] [ood_folders=[DIR,...]]

``--help`` describes the command; ``--cfg job`` prints the config a run (or, with ``ckpt_path``,
an evaluation) uses.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from omegaconf import OmegaConf, open_dict

from mchad.cli.launch import fail, launch
from mchad.config import compose
from mchad.errors import ConfigError, command
from mchad.train import eval_run_dir_override, evaluate_checkpoint, saved_run_config, train


def train_main() -> None:
    launch(train, job_name="run")


def eval_defaults(argv: list[str]) -> list[str]:
    """What ``mchad-eval`` puts before the user's overrides: its help page (``config/hydra/help/eval.yaml``),
    named as the user ran it, and its output directory (:func:`mchad.train.eval_run_dir_override`)."""
    return ["hydra/help=eval", f"hydra.help.app_name='{command('eval')}'", *eval_run_dir_override(argv)]


def eval_main() -> None:
    if not show_evaluation_config(sys.argv[1:]):
        launch(evaluate_checkpoint, job_name="eval", defaults=eval_defaults)


def option(argv: Sequence[str], *names: str) -> str | None:
    """The value of a command-line option given as ``--name VALUE`` or ``--name=VALUE``."""
    for index, arg in enumerate(argv):
        for name in names:
            if arg == name and index + 1 < len(argv):
                return argv[index + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def show_evaluation_config(argv: Sequence[str]) -> bool:
    """``mchad-eval --cfg job|all ckpt_path=X``: print the config the evaluation of X uses, the one the
    checkpoint was trained with and the evaluation overrides (Hydra alone would print the default
    config). False, doing nothing, for any other command line: Hydra handles it."""
    shown = option(argv, "--cfg", "-c")
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    if shown not in ("job", "all") or "-m" in argv or "--multirun" in argv:
        return False
    if not any(o.startswith("ckpt_path=") for o in overrides):
        return False
    try:
        cfg = compose([*eval_run_dir_override(overrides), *overrides])
        evaluated = saved_run_config(cfg, cfg.hydra.run.dir) or cfg
    except ConfigError as error:
        fail(str(error))
    if shown == "all" and "hydra" not in evaluated:
        with open_dict(evaluated):
            evaluated.hydra = cfg.hydra
    elif shown == "job" and "hydra" in evaluated:
        evaluated = OmegaConf.masked_copy(evaluated, [k for k in evaluated if k != "hydra"])
    package = option(argv, "--package", "-p")
    if package:
        evaluated = OmegaConf.select(evaluated, package)
    print(OmegaConf.to_yaml(evaluated, resolve="--resolve" in argv), end="")
    return True
