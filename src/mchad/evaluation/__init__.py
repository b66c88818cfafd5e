"""OOD evaluation, one module each: :mod:`~mchad.evaluation.metrics` (AUROC, AUPR, FPR95),
:mod:`~mchad.evaluation.evaluator` (every test set from score tensors), :mod:`~mchad.evaluation.callback`
(the Lightning callback that feeds it) and :mod:`~mchad.evaluation.results` (results.csv).

Nothing is imported here: reading results.csv (``mchad-report``, a sweep skipping finished
runs) does not load Lightning.
"""
