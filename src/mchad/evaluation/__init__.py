"""OOD metrics, the evaluator over the test sets, the Lightning callback that feeds it, and results.csv."""

from mchad.evaluation.callback import OODEvaluation
from mchad.evaluation.evaluator import evaluate
from mchad.evaluation.metrics import METRIC_NAMES, accuracy, ood_metrics
from mchad.evaluation.results import RESULT_COLUMNS, format_table, read_results, results_complete, write_results

__all__ = [
    "METRIC_NAMES",
    "RESULT_COLUMNS",
    "OODEvaluation",
    "accuracy",
    "evaluate",
    "format_table",
    "ood_metrics",
    "read_results",
    "results_complete",
    "write_results",
]
