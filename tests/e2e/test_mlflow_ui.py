"""The MLflow UI in a real browser (Playwright driving Debian's chromium), against the end-to-end stack's server.

What a newcomer meets: MLflow 3.12 opens in its GenAI view, whose sidebar has no registry link, and the
registry's pages open under a promotion popup. The documented way past both is two clicks, which the browser
then remembers: "Model training" at the top of the sidebar, and "Try it now" (or the popup's x). The
registry's own URL, http://HOST:PORT/#/models/NAME, opens the model's page in either view.

Screenshots of each page go to test-artifacts/mlflow-ui/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from tests.e2e.conftest import MODEL, Stack
from tests.support import PROJECT_ROOT

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
# Headless, as root, on a machine with no network beyond loopback: no sandbox, GPU or background traffic.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = PROJECT_ROOT / "test-artifacts" / "mlflow-ui"
INPUT_CONTRACT = "float32 pixels in [0, 1], shape (N, 1, 28, 28)"
expect.set_options(timeout=30_000)  # a cold MLflow UI loads its bundles in seconds on a busy 2-core machine


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), f"no {CHROMIUM}: apt-get install chromium (.ci/run installs it)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    """A new browser profile: nothing remembered from an earlier visit."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    yield context.new_page()
    context.close()


def model_training_view(page: Page, base: str) -> None:
    """The first documented click: the sidebar's "Model training" (GenAI shows an experiment's traces)."""
    page.goto(f"{base}/")
    page.get_by_text("Model training", exact=True).click()
    expect(page.get_by_role("link", name="Model registry")).to_be_visible()


def registry_view(page: Page, base: str) -> None:
    """The two documented clicks: the model-training view, then past the registry's popup."""
    model_training_view(page, base)
    page.get_by_role("link", name="Model registry").click()
    popup = page.get_by_role("dialog")
    expect(popup).to_contain_text("Flexible, governed deployments with the new Model Registry UI")
    page.get_by_role("button", name="Try it now").click()
    expect(popup).to_have_count(0)


def version_row(page: Page, version: str) -> Locator:
    """The row of `version` in the model page's table: the row whose link is exactly "Version 1", not
    "Version 12" (a row's text runs its cells together, so a text match cannot tell them apart)."""
    return page.get_by_role("row").filter(has=page.get_by_role("link", name=f"Version {version}", exact=True))


def shot(page: Page, name: str) -> None:
    page.screenshot(path=SHOTS / f"{name}.png", full_page=True)


def test_two_documented_clicks_show_the_registry_and_the_browser_remembers_them(stack: Stack, page: Page) -> None:
    page.goto(f"{stack.tracking_uri}/")
    expect(page.get_by_text("GenAI", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Model registry")).to_have_count(0)
    registry_view(page, stack.tracking_uri)
    expect(page.get_by_role("link", name=MODEL)).to_be_visible()
    shot(page, "registered-models")
    page.reload()
    expect(page.get_by_role("link", name=MODEL)).to_be_visible()
    expect(page.get_by_role("link", name="Model registry")).to_be_visible()
    expect(page.get_by_role("dialog")).to_have_count(0)


def test_the_model_page_lists_its_versions_with_their_aliases(stack: Stack, page: Page) -> None:
    client = MlflowClient(stack.tracking_uri)
    aliases = client.get_registered_model(MODEL).aliases
    versions = client.search_model_versions(f"name = '{MODEL}'")
    registry_view(page, stack.tracking_uri)
    page.goto(f"{stack.tracking_uri}/#/models/{MODEL}")
    for version in versions:
        expect(version_row(page, version.version)).to_have_count(1)
    for alias, version in aliases.items():
        row = version_row(page, version)
        expect(row).to_contain_text(re.compile(rf"@\s*{alias}"))
    expect(page.get_by_text(INPUT_CONTRACT).first).to_be_visible()
    shot(page, "registered-model")


def test_a_version_page_shows_its_stage_source_run_and_input_contract(stack: Stack, page: Page) -> None:
    client = MlflowClient(stack.tracking_uri)
    version = client.get_model_version_by_alias(MODEL, "production")
    assert version.run_id, "a version registered by the training job has its run"
    run_name = client.get_run(version.run_id).info.run_name
    registry_view(page, stack.tracking_uri)
    page.goto(f"{stack.tracking_uri}/#/models/{MODEL}/versions/{version.version}")
    expect(page.get_by_text(f"Version {version.version}", exact=True)).to_be_visible()
    expect(page.get_by_text("Production", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name=run_name)).to_be_visible()
    expect(page.get_by_text(INPUT_CONTRACT)).to_be_visible()
    shot(page, "model-version")
    page.get_by_role("link", name=run_name).click()
    expect(page).to_have_url(re.compile(f"/runs/{version.run_id}"))


def test_the_run_page_shows_its_metrics_and_plots(stack: Stack, page: Page) -> None:
    client = MlflowClient(stack.tracking_uri)
    run_id = client.get_model_version(MODEL, stack.version).run_id
    assert run_id, "a version registered by the training job has its run"
    run = client.get_run(run_id)
    base = f"{stack.tracking_uri}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    model_training_view(page, stack.tracking_uri)
    page.goto(base)
    for metric in ("test_accuracy", "val_accuracy", "system/cpu_utilization_percentage"):
        expect(page.get_by_text(metric, exact=True).first).to_be_visible()
    # JavaScript and Python both write a float's shortest round-trip form.
    expect(page.get_by_text(str(run.data.metrics["test_accuracy"]), exact=True).first).to_be_visible()
    shot(page, "run")
    page.goto(f"{base}/artifacts")
    page.get_by_text("plots", exact=True).click()
    for plot in ("curves.png", "confusion_matrix.png"):
        page.get_by_text(plot, exact=True).click()
        preview = page.get_by_role("img", name=f"plots/{plot}")
        expect(preview).to_be_visible()
        assert preview.evaluate("image => image.naturalWidth") >= 500, f"{plot} did not render"
    shot(page, "run-artifacts")


def test_the_experiment_lists_its_runs(stack: Stack, page: Page) -> None:
    client = MlflowClient(stack.tracking_uri)
    experiment = client.get_experiment_by_name("mnist-simplenn")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    model_training_view(page, stack.tracking_uri)
    page.goto(f"{stack.tracking_uri}/#/experiments/{experiment.experiment_id}")
    for run in runs:
        expect(page.get_by_text(run.info.run_name, exact=True).first).to_be_visible()
    expect(page.get_by_text(f"{len(runs)} matching run")).to_be_visible()
    shot(page, "experiment")
