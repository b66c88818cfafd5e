"""Benchmarks of the MCHAD framework against the reference pipeline it replaces.

``python -m bench [--device cpu|cuda] [--quick] [names...]`` runs them and writes
``bench/results/<name>-<device>[-quick].json``; see ``bench/README.md``.

* ``train_throughput`` (a): cifar10-gmchad training, ours vs the per-sample PIL pipeline;
* ``framework_overhead`` (b): our Lightning step vs a bare loop on the same data path;
* ``evaluation`` (c): ID + 7 OOD test sets, each image once vs the ID set per OOD set;
* ``metrics`` (d): ``ood_metrics`` vs pytorch-ood's OODMetrics on 10^6 scores;
* ``input_pipeline``: batches/s of the data path alone.
"""
