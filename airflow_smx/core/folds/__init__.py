"""The fold engine: streaming, deterministic k-fold splits equal to scikit-learn's. No Airflow."""

from airflow_smx.core.folds.assign import Assignment, assign_folds
from airflow_smx.core.folds.plan import Fold, FoldPlan
from airflow_smx.core.folds.records import SplitError
from airflow_smx.core.folds.split import read_plan, split_dataset

__all__ = [
    "Assignment",
    "Fold",
    "FoldPlan",
    "SplitError",
    "assign_folds",
    "read_plan",
    "split_dataset",
]
