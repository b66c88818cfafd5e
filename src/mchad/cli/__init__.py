"""Every command-line entry point of the project, and nothing else.

============== ============================= =====================================================
command        module                        what it does
============== ============================= =====================================================
mchad-train    :mod:`mchad.cli.train`        train and evaluate one config, or a sweep (``-m``)
mchad-eval     :mod:`mchad.cli.train`        evaluate a checkpoint on any test sets
mchad-data     :mod:`mchad.cli.data`         download, verify and cache the data sets of experiments
mchad-report   :mod:`mchad.cli.report`       tables, statistics and plots from run directories
============== ============================= =====================================================

``run.py`` and ``eval.py`` at the repository root are the first two, for a source checkout.
:mod:`mchad.cli.launch` is their shared shell: it reads Hydra's command line
(:mod:`mchad.cli.command_line`), checks every job before Hydra starts and prints one-line errors;
:mod:`mchad.cli.sweep` runs each sweep job in a child process (:mod:`mchad.cli.sweep_job`). This is
the top layer: nothing else imports it, and it imports the training stack only when a run starts.
"""
