"""Several seeds on one device: aggregate training throughput against the number of seeds k.

The paper's tables are many short runs of the same configuration with different
seeds. One run rarely fills a GPU, so running k seeds side by side can raise the
images per second of the whole sweep. Measured on cifar10-gmchad: k training processes on
the device at once, each our full run (data module + OODModule in a Lightning Trainer,
seed ``1 + j``). This is what a Ray sweep with fractional GPUs does (``hydra/launcher=ray_local
hydra.launcher.ray.remote.num_gpus=1/k``, docs/sweeps.md).

 with ``t_j`` the step timestamps of process j (one clock for all,
after a common start barrier) the aggregate rate is the images of the steps that all
processes finish inside their common window, divided by its length::

    window = [max_j t_j[warmup], min_j t_j[last]],  rate = sum_j #steps_j in window * images_per_step / |window|

Each k gives one row: ours = the aggregate rate with k seeds, reference = one seed
alone (k = 1), ratio = the speed-up of the sweep. Every point runs in fresh processes.
Peak memory per seed: ``torch.cuda.max_memory_allocated`` of a process on a GPU (the CUDA
context, ~0.5 GB per process, comes on top), its peak resident set size on a CPU.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.multiprocessing as mp
from omegaconf import DictConfig

from bench.options import Options
from bench.report import Result
from bench.timing import ClockCallback, StepClock
from bench.training import images_per_step, steps, training_config
from bench.workload import BENCH_DATA, DataPaths, build_seeded_run, compose_config, trainer_for
from mchad.rundir import peak_host_memory_mb

NAME = "seeds_per_device"
TITLE = "several seeds on one device, cifar10-gmchad: k seeds side by side vs one seed alone"


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by this process, or its peak resident set size on a CPU (MB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_host_memory_mb()


def seed_config(cfg: DictConfig, seed: int) -> DictConfig:
    cfg = copy.deepcopy(cfg)
    cfg.seed = seed
    return cfg


def prepared(options: Options) -> None:
    """A spawned process starts with default logging and threads: set them as the parent has."""
    from bench.environment import quiet

    quiet()
    torch.set_num_threads(options.threads)


def train_one_seed(options: Options, cfg: DictConfig, run_dir, start, results) -> None:
    """A ``processes`` worker: build the run, wait for the others, train, report its timestamps."""
    prepared(options)
    run = build_seeded_run(cfg, run_dir)
    clock = StepClock(options.torch_device)
    trainer = trainer_for(cfg, run_dir, ClockCallback(clock))
    start.wait()
    trainer.fit(run.module, datamodule=run.datamodule)
    results.put(
        {
            "times": clock.times,
            "images_per_step": images_per_step(cfg),
            "peak_memory_mb": peak_memory_mb(options.torch_device),
        }
    )


def aggregate_rate(reports: list[dict], warmup: int) -> float:
    """Images/s of all workers together over the window in which every one was past its warm-up and still training."""
    begin = max(r["times"][warmup - 1] for r in reports)
    end = min(r["times"][-1] for r in reports)
    if end <= begin:
        raise RuntimeError("the workers did not train at the same time: raise the timed steps or lower k")
    images = sum(sum(begin < t <= end for t in r["times"]) * r["images_per_step"] for r in reports)
    return images / (end - begin)


def spawn(jobs: list[tuple]) -> list[dict]:
    """Run ``(target, *args)`` jobs in fresh processes started together; their reports (the device's state stays clean)."""
    context = mp.get_context("spawn")
    start, results = context.Barrier(len(jobs)), context.Queue()
    workers = [context.Process(target=target, args=(*args, start, results)) for target, *args in jobs]
    for worker in workers:
        worker.start()
    reports = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
        if worker.exitcode != 0:
            raise RuntimeError(f"a benchmark process exited with {worker.exitcode}")
    return reports


def measure(options: Options, cfg: DictConfig, k: int) -> dict:
    """One point of the curve: k seeds; aggregate images/s and the peak memory per seed."""
    run_dir = BENCH_DATA / "runs" / NAME
    jobs = [(train_one_seed, options, seed_config(cfg, cfg.seed + j), run_dir / f"seed{j}") for j in range(k)]
    started = time.perf_counter()
    reports = spawn(jobs)
    per_seed = max(r["peak_memory_mb"] for r in reports)
    return {
        "k": k,
        "images_per_s": aggregate_rate(reports, options.warmup_steps),
        "peak_memory_mb_per_seed": per_seed,
        "seconds": time.perf_counter() - started,
    }


def run(options: Options, paths: DataPaths) -> Result:
    cfg = compose_config(options, paths, BENCH_DATA / "runs" / NAME, train_batches=steps(options))
    curve = [measure(options, cfg, k) for k in options.seed_counts]
    single = curve[0]["images_per_s"]
    rounds = [
        {
            "round": point["k"],
            "ours": point["images_per_s"],
            "reference": single,
            "ratio": point["images_per_s"] / single,
        }
        for point in curve
    ]
    best = max(curve, key=lambda point: point["images_per_s"])
    return Result(
        name=NAME,
        title=TITLE,
        unit="images/s",
        higher_is_better=True,
        rounds=rounds,
        round_label="seeds",
        summary="best",
        config={**training_config(cfg, paths, options), "seed_counts": list(options.seed_counts)},
        details={
            "curve": curve,
            "best_k": best["k"],
            "best_k_peak_memory_mb_per_seed": best["peak_memory_mb_per_seed"],
        },
        notes=[
            f"k={point['k']}: {point['images_per_s']:,.0f} images/s, "
            f"{point['images_per_s'] / single:.2f}x one seed, peak memory {point['peak_memory_mb_per_seed']:,.0f} MB per seed"
            for point in curve
        ],
    )
