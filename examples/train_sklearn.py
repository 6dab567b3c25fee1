"""Train and score one fold: runs unchanged locally (airflow-smx's local backend) and in
SageMaker's scikit-learn framework container (script mode).

Reads the train and validation channels as CSV files with the label in the first column and no
header (SageMaker's built-in CSV convention). The estimator is fixed:
StandardScaler() then LogisticRegression(C=C, max_iter=max_iter) with the lbfgs solver;
hyperparameters C (default 1.0) and max_iter (default 1000). Prints
``validation:accuracy=...``, ``validation:f1=...`` and, for two classes,
``validation:roc_auc=...`` (the values' full repr, so nothing is lost to rounding), and saves
the fitted pipeline as model.joblib in SM_MODEL_DIR. Without a validation channel (the refit of
a run with no hold-out) it trains and saves only.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def estimator(c: float = 1.0, max_iter: int = 1000):
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))


def load(channel: str) -> tuple[np.ndarray, np.ndarray]:
    """Every file of the channel, in name order, as one table: label first, features after."""
    files = sorted(p for p in Path(channel).iterdir() if p.is_file())
    table = np.vstack([np.loadtxt(f, delimiter=",", ndmin=2) for f in files])
    return table[:, 1:], table[:, 0]


def scores(model, features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    predicted = model.predict(features)
    result = {
        "accuracy": accuracy_score(labels, predicted),
        "f1": f1_score(labels, predicted, average="binary" if len(model.classes_) == 2 else "macro"),
    }
    if len(model.classes_) == 2:
        result["roc_auc"] = roc_auc_score(labels, model.predict_proba(features)[:, 1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    # SageMaker passes hyperparameters as --name value; SM_HPS holds them too.
    parser.add_argument("--C", type=float, default=json.loads(os.environ.get("SM_HPS", "{}")).get("C", 1.0))
    parser.add_argument(
        "--max_iter", type=int, default=json.loads(os.environ.get("SM_HPS", "{}")).get("max_iter", 1000)
    )
    args, _ = parser.parse_known_args()
    features, labels = load(os.environ["SM_CHANNEL_TRAIN"])
    model = estimator(float(args.C), int(args.max_iter)).fit(features, labels)
    if "SM_CHANNEL_VALIDATION" in os.environ:  # none for a refit without a hold-out
        validation_features, validation_labels = load(os.environ["SM_CHANNEL_VALIDATION"])
        print(f"train: {len(labels)} rows; validation: {len(validation_labels)} rows")
        for name, value in scores(model, validation_features, validation_labels).items():
            print(f"validation:{name}={float(value)!r}")
    joblib.dump(model, Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model")) / "model.joblib")


if __name__ == "__main__":
    main()
