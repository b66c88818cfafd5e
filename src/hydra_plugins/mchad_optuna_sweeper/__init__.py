"""``hydra/sweeper=mchad_optuna``: this project's hyperparameter search, Optuna's ask-and-tell behind Hydra's Sweeper.

A plugin in Hydra's ``hydra_plugins`` namespace package (which has no ``__init__.py``):
Hydra imports every module here when it looks for plugins, so :mod:`.config` registers the
sweeper's config and :mod:`.sweeper` holds the :class:`~hydra.plugins.sweeper.Sweeper`. Optuna
is imported only when a search starts. The search spaces are ``config/hparams_search/*.yaml``;
docs/hparams.md says how to tune, what the objective is, and why this is not the
``hydra-optuna-sweeper`` plugin.
"""
