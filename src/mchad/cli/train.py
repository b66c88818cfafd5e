"""``mchad-train`` and ``mchad-eval``: Hydra applications over the project's config.

    mchad-train experiment=cifar10-mchad [OVERRIDE ...]          # one run
    mchad-train -m experiment=cifar10-mchad seed=1,2,3           # a sweep
    mchad-eval ckpt_path=RUN/checkpoints/best.ckpt [testsets=...] [ood_folders=[DIR,...]]

``--help`` describes the command; ``--cfg job`` prints the config a run (or, with ``ckpt_path``,
an evaluation) uses. The training stack (:mod:`mchad.train`, Lightning) is imported when a run
starts, by name.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from mchad.cli.command_line import Flags, extra_config_dirs
from mchad.cli.launch import launch
from mchad.config import compose
from mchad.errors import ConfigError, command, fail
from mchad.rundir import checkpoint_run_dir


def check_training(cfg: DictConfig) -> None:
    """What a training job needs beyond the schema, checked for every job of a sweep before any starts:
    the method's own constraints (its constructor, e.g. ``n_embedding`` must equal ``n_classes``;
    a small head, no data, no backbone) and its outliers, and the pretrained weights' file."""
    from mchad.methods import build_method, check_outliers
    from mchad.nn.wrn import check_pretrained

    check_outliers(*build_method(cfg.method), cfg.data)
    if cfg.model.get("pretrained_checkpoint"):
        check_pretrained(cfg.model.pretrained_checkpoint)


def eval_run_dir_override(overrides: list[str]) -> list[str]:
    """``mchad-eval``'s default output directory, ``<run>/eval/<time>``, unless ``hydra.run.dir`` is given."""
    ckpt = next((a.split("=", 1)[1] for a in overrides if a.startswith("ckpt_path=")), None)
    if not ckpt or any(a.startswith("hydra.run.dir=") for a in overrides):
        return []
    return [f"hydra.run.dir={checkpoint_run_dir(ckpt)}/eval/${{now:%Y-%m-%d_%H-%M-%S}}"]


def train_defaults(argv: list[str]) -> list[str]:
    """Hydra's help page names the app as the user ran it (else by its job name, ``run``)."""
    return [f"hydra.help.app_name='{command('train')}'"]


def train_main(argv: Sequence[str] | None = None) -> None:
    launch("mchad.train:train", job_name="run", argv=argv, defaults=train_defaults, check=check_training)


def eval_defaults(argv: list[str]) -> list[str]:
    """What ``mchad-eval`` puts before the user's overrides: its help page (``config/hydra/help/eval.yaml``),
    named as the user ran it, and its output directory (:func:`eval_run_dir_override`)."""
    return ["hydra/help=eval", f"hydra.help.app_name='{command('eval')}'", *eval_run_dir_override(argv)]


def eval_main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not show_evaluation_config(argv):
        launch("mchad.train:evaluate_checkpoint", job_name="eval", argv=argv, defaults=eval_defaults)


def show_evaluation_config(argv: Sequence[str]) -> bool:
    """``mchad-eval --cfg job|all ckpt_path=X``: print the config the evaluation of X uses, the one the
    checkpoint was trained with and the evaluation overrides (Hydra alone would print the default
    config). False, doing nothing, for any other command line: Hydra handles it."""
    try:
        args = Flags().read(argv)
    except ConfigError:  # the launch's pre-flight refuses the command line in one line
        return False
    overrides = args.overrides
    if args.cfg not in ("job", "all") or args.multirun or not any(o.startswith("ckpt_path=") for o in overrides):
        return False
    from mchad.train import saved_run_config  # reads the checkpoint: the training stack

    try:
        cfg = compose([*eval_run_dir_override(overrides), *overrides], config_dirs=extra_config_dirs(args))
        evaluated = saved_run_config(cfg, cfg.hydra.run.dir) or cfg
    except ConfigError as error:
        fail(str(error))
    if args.cfg == "all" and "hydra" not in evaluated:
        with open_dict(evaluated):
            evaluated.hydra = cfg.hydra
    elif args.cfg == "job" and "hydra" in evaluated:
        evaluated = OmegaConf.masked_copy(evaluated, [k for k in evaluated if k != "hydra"])
    if args.package:
        evaluated = OmegaConf.select(evaluated, args.package)
    print(OmegaConf.to_yaml(evaluated, resolve=args.resolve), end="")
    return True
