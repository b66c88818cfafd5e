"""Evaluate a checkpoint only: python eval.py ckpt_path=PATH experiment=cifar10-mchad."""

import hydra
from omegaconf import DictConfig

from mchad.cli import check_command_line, run_task
from mchad.train import evaluate_checkpoint


@hydra.main(version_base="1.3", config_path="config", config_name="config")
def main(cfg: DictConfig):
    return run_task(evaluate_checkpoint, cfg)


if __name__ == "__main__":
    check_command_line()
    main()
