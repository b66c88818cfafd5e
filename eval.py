"""Evaluate a checkpoint: python eval.py ckpt_path=RUN/checkpoints/best.ckpt [testsets=... ood_folders=[...]]."""

from mchad.cli import launch
from mchad.train import eval_run_dir_override, evaluate_checkpoint

if __name__ == "__main__":
    launch(evaluate_checkpoint, job_name="eval", defaults=eval_run_dir_override)
