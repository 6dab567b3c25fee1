"""The gate: whether a run's model may replace the last one. No Airflow.

A run passes when its objective reaches the request's thresholds and is not shown worse than
its baseline (the last promoted run of the same name, or a given one) by more than a margin.
"Shown worse" is a one-sided test at ``alpha`` with Nadeau and Bengio's corrected variance:
paired fold by fold when both runs used the same folds (same input, strategy, seed), else
Welch's test on the two estimates. Equal models pass; a model worse by more than the margin,
beyond what the folds' spread explains, is stopped.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from airflow_smx.core import storage
from airflow_smx.core.folds import FoldPlan, read_plan
from airflow_smx.core.naming import VALID_NAME, clean_name
from airflow_smx.core.request import CVRequest, GateSpec

PAIRED = "corrected paired t-test (same folds)"
UNPAIRED = "corrected Welch t-test (different folds)"


class GateError(ValueError):
    """The gate cannot judge: its baseline run is not where the request says."""


def pointer_uri(request: CVRequest) -> str:
    """Where the last promoted run of the request's name is recorded: ``{output_uri}/latest/{name}.json``."""
    return storage.join(request.output_uri, "latest", f"{clean_name(request.name)}.json")


def run_view(cv_run_id: str, summary: dict[str, Any], metric: str, plan: FoldPlan | None) -> dict[str, Any] | None:
    """What the gate compares of a run: its objective's mean, corrected interval and fold
    scores, its n_test/n_train, and which folds it used (None: the run has no such metric)."""
    found = summary["metrics"].get(metric)
    if found is None:
        return None
    identity = None if plan is None else {k: v for k, v in plan.identity().items() if k != "prefix"}
    return {
        "cv_run_id": cv_run_id,
        "direction": (summary.get("objective") or {}).get("direction", "maximize"),
        "mean": found["mean"],
        "ci95_corrected": found.get("ci95_corrected"),
        "values": found["values"],
        "test_train_ratio": summary.get("test_train_ratio"),
        "folds": identity,
    }


def load_baseline(request: CVRequest, storage_options: dict[str, Any] | None) -> dict[str, Any] | None:
    """The baseline run's view: the pointer's run for "latest" (None before the first promotion),
    or the named run (its absence is the request's error)."""
    gate = request.gate
    if gate is None or gate.baseline is None:
        return None
    fs, _ = storage.filesystem(request.output_uri, storage_options)
    if gate.baseline == "latest":
        pointer = pointer_uri(request)
        if not fs.exists(pointer):
            return None
        cv_run_id = storage.read_json(fs, pointer).get("cv_run_id")
        if not isinstance(cv_run_id, str) or not VALID_NAME.match(cv_run_id):  # a path, were it written by hand
            raise GateError(f"gate.baseline: {pointer} does not name a run: {cv_run_id!r}")
    else:
        cv_run_id = gate.baseline
    result = storage.join(request.output_uri, cv_run_id, "results", "cv_result.json")
    if not fs.exists(result):
        raise GateError(f"gate.baseline: run {cv_run_id} has no result at {result}")
    summary = storage.read_json(fs, result)["summary"]
    try:
        plan = read_plan(storage.join(request.output_uri, cv_run_id, "folds"), storage_options)
    except FileNotFoundError:
        plan = None
    view = run_view(cv_run_id, summary, request.metrics.objective, plan)
    if view is None:  # a comparison on nothing would pass any run: say so instead
        raise GateError(
            f"gate.baseline: run {cv_run_id} has no {request.metrics.objective} scores to compare with; "
            "name another baseline, or null"
        )
    return view


def decide(gate: GateSpec, objective: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any]:
    """The gate's decision on a run.

    :param objective: this run's ``summary.objective`` plus ``values`` (per fold),
        ``test_train_ratio`` and ``folds`` (the plan's identity)
    :param baseline: the same for the baseline run and its ``cv_run_id``; None when there is none
    """
    sign = 1.0 if objective["direction"] == "maximize" else -1.0
    checks = [*_threshold_checks(gate, objective, sign)]
    if baseline is not None:
        checks.append(_baseline_check(gate, objective, baseline, sign))
    passed = all(check["passed"] for check in checks)
    return {
        "passed": passed,
        "checks": checks,
        "baseline": baseline["cv_run_id"] if baseline else None,
        "on_fail": gate.on_fail,
    }


def judge(
    request: CVRequest, summary: dict[str, Any], plan: FoldPlan, cv_run_id: str, baseline: dict[str, Any] | None
) -> dict[str, Any]:
    """The gate's decision on a successful run, from its summary and fold plan."""
    assert request.gate is not None and request.metrics.objective is not None
    view = run_view(cv_run_id, summary, request.metrics.objective, plan)
    if view is None:  # no fold reported the objective: nothing to promote
        return {
            "passed": False,
            "checks": [{"check": f"{request.metrics.objective} reported", "value": None, "passed": False}],
            "baseline": baseline["cv_run_id"] if baseline else None,
            "on_fail": request.gate.on_fail,
        }
    return decide(request.gate, view, baseline)


def gate_text(decision: dict[str, Any]) -> list[str]:
    """The decision as report lines."""
    verdict = "passed" if decision["passed"] else f"STOPPED the run (on_fail: {decision['on_fail']})"
    lines = [f"gate: {verdict}; baseline: {decision['baseline'] or 'none'}"]
    for check in decision["checks"]:
        figures = {
            k: check[k] for k in ("value", "difference", "test", "t", "df", "p_value") if check.get(k) is not None
        }
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
        lines.append(f"  {'pass' if check['passed'] else 'FAIL'}: {check['check']} ({shown})")
    return lines


def _threshold_checks(gate: GateSpec, objective: dict[str, Any], sign: float) -> list[dict[str, Any]]:
    checks = []
    word = "at least" if sign > 0 else "at most"
    if gate.threshold is not None:
        mean = objective["mean"]
        checks.append(
            {
                "check": f"mean {word} {gate.threshold:g}",
                "value": mean,
                "passed": sign * (mean - gate.threshold) >= 0,
            }
        )
    if gate.bound_threshold is not None:
        interval = objective.get("ci95_corrected")
        bound = None if interval is None else (interval[0] if sign > 0 else interval[1])
        checks.append(
            {
                "check": f"corrected 95% interval's {'lower' if sign > 0 else 'upper'} end {word} "
                f"{gate.bound_threshold:g}",
                "value": bound,
                "passed": bound is not None and sign * (bound - gate.bound_threshold) >= 0,
            }
        )
    return checks


def _baseline_check(gate: GateSpec, new: dict[str, Any], old: dict[str, Any], sign: float) -> dict[str, Any]:
    """Stop the run if it is worse than ``old`` by more than the margin, at level ``alpha``."""
    difference = sign * (new["mean"] - old["mean"])  # > 0: better than the baseline
    check: dict[str, Any] = {
        "check": f"not worse than {old['cv_run_id']} by more than {gate.margin:g}",
        "difference": difference,
        "margin": gate.margin,
        "alpha": gate.alpha,
    }
    same_folds = new["folds"] is not None and new["folds"] == old["folds"]
    common = sorted(set(new["values"]) & set(old["values"])) if same_folds else []
    if same_folds and len(common) > 1:
        deltas = [sign * (new["values"][f] - old["values"][f]) for f in common]
        t, df = _paired(deltas, new["test_train_ratio"], gate.margin)
        check["test"] = PAIRED
    else:
        t, df = _welch(new, old, gate.margin, sign)
        check["test"] = UNPAIRED
    if t is None:  # no spread to test with (one fold, or identical scores): the margin alone decides
        check.update(test="margin only (no spread to test)", p_value=None, passed=difference + gate.margin >= 0)
        return check
    from scipy import stats  # here, not at the top: it would add half a second to every DAG parse

    p_value = float(stats.t.cdf(t, df))  # how likely a t this low is if it were worse by no more than the margin
    check.update(t=t, df=df, p_value=p_value, passed=p_value >= gate.alpha)
    return check


def _paired(deltas: list[float], ratio: float, margin: float) -> tuple[float | None, float]:
    """t of the fold differences (+ margin), variance corrected by (1/J + n_test/n_train)."""
    j = len(deltas)
    variance = statistics.variance(deltas) * (1 / j + ratio)
    if variance == 0:
        return None, j - 1
    return (statistics.fmean(deltas) + margin) / math.sqrt(variance), j - 1


def _welch(new: dict[str, Any], old: dict[str, Any], margin: float, sign: float) -> tuple[float | None, float]:
    """Welch's t of the two means (+ margin), each variance corrected as for its own folds."""
    parts = [_corrected_variance(run) for run in (new, old)]
    if None in parts or sum(parts) == 0:
        return None, 0
    variance = sum(parts)
    df = variance**2 / sum(part**2 / (len(run["values"]) - 1) for part, run in zip(parts, (new, old), strict=True))
    return (sign * (new["mean"] - old["mean"]) + margin) / math.sqrt(variance), df


def _corrected_variance(run: dict[str, Any]) -> float | None:
    values = list(run["values"].values())
    if len(values) < 2 or run.get("test_train_ratio") is None:
        return None
    return statistics.variance(values) * (1 / len(values) + run["test_train_ratio"])
