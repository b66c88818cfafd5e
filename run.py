"""Train and evaluate one configuration: python run.py experiment=cifar10-mchad [overrides]."""

import hydra
from omegaconf import DictConfig

from mchad.cli import check_command_line, run_task
from mchad.train import train


@hydra.main(version_base="1.3", config_path="config", config_name="config")
def main(cfg: DictConfig):
    return run_task(train, cfg)


if __name__ == "__main__":
    check_command_line()
    main()
