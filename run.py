"""Train and evaluate one configuration: python run.py experiment=cifar10-mchad [overrides]."""

from mchad.cli import launch
from mchad.train import train

if __name__ == "__main__":
    launch(train, job_name="run")
