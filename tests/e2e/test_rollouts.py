"""The main command's local stack (`python -m infra.local.stack up`, on free ports), and canary rollouts in it
as `bash infra/sandbox.sh rehearse SCENARIO` runs them: live traffic over REST and gRPC through the router
(Envoy), judged on Prometheus, recorded in MLflow.

One sandbox serves every test of the module, in order: `up` starts every service and serves version 1; a good
candidate is promoted with no failed request, its version's page links to the rollout's run, and
every panel of the Grafana dashboard has data for both versions of that rollout; a schema-breaking, a less
accurate and a slower one are each aborted for their own reason with production unchanged; a less accurate
one run as a shadow is found worse on mirrored traffic while clients are answered by production alone; a
rollout stopped with Ctrl+C (or SIGTERM) leaves all traffic on production, and a second one cannot start
while the first runs. Last, `down` stops every process, and `up` again keeps the data, trains and serves the
next version, on which the blue-green rehearsal passes. (One stack for all: each `up` costs a training run and
six services' start, on CI's two busy cores.)
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient
from playwright.sync_api import expect, sync_playwright

from mlops_sandbox import registry
from mlops_sandbox.processes import group_alive
from mlops_sandbox.prometheus import PrometheusQuery
from mlops_sandbox.router import RouterAdmin, Split
from mlops_sandbox.waiting import NotReadyYet, wait_for
from tests.e2e.test_mlflow_ui import CHROMIUM, CHROMIUM_ARGS, registry_view
from tests.support import PROJECT_ROOT, PYTHON, local_stack_env, logged_model_id, run_module, server
from tools.ports import free_port

pytestmark = pytest.mark.e2e

MODEL = "pytorch_simplenn_mnist"
INTERVAL = "10s"
DASHBOARD = PROJECT_ROOT / "services" / "grafana" / "dashboards" / "rollouts.json"


@dataclass(frozen=True)
class Sandbox:
    env: dict[str, str]
    ports: dict[str, int]
    root: Path
    """SANDBOX_DIR: its data, logs and the run/ folder of process-group files."""
    up_output: str
    """What the module's first `up` printed."""

    def url(self, port: str) -> str:
        return f"http://127.0.0.1:{self.ports[port]}"

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.url("SANDBOX_MLFLOW_PORT"))

    @property
    def router(self) -> RouterAdmin:
        return RouterAdmin(self.url("SANDBOX_ROUTER_ADMIN_PORT"))

    def production(self) -> str:
        return str(self.client.get_model_version_by_alias(MODEL, "production").version)

    def rehearse(self, scenario: str) -> subprocess.CompletedProcess[str]:
        done = run_module("infra.local.stack", "rehearse", scenario, "--interval", INTERVAL, env=self.env, timeout=900)
        print(done.stdout[-6000:])
        # Whatever the rollout's outcome, the registry does not contradict itself afterwards.
        assert registry.inconsistencies(self.client, MODEL) == [], done.stdout[-3000:]
        return done


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, mnist_root: Path) -> Iterator[Sandbox]:
    root = tmp_path_factory.mktemp("rollouts")
    env, ports = local_stack_env(root / "sandbox", mnist_root)
    up = run_module("infra.local.stack", "up", env=env)
    try:
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        yield Sandbox(env, ports, root / "sandbox", up.stdout)
    finally:
        run_module("infra.local.stack", "down", env=env)
    assert not list((root / "sandbox" / "run").glob("*.pid"))


def process_groups(sandbox: Sandbox) -> list[int]:
    """The process groups that `up` recorded (run/*.pid), one per long-running service."""
    return [json.loads(p.read_text())["pid"] for p in (sandbox.root / "run").glob("*.pid")]


def test_up_starts_every_service_and_serves_the_first_version(sandbox: Sandbox) -> None:
    assert "The sandbox is up" in sandbox.up_output
    assert sandbox.url("SANDBOX_MLFLOW_PORT") in sandbox.up_output
    assert "served version 1" in sandbox.up_output
    serving = f"{sandbox.url('SANDBOX_SERVING_HTTP_PORT')}/v2/models/{MODEL}"
    assert requests.get(f"{serving}/ready", timeout=5).status_code == 200
    logs = {p.name for p in (sandbox.root / "logs").iterdir()}
    expected = {"s3", "mlflow", "training", "serving", "predict", "router", "prometheus"}
    assert {f"{name}.log" for name in expected} <= logs
    assert (sandbox.root / "s3-credentials.json").stat().st_mode & 0o077 == 0
    groups = process_groups(sandbox)
    # s3, mlflow, both serving endpoints, the router and Prometheus
    assert len(groups) == 6 and all(group_alive(g) for g in groups)


def rollout_runs(sandbox: Sandbox, candidate: str) -> list[str]:
    """The MLflow runs of the rollouts that the candidate version went through, from its tags (the lineage)."""
    tags = sandbox.client.get_model_version(MODEL, candidate).tags
    return [key.removeprefix("rollout.run.") for key in tags if key.startswith("rollout.run.")]


def last_rollout_run(sandbox: Sandbox, candidate: str) -> dict[str, str]:
    """The tags and params of the candidate version's latest rollout run."""
    runs = rollout_runs(sandbox, candidate)
    assert runs, f"version {candidate} names no rollout run"
    run = max((sandbox.client.get_run(run_id) for run_id in runs), key=lambda r: r.info.start_time)
    assert run.data.tags["sandbox.rollout.candidate_version"] == candidate
    return {"run_id": run.info.run_id, **run.data.tags, **{f"param.{k}": v for k, v in run.data.params.items()}}


def candidate_of(output: str) -> str:
    match = re.search(rf"candidate: {MODEL} version (\d+)", output)
    assert match, output[-3000:]
    return match[1]


def rollout_env(sandbox: Sandbox) -> dict[str, str]:
    """What a user sets for `rollout start` when the sandbox's ports are not the defaults (docs/operations.md)."""
    return dict(
        sandbox.env,
        MLFLOW_TRACKING_URI=sandbox.url("SANDBOX_MLFLOW_PORT"),
        SANDBOX_SERVING_URL=sandbox.url("SANDBOX_SERVING_HTTP_PORT"),
        SANDBOX_STAGING_URL=sandbox.url("SANDBOX_STAGING_HTTP_PORT"),
        SANDBOX_ROUTER_ADMIN_URL=sandbox.url("SANDBOX_ROUTER_ADMIN_PORT"),
        SANDBOX_PROMETHEUS_URL=sandbox.url("SANDBOX_PROMETHEUS_PORT"),
        SANDBOX_ROLLOUT_METRICS_ADDRESS=f"127.0.0.1:{free_port()}",
    )


def copy_of_production(sandbox: Sandbox) -> str:
    """A new version that is production's model registered again: a candidate as good as production."""
    source = sandbox.client.get_model_version(MODEL, sandbox.production())
    assert source.source is not None
    # The tracking server checks that a models:/m-<id> source is the logged model that model_id names.
    copy = sandbox.client.create_model_version(
        MODEL, source.source, run_id=source.run_id, model_id=logged_model_id(source.source)
    )
    return str(copy.version)


def test_a_rollout_without_labelled_traffic_is_refused_before_anything_moves(sandbox: Sandbox) -> None:
    staging = str(sandbox.client.get_model_version_by_alias(MODEL, "staging").version)
    candidate = copy_of_production(sandbox)
    done = run_module("infra.ops.rollout", "start", candidate, env=rollout_env(sandbox))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no traffic went through the router" in done.stderr
    # Said at once, not after a silent wait: what it waits for, and for how long.
    assert "waiting up to 15 s for routed traffic" in done.stdout, done.stdout
    assert str(sandbox.client.get_model_version_by_alias(MODEL, "staging").version) == staging
    assert sandbox.router.split() == Split(0, 0)


def test_a_good_candidate_is_promoted_with_no_failed_request(sandbox: Sandbox) -> None:
    before = sandbox.production()
    done = sandbox.rehearse("good")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    candidate = candidate_of(done.stdout)
    assert re.search(r"rehearsal 'good': promoted .*; \d+ requests, 0 failed; as expected", done.stdout)
    assert sandbox.production() == candidate != before
    assert sandbox.router.split() == Split(0, 0)
    run = last_rollout_run(sandbox, candidate)
    assert run["sandbox.rollout.outcome"] == "promoted" and run["sandbox.rollout.production_version"] == before
    assert run["param.strategy"] == "canary" and run["param.steps"] == "10,50,100"
    steps = sandbox.client.get_metric_history(run["run_id"], "candidate_weight_percent")
    assert [m.value for m in sorted(steps, key=lambda m: m.step)] == [10, 50, 100]
    # Prometheus's recording rules have data for the versions that answered.
    prometheus = PrometheusQuery(sandbox.url("SANDBOX_PROMETHEUS_PORT"))
    shares = prometheus.vector("backend:sandbox_traffic_share:ratio_rate1m", by="backend")
    assert {"production", "candidate"} <= set(shares), shares
    accuracy = prometheus.vector("version:sandbox_traffic_accuracy:ratio_rate1m", by="model_version")
    assert candidate in accuracy and accuracy[candidate] > 0.8, accuracy


def test_the_version_page_links_to_the_run_of_its_rollout(sandbox: Sandbox) -> None:
    # After the good rollout, production is its candidate: from the version's page in a real browser, one
    # click on the link in its description opens the rollout's run.
    candidate = sandbox.production()
    run = sandbox.client.get_run(last_rollout_run(sandbox, candidate)["run_id"])
    tracking = sandbox.url("SANDBOX_MLFLOW_PORT")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            registry_view(page, tracking)
            page.goto(f"{tracking}/#/models/{MODEL}/versions/{candidate}")
            link = page.get_by_role("link", name=re.compile(r"^canary against version \d+, "))
            expect(link).to_have_count(1)
            # MLflow renders a description's links to open in a new tab.
            assert link.get_attribute("target") == "_blank"
            with page.context.expect_page() as opened:
                link.click()
            run_page = opened.value
            expect(run_page).to_have_url(re.compile(f"/runs/{run.info.run_id}"))
            expect(run_page.get_by_text(run.info.run_name, exact=True).first).to_be_visible()
        finally:
            browser.close()


def test_every_dashboard_panel_has_data_for_both_versions_of_the_good_rollout(sandbox: Sandbox) -> None:
    # Grafana cannot run here, so its dashboard's queries go to the sandbox's Prometheus as Grafana sends them
    # (range queries, every 2 s, the scrape interval), over the window of the rollout the test above ran.
    candidate = sandbox.production()
    run = last_rollout_run(sandbox, candidate)
    assert run["sandbox.rollout.outcome"] == "promoted", "runs after the good rollout of the test above"
    production = run["sandbox.rollout.production_version"]
    info = sandbox.client.get_run(run["run_id"]).info
    assert info.end_time is not None, "the rollout's run has not ended"
    start, end = info.start_time / 1000, info.end_time / 1000
    prometheus = PrometheusQuery(sandbox.url("SANDBOX_PROMETHEUS_PORT"))
    # What each panel tells apart, as its legend names it: both versions, both backends, the router's four
    # clusters (the rehearsal sends REST and gRPC).
    expected = {
        "model_version": {production, candidate},
        "backend": {"production", "candidate"},
        "envoy_cluster_name": {"production_rest", "candidate_rest", "production_grpc", "candidate_grpc"},
    }
    missing = []
    panels = json.loads(DASHBOARD.read_text())["panels"]
    for panel in panels:
        for target in panel["targets"]:
            (key,) = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target["legendFormat"])) & set(expected)
            series = prometheus.range(target["expr"], by=key, start=start, end=end, step=2)
            shown = {name: [value for _, value in samples] for name, samples in series.items() if samples}
            # The controller's gauge exists for the candidate only, and went up to 100 %.
            if "sandbox_rollout_candidate_weight_percent" in target["expr"]:
                if max(shown.get(candidate, [0])) != 100:
                    missing.append(f"{panel['title']}: candidate v{candidate} never at 100 %: {shown}")
                continue
            if not expected[key] <= set(shown):
                missing.append(
                    f"{panel['title']} [{target['expr']}]: data for {sorted(shown)}, not for all of "
                    f"{sorted(expected[key])}"
                )
            # The rollout failed no request: its error panels show 0, not "No data".
            if "error" in target["expr"] or "5xx" in target["expr"]:
                if any(value != 0 for values in shown.values() for value in values):
                    missing.append(f"{panel['title']}: errors in a rollout that failed no request: {shown}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize(
    ("scenario", "reason"),
    [("schema", "error rate"), ("worse", "online accuracy"), ("slower", "p99")],
)
def test_a_bad_candidate_is_aborted_for_its_reason_and_production_is_unchanged(
    sandbox: Sandbox, scenario: str, reason: str
) -> None:
    before = sandbox.production()
    staging = str(sandbox.client.get_model_version_by_alias(MODEL, "staging").version)
    done = sandbox.rehearse(scenario)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    candidate = candidate_of(done.stdout)
    # @staging is back where it was, so that a later `promote @staging` cannot promote the rejected candidate.
    assert str(sandbox.client.get_model_version_by_alias(MODEL, "staging").version) == staging
    assert sandbox.client.get_model_version(MODEL, candidate).current_stage == "Archived"
    assert re.search(rf"rehearsal '{scenario}': aborted \({reason}.*as expected", done.stdout), done.stdout[-2000:]
    assert sandbox.production() == before
    assert sandbox.router.split() == Split(0, 0)
    version = sandbox.client.get_model_version(MODEL, candidate)
    assert version.tags["rollout.outcome"] == "aborted" and version.tags["rollout.reason"].startswith(reason)
    assert last_rollout_run(sandbox, candidate)["sandbox.rollout.outcome"] == "aborted"


def test_a_shadow_finds_a_worse_candidate_on_mirrored_traffic_while_production_answers_every_client(
    sandbox: Sandbox,
) -> None:
    before = sandbox.production()
    done = sandbox.rehearse("shadow")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    candidate = candidate_of(done.stdout)
    # The rehearsal checks the clients' side: not one failed request, every answer from production's version.
    assert re.search(
        r"rehearsal 'shadow': aborted \(online accuracy.*; \d+ requests, 0 failed; as expected", done.stdout
    )
    assert re.search(r"shadow: \d+ mirrored requests; online accuracy 0\.\d+ vs production's 0\.\d+", done.stdout)
    assert sandbox.production() == before
    assert sandbox.router.split() == Split(0, 0)
    run = last_rollout_run(sandbox, candidate)
    assert run["param.strategy"] == "shadow" and run["param.shadow_percent"] == "100"
    assert run["sandbox.rollout.outcome"] == "aborted"
    metrics = sandbox.client.get_run(run["run_id"]).data.metrics
    # Both versions were measured on the same mirrored images, where the traffic arrived: on the servers.
    assert metrics["candidate_requests"] >= 20
    assert metrics["candidate_accuracy"] < metrics["production_accuracy"] - 0.02, metrics
    assert 0 < metrics["prediction_agreement"] < 1, metrics
    assert metrics["candidate_error_rate"] == 0


def test_an_interrupted_rollout_leaves_all_traffic_on_production_and_a_second_cannot_start(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    production = sandbox.production()
    other = copy_of_production(sandbox)
    env = rollout_env(sandbox)
    # The user's traffic, as docs/operations.md starts it: through the router, on a port Prometheus scrapes.
    traffic_env = dict(
        sandbox.env,
        SANDBOX_TRAFFIC_TARGET=sandbox.url("SANDBOX_ROUTER_REST_PORT"),
        SANDBOX_TRAFFIC_RATE="20",
        SANDBOX_TRAFFIC_DURATION_SECONDS="300",
        SANDBOX_TRAFFIC_METRICS_ADDRESS=f"127.0.0.1:{sandbox.ports['SANDBOX_TRAFFIC_METRICS_PORT']}",
    )
    metrics = f"http://127.0.0.1:{sandbox.ports['SANDBOX_TRAFFIC_METRICS_PORT']}/metrics"
    traffic = server("traffic", "services.traffic.entrypoint", traffic_env, tmp_path, metrics)
    argv = [PYTHON, "-m", "infra.ops.rollout", "start", other, "--interval", "60s"]
    with traffic:
        # Ctrl+C as a terminal delivers it: a test session started in a script's background job inherits
        # SIGINT ignored, and Python then leaves it ignored in the rollout too (the clean-clone run's failure).
        first = subprocess.Popen(
            argv,
            env=env,
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:

            def routed() -> None:
                if first.poll() is not None:
                    raise RuntimeError(f"the first rollout exited with {first.returncode}: {first.communicate()[0]}")
                if sandbox.router.split().candidate_percent != 10:
                    raise NotReadyYet("the first step has not begun")

            admin = sandbox.url("SANDBOX_ROUTER_ADMIN_PORT")
            wait_for(routed, service="the first rollout", address=admin, timeout=120)
            # With the same settings as the first: refused by the router's lease, before it binds the first's
            # metrics port (no warning that its metrics are not served).
            second = run_module("infra.ops.rollout", "start", other, env=env)
            assert second.returncode == 2 and "another rollout" in second.stderr, second.stdout + second.stderr
            assert "metrics are not served" not in second.stdout + second.stderr
            first.send_signal(signal.SIGINT)
            output, _ = first.communicate(timeout=60)
        finally:
            if first.poll() is None:
                first.kill()
    assert first.returncode == 130 and "interrupted: all traffic is on production" in output, output
    assert sandbox.router.split() == Split(0, 0), output
    assert sandbox.router.lease() is None or not sandbox.router.lease().live(time.time())  # type: ignore[union-attr]
    assert sandbox.production() == production
    run = last_rollout_run(sandbox, other)
    assert run["sandbox.rollout.outcome"] == "interrupted"
    assert registry.inconsistencies(sandbox.client, MODEL) == []
    assert (
        requests.get(f"{sandbox.url('SANDBOX_ROUTER_REST_PORT')}/v2/models/{MODEL}/ready", timeout=5).status_code == 200
    )


def test_down_stops_everything_and_up_again_serves_the_next_version(sandbox: Sandbox) -> None:
    production = sandbox.production()
    latest = max(int(v.version) for v in sandbox.client.search_model_versions(f"name = '{MODEL}'"))
    groups = process_groups(sandbox)
    down = run_module("infra.local.stack", "down", env=sandbox.env)
    assert down.returncode == 0, down.stderr
    assert not any(group_alive(g) for g in groups)
    assert not list((sandbox.root / "run").glob("*.pid"))
    serving = f"{sandbox.url('SANDBOX_SERVING_HTTP_PORT')}/v2/models/{MODEL}"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{serving}/ready", timeout=2)

    again = run_module("infra.local.stack", "up", env=sandbox.env)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert f"version {latest + 1} is now @production (was version {production})" in again.stdout
    assert f"served version {latest + 1}" in again.stdout
    staging = f"{sandbox.url('SANDBOX_STAGING_HTTP_PORT')}/v2/models/{MODEL}"
    assert requests.get(f"{staging}/ready", timeout=5).status_code == 200

    rehearsal = run_module("infra.local.stack", "rehearse", env=sandbox.env)
    assert rehearsal.returncode == 0, rehearsal.stdout[-4000:] + rehearsal.stderr[-4000:]
    for step in (
        "train and stage",
        "smoke-test staging",
        "gate, then promote",
        "verify production",
        "roll back",
        "verify production again",
    ):
        assert any(step in line and " ok " in line for line in rehearsal.stdout.splitlines()), step
    assert "rehearsal passed" in rehearsal.stdout

    # From a shell that knows neither the tracking URI nor the stack's ports (none of them is a default):
    # `sandbox list` finds the running stack's server, instead of waiting for 127.0.0.1:5000.
    shell = {key: value for key, value in sandbox.env.items() if key not in sandbox.ports}
    listing = run_module("infra.cli", "list", env=dict(shell, SANDBOX_TRACKING_WAIT_SECONDS="5"))
    assert listing.returncode == 0, listing.stdout[-2000:] + listing.stderr[-2000:]
    rows = [line.split()[:2] for line in listing.stdout.splitlines()[1:3]]
    # The rehearsal staged the version after, promoted it over the one `up` trained, and rolled back.
    assert rows == [[str(latest + 2), "Archived"], [str(latest + 1), "Production"]], listing.stdout
    # The registry never contradicts itself (registry.inconsistencies): `list` would say so on stderr, and
    # @staging left the archived version for production's.
    assert "warning:" not in listing.stderr, listing.stderr
    assert listing.stdout.splitlines()[2].split()[2] == "production,staging", listing.stdout
