"""The gate's decision on fixed cases, worked by hand where it computes a statistic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_smx.core.gate import PAIRED, UNPAIRED, GateError, decide, load_baseline
from airflow_smx.core.request import GateSpec, RequestError, parse_request

OLD = [0.80, 0.82, 0.84, 0.86, 0.88]
FOLDS = {"strategy": "stratified", "input": {"sha256": "abc"}, "random_state": 7}


def view(values, run="r", folds=FOLDS, direction="maximize", ratio=0.25):
    mean = sum(values) / len(values)
    return {
        "cv_run_id": run,
        "direction": direction,
        "mean": mean,
        "ci95_corrected": [mean - 0.05, mean + 0.05],
        "values": {str(i): v for i, v in enumerate(values)},
        "test_train_ratio": ratio,
        "folds": folds,
    }


def test_a_worse_model_on_the_same_folds_is_stopped_by_the_corrected_paired_test():
    # differences -0.06 -0.04 -0.05 -0.06 -0.05: mean -0.052, variance 7e-5; corrected by
    # (1/5 + 1/4): 3.15e-5, se 0.0056125; with margin 0.01, t = -0.042 / 0.0056125 = -7.4833
    new = [0.74, 0.78, 0.79, 0.80, 0.83]
    decision = decide(GateSpec(margin=0.01), view(new, "new"), view(OLD, "old"))
    (check,) = decision["checks"]
    assert check["test"] == PAIRED and check["df"] == 4
    assert check["t"] == pytest.approx(-7.4833, abs=1e-3)
    assert check["difference"] == pytest.approx(-0.052)
    assert check["p_value"] < 0.001 and check["passed"] is False and decision["passed"] is False
    assert decision["baseline"] == "old"


def test_an_equal_or_better_model_passes():
    assert decide(GateSpec(), view(OLD), view(OLD, "old"))["passed"] is True  # no spread: the margin decides
    better = [v + 0.01 for v in OLD]
    assert decide(GateSpec(), view(better), view(OLD, "old"))["passed"] is True


def test_a_gap_the_folds_spread_explains_passes_and_the_margin_forgives_a_small_loss():
    noisy = [0.83, 0.79, 0.86, 0.83, 0.86]  # mean 0.834 against 0.84, differences of both signs
    assert decide(GateSpec(), view(noisy), view(OLD, "old"))["passed"] is True
    slightly = [v - 0.004 for v in OLD]
    assert decide(GateSpec(margin=0.005), view(slightly), view(OLD, "old"))["passed"] is True
    assert decide(GateSpec(margin=0.0), view(slightly), view(OLD, "old"))["passed"] is False


def test_other_folds_are_compared_by_welch_on_the_corrected_variances():
    # variances 1e-3 each, x (1/5 + 1/4) = 4.5e-4 each; se = sqrt(9e-4) = 0.03
    # t = (0.74 - 0.84) / 0.03 = -3.3333; Welch df = (9e-4)^2 / (2 x (4.5e-4)^2 / 4) = 8
    new = [v - 0.10 for v in OLD]
    decision = decide(GateSpec(), view(new, folds={**FOLDS, "random_state": 8}), view(OLD, "old"))
    (check,) = decision["checks"]
    assert check["test"] == UNPAIRED
    assert check["t"] == pytest.approx(-3.3333, abs=1e-3) and check["df"] == pytest.approx(8)
    assert check["passed"] is False


def test_thresholds_follow_the_direction():
    losses = view([0.30, 0.32, 0.34], direction="minimize")  # mean 0.32, interval [0.27, 0.37]
    assert decide(GateSpec(threshold=0.35, baseline=None), losses, None)["passed"] is True
    assert decide(GateSpec(threshold=0.30, baseline=None), losses, None)["passed"] is False
    bound = decide(GateSpec(bound_threshold=0.36, baseline=None), losses, None)
    assert bound["passed"] is False and bound["checks"][0]["value"] == pytest.approx(0.37)
    assert "upper end at most 0.36" in bound["checks"][0]["check"]


def test_a_baseline_is_latest_none_or_a_run_id_never_a_path():
    base = {
        "name": "x",
        "input": {"uri": "s3://b/in.csv", "label": 0},
        "output_uri": "s3://b/out",
        "backend": "local",
        "local": {"command": "t"},
        "metrics": {"objective": "validation:accuracy"},
    }
    for attack in ("../other-team/cv-runs/x", "x/../../y", "s3://elsewhere/x"):
        with pytest.raises(RequestError, match=r"gate\.baseline: must be"):
            parse_request({**base, "gate": {"baseline": attack}})
    assert parse_request({**base, "gate": {"baseline": "x-20261201-010203-ab12cd"}}).gate.baseline
    no_objective = {**base, "metrics": {}}
    with pytest.raises(RequestError, match=r"metrics\.objective: the gate judges"):
        parse_request({**no_objective, "gate": {}})


def test_the_example_is_the_xgboost_example_with_a_gate():
    root = Path(__file__).parent.parent / "examples"
    gated = json.loads((root / "xgboost_csv_gated.json").read_text())
    assert parse_request(gated).gate == GateSpec(baseline="latest", margin=0.005, bound_threshold=0.75)
    assert {k: v for k, v in gated.items() if k != "gate"} == json.loads((root / "xgboost_csv.json").read_text())


def test_a_pointer_edited_into_a_path_is_refused(tmp_path):
    request = parse_request(
        {
            "name": "x",
            "input": {"uri": (tmp_path / "in.csv").as_uri(), "label": 0},
            "output_uri": (tmp_path / "out").as_uri(),
            "backend": "local",
            "local": {"command": "t"},
            "metrics": {"objective": "validation:accuracy"},
            "gate": {},
        }
    )
    assert load_baseline(request, None) is None  # a first run: no baseline
    pointer = tmp_path / "out" / "latest" / "x.json"
    pointer.parent.mkdir(parents=True)
    pointer.write_text(json.dumps({"cv_run_id": "../../elsewhere"}))
    with pytest.raises(GateError, match="does not name a run"):
        load_baseline(request, None)
    pointer.write_text(json.dumps({"cv_run_id": "x-20261201-010203-abcdef"}))
    with pytest.raises(GateError, match="run x-20261201-010203-abcdef has no result"):
        load_baseline(request, None)
    result = tmp_path / "out" / "x-20261201-010203-abcdef" / "results" / "cv_result.json"
    result.parent.mkdir(parents=True)
    result.write_text(json.dumps({"summary": {"metrics": {"validation:rmse": {"mean": 1.0, "values": {}}}}}))
    with pytest.raises(GateError, match="has no validation:accuracy scores"):  # else any run would pass
        load_baseline(request, None)
