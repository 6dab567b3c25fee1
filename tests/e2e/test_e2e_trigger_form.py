"""The trigger form in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

Screenshots are kept in build/e2e/artifacts/: the form filled in, the form refusing a value, the
finished run's grid and its cv_report.html.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from airflow_smx.core.form import SECTIONS, form_fields
from airflow_smx.core.policy import Policy
from airflow_smx.core.request import parse_request
from tests.e2e.deployment import ARTIFACTS, BUCKET, DAG_ID, Deployment

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialing Google, which this closed network refuses.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, deployment: Deployment) -> Iterator[Page]:
    """Signed in as the admin, on the DAG's page."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    url = deployment.airflow.url
    page.goto(f"{url}/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(deployment.airflow.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/")
    page.goto(f"{url}/dags/{DAG_ID}")
    yield page
    page.close()


def stored_defaults(deployment: Deployment) -> dict[str, dict[str, Any]]:
    """The form's fields as the deployment builds them from its [smx] request_file."""
    stored = json.loads(Path(deployment.airflow.env["AIRFLOW__SMX__REQUEST_FILE"]).read_text())
    return form_fields(parse_request(stored), Policy())  # the e2e deployment: SageMaker only, as a fresh install


def open_section(form: Locator, name: str) -> None:
    header = form.get_by_role("button", name=name, exact=True)
    if header.get_attribute("aria-expanded") != "true":
        header.click()


def test_the_form_shows_every_field_refuses_a_bad_value_and_triggers_a_run(page: Page, deployment: Deployment) -> None:
    page.get_by_role("button", name="Trigger").first.click()
    form = page.get_by_role("dialog")
    fields = stored_defaults(deployment)
    for section in SECTIONS:
        open_section(form, section)
        for spec in fields.values():
            if spec["section"] == section:
                label = re.compile(rf"^{re.escape(spec['title'])}\s*\*?$")  # "*" marks a required field
                expect(form.get_by_text(label)).to_be_visible()
                expect(form.get_by_text(spec["description"], exact=True)).to_be_visible()
    runs_before = set(deployment.airflow.run_ids())

    open_section(form, "Folds")
    holdout = form.get_by_label("Hold-out fraction")
    holdout.fill("1")  # the schema's exclusiveMaximum; the form itself lets it through, the API must not
    form.get_by_role("button", name="Trigger").click()
    expect(page.get_by_text("Invalid input for param cv_holdout").first).to_be_visible()
    expect(page.get_by_text("Failed to Trigger Dag").first).to_be_visible()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "trigger-form-refused.png")
    assert set(deployment.airflow.run_ids()) == runs_before

    page.mouse.move(0, 0)  # a toast under the pointer stays, and it covers the Trigger button
    expect(page.get_by_text("Failed to Trigger Dag")).to_have_count(0, timeout=30_000)
    holdout.fill("0")
    holdout.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "trigger-form.png")
    form.get_by_role("button", name="Trigger").click()
    expect(page.get_by_text("Dag Run Triggered").first).to_be_visible()
    (run_id,) = set(deployment.airflow.run_ids()) - runs_before
    assert deployment.airflow.dag_run(run_id)["conf"]["name"] == "form-default"
    watched = deployment.airflow.watch(run_id)
    assert watched.state == "success", watched.seen
    page.screenshot(path=ARTIFACTS / "after-trigger.png")

    # The grid of the finished run: the five tasks it ran, the fold task mapped once per fold
    page.goto(f"{deployment.airflow.url}/dags/{DAG_ID}/runs/{run_id}")
    for task_id in ("check_request", "split_dataset", "train_fold", "aggregate_results", "stop_unfinished_jobs"):
        expect(page.get_by_text(task_id, exact=True).first).to_be_visible()
    expect(page.get_by_text("fold_tasks", exact=True)).to_have_count(0)  # no group of skipped fold tasks
    page.screenshot(path=ARTIFACTS / "grid-finished-run.png", full_page=True)

    # The run's cv_report.html as a browser shows it: self-contained, it asks for nothing
    result = deployment.airflow.xcom(run_id, "aggregate_results")["result"]
    key = result.removeprefix(f"s3://{BUCKET}/").replace("cv_result.json", "cv_report.html")
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.set_content(deployment.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode())
    expect(page.get_by_role("heading", name=re.compile(r"^CV run form-default-"))).to_be_visible()
    chart = page.get_by_role("img", name="validation:accuracy by fold")
    expect(chart).to_be_visible()
    expect(chart.locator("circle")).to_have_count(3)  # the form's request: 3 folds
    expect(page.get_by_text("3/3 folds succeeded (3 required): succeeded")).to_be_visible()
    page.screenshot(path=ARTIFACTS / "cv-report.png", full_page=True)
    assert requested == [], requested
