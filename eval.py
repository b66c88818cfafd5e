"""Evaluate a checkpoint: python eval.py ckpt_path=RUN/checkpoints/best.ckpt [overrides] (= mchad-eval)."""

from mchad.cli.train import eval_main

if __name__ == "__main__":
    eval_main()
