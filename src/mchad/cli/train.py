"""``mchad-train`` and ``mchad-eval``: Hydra applications over the project's config.

    mchad-train experiment=cifar10-mchad [OVERRIDE ...]          # one run
    mchad-train -m experiment=cifar10-mchad seed=1,2,3           # a sweep
    mchad-eval ckpt_path=RUN/checkpoints/best.ckpt [testsets=...] [ood_folders=[DIR,...]]

``--help`` lists the config groups; ``--cfg job`` prints the composed config.
"""

from __future__ import annotations

from mchad.cli.launch import launch
from mchad.train import eval_run_dir_override, evaluate_checkpoint, train


def train_main() -> None:
    launch(train, job_name="run")


def eval_main() -> None:
    launch(evaluate_checkpoint, job_name="eval", defaults=eval_run_dir_override)
