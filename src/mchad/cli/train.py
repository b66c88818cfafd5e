"""``mchad-train`` and ``mchad-eval``: Hydra applications over the project's config.

    mchad-train experiment=cifar10-mchad [OVERRIDE ...]          # one run
    mchad-train -m experiment=cifar10-mchad seed=1,2,3           # a sweep
    mchad-eval ckpt_path=RUN/checkpoints/best.ckpt [testsets=...] [ood_folders=[DIR,...]]

``--help`` lists the config groups; ``--cfg job`` prints the composed config. The training
stack (:mod:`mchad.train`, Lightning) is imported when a run starts, by name.
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

from mchad.cli.launch import launch
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


def train_main(argv: Sequence[str] | None = None) -> None:
    launch("mchad.train:train", job_name="run", argv=argv, check=check_training)


def eval_main(argv: Sequence[str] | None = None) -> None:
    launch("mchad.train:evaluate_checkpoint", job_name="eval", argv=argv, defaults=eval_run_dir_override)
