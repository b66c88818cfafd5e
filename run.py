"""Train and evaluate one configuration: python run.py experiment=cifar10-mchad [overrides] (= mchad-train)."""

from mchad.cli.train import train_main

if __name__ == "__main__":
    train_main()
