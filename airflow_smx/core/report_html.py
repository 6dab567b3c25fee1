"""``cv_report.html``: the run's result as a page people look at. No Airflow.

Self-contained (inline CSS and SVG, no script, nothing fetched), so it opens from S3, a
download or an e-mail alike. Everything shown comes from ``cv_result.json`` (and the gate's
baseline), so a stored result can be rendered again. Job names, failure reasons and metric
names come from users and SageMaker: every one is escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any

from airflow_smx.core.results import interval_text, number_text

WIDTH, ROW, LEFT, RIGHT = 660, 22, 170, 20
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 760px; color: #1d2733; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: 2px 10px; text-align: right; }
th { border-bottom: 1px solid #99a; } td:first-child, th:first-child { text-align: left; }
.ok { color: #1a7f37; } .bad { color: #c62828; font-weight: 600; } .note { color: #556; font-size: .92em; }
svg text { font: 12px system-ui, sans-serif; fill: #1d2733; }
"""
COLOURS = {"ci95": "#9bb7d4", "ci95_corrected": "#1f5fa0", "baseline": "#c77c02", "fold": "#1d2733"}


def html_report(result: dict[str, Any]) -> str:
    """The page for ``result`` (a ``cv_result.json``). Its ``baseline`` (the gate's view of its
    baseline run: the objective's mean, ``ci95_corrected``, ``values``), if any, is drawn beside
    the objective; its ``summary.model``, if registered, is named."""
    summary, baseline = result["summary"], result.get("baseline")
    objective = (summary.get("objective") or {}).get("metric")
    verdict = "succeeded" if summary["success"] else "FAILED"
    parts = [
        f"<h1>CV run {escape(summary['cv_run_id'])}</h1>",
        f"<p class='{'ok' if summary['success'] else 'bad'}'>{escape(str(summary['succeeded']))}/"
        f"{escape(str(summary['n_folds']))} folds succeeded ({escape(str(summary['required']))} required): "
        f"{verdict}</p>",
        _gate_section(summary),
        _model_section(summary.get("model")),
    ]
    for name, metric in summary["metrics"].items():
        parts.append(_metric_section(name, metric, baseline if name == objective else None, name == objective))
    parts += [_failures_section(summary), _cost_section(summary)]
    body = "\n".join(part for part in parts if part)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>CV run {escape(summary['cv_run_id'])}</title><style>{STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def _metric_section(name: str, metric: dict[str, Any], baseline: dict[str, Any] | None, is_objective: bool) -> str:
    rows = [("mean", number_text(metric["mean"])), ("std", number_text(metric["std"]))]
    rows += [("95% interval, corrected", interval_text(metric.get("ci95_corrected")))]
    rows += [("95% interval, folds as independent", interval_text(metric.get("ci95")))]
    if baseline is not None:
        rows += [(f"baseline {baseline['cv_run_id']}: mean", number_text(baseline["mean"]))]
        rows += [("baseline: 95% interval, corrected", interval_text(baseline.get("ci95_corrected")))]
    table = "".join(f"<tr><td>{escape(label)}</td><td>{value}</td></tr>" for label, value in rows)
    title = f"{escape(name)}{' (the objective)' if is_objective else ''}"
    return f"<h2>{title}</h2>\n{_chart(name, metric, baseline)}\n<table>{table}</table>"


def _chart(name: str, metric: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    """Fold scores as dots on one row each, the mean and both intervals below, the baseline's last."""
    folds = sorted(metric["values"].items(), key=lambda item: int(item[0]))
    bars = [("corrected 95%", metric["mean"], metric.get("ci95_corrected"), COLOURS["ci95_corrected"])]
    bars.append(("independent 95%", metric["mean"], metric.get("ci95"), COLOURS["ci95"]))
    if baseline is not None:
        bars.append(("baseline, corrected", baseline["mean"], baseline.get("ci95_corrected"), COLOURS["baseline"]))
    numbers = [value for _, value in folds] + [m for _, m, _, _ in bars]
    numbers += [end for _, _, interval, _ in bars if interval for end in interval]
    low, high = min(numbers), max(numbers)
    pad = (high - low) * 0.05 or abs(high) * 0.05 or 1.0
    low, high = low - pad, high + pad

    def x(value: float) -> float:
        return LEFT + (value - low) / (high - low) * (WIDTH - LEFT - RIGHT)

    shapes, y = [], ROW
    for fold, value in folds:
        shapes.append(f"<text x='{LEFT - 8}' y='{y + 4}' text-anchor='end'>fold {escape(str(fold))}</text>")
        shapes.append(
            f"<circle cx='{x(value):.1f}' cy='{y}' r='4' fill='{COLOURS['fold']}'><title>{value:.6g}</title></circle>"
        )
        y += ROW
    for label, mean, interval, colour in bars:
        shapes.append(f"<text x='{LEFT - 8}' y='{y + 4}' text-anchor='end'>{label}</text>")
        if interval:
            shapes.append(
                f"<line x1='{x(interval[0]):.1f}' x2='{x(interval[1]):.1f}' y1='{y}' y2='{y}' "
                f"stroke='{colour}' stroke-width='6'><title>{interval_text(interval)}</title></line>"
            )
        shapes.append(f"<rect x='{x(mean) - 2:.1f}' y='{y - 8}' width='4' height='16' fill='{colour}'/>")
        y += ROW
    axis = [f"<line x1='{LEFT}' x2='{WIDTH - RIGHT}' y1='{y}' y2='{y}' stroke='#99a'/>"]
    for value in (low + pad, high - pad):
        axis.append(f"<text x='{x(value):.1f}' y='{y + 16}' text-anchor='middle'>{value:.4g}</text>")
    height = y + 24
    return (
        f"<svg width='{WIDTH}' height='{height}' viewBox='0 0 {WIDTH} {height}' role='img' "
        f"aria-label='{escape(name, quote=True)} by fold'>{''.join(shapes + axis)}</svg>"
    )


def _gate_section(summary: dict[str, Any]) -> str:
    gate = summary.get("gate")
    promoted = summary.get("promoted")
    if not gate:
        return f"<p>Promoted: {'yes' if promoted else 'no'} (no gate)</p>" if promoted is not None else ""
    verdict = "passed" if gate["passed"] else f"stopped the run (on_fail: {escape(gate['on_fail'])})"
    rows = []
    for check in gate["checks"]:
        figures = {k: check[k] for k in ("value", "difference", "t", "df", "p_value") if check.get(k) is not None}
        shown = ", ".join(
            f"{k} {number_text(v) if isinstance(v, float) else escape(str(v))}" for k, v in figures.items()
        )
        test = escape(check.get("test", ""))
        outcome = "<span class='ok'>pass</span>" if check["passed"] else "<span class='bad'>FAIL</span>"
        rows.append(f"<tr><td>{escape(check['check'])}</td><td>{outcome}</td><td>{shown}</td><td>{test}</td></tr>")
    return (
        f"<h2>Gate: <span class='{'ok' if gate['passed'] else 'bad'}'>{verdict}</span></h2>"
        f"<p>Baseline: {escape(gate['baseline'] or 'none')}. Promoted: {'yes' if promoted else 'no'}.</p>"
        f"<table><tr><th>check</th><th></th><th>figures</th><th>test</th></tr>{''.join(rows)}</table>"
    )


def _model_section(model: dict[str, Any] | None) -> str:
    if not model:
        return ""
    registered = [("registered as", f"{model['group']} version {model['version']}")] if "group" in model else []
    if registered:
        registered += [("approval status", model["approval_status"]), ("image", model["image"])]
    rows = [
        ("training job", model["training_job"]),
        *(registered or [("registered as", "not registered (registry.enabled is false)")]),
        ("model", model["model_data"]),
        *((f"hold-out {name}", number_text(value)) for name, value in (model.get("test") or {}).items()),
    ]
    table = "".join(f"<tr><td>{escape(label)}</td><td>{escape(str(value))}</td></tr>" for label, value in rows)
    return f"<h2>Final model</h2><table>{table}</table>"


def _failures_section(summary: dict[str, Any]) -> str:
    if not summary["failures"]:
        return ""
    rows = "".join(
        f"<tr><td>{escape(str(failure['fold']))}</td><td>{escape(str(failure['job_name']))}</td>"
        f"<td>{escape(str(failure['status']))}</td><td>{escape(str(failure['reason']))}</td></tr>"
        for failure in summary["failures"]
    )
    return f"<h2>Failures</h2><table><tr><th>fold</th><th>job</th><th>status</th><th>reason</th></tr>{rows}</table>"


def _cost_section(summary: dict[str, Any]) -> str:
    cost = summary.get("cost") or {}
    by_type = cost.get("by_instance_type") or {}
    rows = "".join(
        f"<tr><td>{escape(kind)}</td><td>{number_text(seconds['billable_instance_seconds'])}</td>"
        f"<td>{number_text(seconds['training_instance_seconds'])}</td></tr>"
        for kind, seconds in sorted(by_type.items())
    )
    savings = cost.get("spot_savings")
    note = f"<p class='note'>Managed spot training saved {savings:.0%}.</p>" if savings else ""
    return (
        "<h2>Cost</h2><table><tr><th>instance type</th><th>billable instance-seconds</th>"
        f"<th>training instance-seconds</th></tr>{rows}"
        f"<tr><td>all</td><td>{number_text(cost.get('billable_instance_seconds'))}</td>"
        f"<td>{number_text(cost.get('training_instance_seconds'))}</td></tr></table>{note}"
    )
