"""cv_report.html: what it shows, and that nothing a user or SageMaker wrote runs in it."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from airflow_smx.core.report_html import html_report
from airflow_smx.core.request import parse_request
from airflow_smx.core.results import FoldOutcome, cv_result

ACCURACY = [0.81, 0.84, 0.79, 0.86]
ATTACK = "<script>alert('x')</script><img src=x onerror=alert(1)>"


def completed(fold: int, accuracy: float, instance_type: str = "ml.m5.xlarge") -> FoldOutcome:
    return FoldOutcome(
        fold=fold,
        job_name=f"job-{fold}",
        description={
            "TrainingJobStatus": "Completed",
            "FinalMetricDataList": [
                {"MetricName": "validation:accuracy", "Value": accuracy},
                {"MetricName": f"train:{ATTACK}", "Value": 1 - accuracy},
            ],
            "EnableManagedSpotTraining": True,
            "BillableTimeInSeconds": 40,
            "TrainingTimeInSeconds": 100,
            "ResourceConfig": {"InstanceCount": 1, "InstanceType": instance_type},
        },
    )


def result(gate: dict | None = None) -> dict:
    request = parse_request(
        {
            "name": "demo",
            "input": {"uri": "s3://b/in.csv"},
            "output_uri": "s3://b/out",
            "backend": "local",
            "local": {"command": "train"},
            "metrics": {"objective": "validation:accuracy"},
            "min_successful_folds": 4,
        }
    )
    outcomes = [completed(i, a) for i, a in enumerate(ACCURACY)]
    outcomes.append(FoldOutcome(4, f"job-{ATTACK}", {"TrainingJobStatus": "Failed", "FailureReason": ATTACK}))
    cv = cv_result(request, outcomes, "demo-20261201-050000-abcdef", {}, test_train_ratio=0.25)
    if gate:
        cv["summary"]["gate"] = gate
    cv["summary"]["promoted"] = not gate or gate["passed"]
    return cv


class Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parsed(page: str) -> list[tuple[str, dict]]:
    elements = Elements()
    elements.feed(page)
    return elements.tags


def test_what_a_failed_fold_or_a_metric_name_carries_is_shown_as_text_never_run():
    page = html_report(result())
    tags = parsed(page)
    assert not [tag for tag, _ in tags if tag in ("script", "img", "iframe", "link")]
    assert not [attrs for _, attrs in tags if any(name.startswith("on") for name in attrs)]
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page  # the failure reason, readable


def test_each_metric_has_a_chart_of_its_folds_with_both_intervals_and_the_cost_by_instance_type():
    page = html_report(result())
    charts = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(charts) == 2  # validation:accuracy and the train metric
    accuracy = charts[1]  # metrics in name order: train:..., then validation:accuracy
    assert accuracy.count("<circle") == 4  # the failed fold has no score
    assert accuracy.count("stroke-width='6'") == 2  # corrected and independent intervals
    assert "validation:accuracy (the objective)" in page
    assert "4/5 folds succeeded (4 required): succeeded" in page
    assert "<td>ml.m5.xlarge</td><td>160</td><td>400</td>" in page and "saved 60%" in page


def test_the_gate_and_its_baseline_are_shown():
    gate = {
        "passed": False,
        "on_fail": "fail",
        "baseline": "demo-20261130-050000-fedcba",
        "checks": [
            {
                "check": "not worse than demo-20261130-050000-fedcba by more than 0.01",
                "difference": -0.05,
                "t": -7.48,
                "df": 3,
                "p_value": 0.002,
                "test": "corrected paired t-test (same folds)",
                "passed": False,
            }
        ],
    }
    baseline = {
        "cv_run_id": "demo-20261130-050000-fedcba",
        "mean": 0.87,
        "ci95_corrected": [0.85, 0.89],
        "values": {"0": 0.86, "1": 0.88},
    }
    page = html_report({**result(gate), "baseline": baseline})
    assert "Gate: <span class='bad'>stopped the run (on_fail: fail)</span>" in page
    assert "Promoted: no." in page and "p_value 0.002" in page
    assert "baseline demo-20261130-050000-fedcba: mean</td><td>0.87" in page
    accuracy = re.findall(r"<svg.*?</svg>", page, re.S)
    assert sum(chart.count("stroke-width='6'") for chart in accuracy) == 5  # 2 + 2, and the baseline's
