"""Authentication, one setting away: a tracking server started with SANDBOX_AUTH=true through the project's own
entrypoint, the training job and the registry CLI signed in as its admin, and serving following @production
as the read-only serving user. One such stack serves every test here (SQLite, artifacts in a folder).

What a user would notice: no credentials get 401, and a client says which variables to set; the read-only
user gets 403 when it tries to promote, and the alias stays; the admin promotes, and serving, signed in as
the read-only user, serves the new version; the UI signs in, in a real browser.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import HttpCredentials, expect, sync_playwright
from pydantic import SecretStr

from mlops_sandbox.gate import wait_until_served
from mlops_sandbox.settings import TrackingClientSettings
from mlops_sandbox.tracking import connect
from mlops_sandbox.waiting import DependencyUnavailable
from tests.e2e.conftest import MODEL
from tests.e2e.test_mlflow_ui import CHROMIUM, CHROMIUM_ARGS
from tests.support import logged_model_id, module_env, run_module, server, tracking_server
from tools.ports import free_port

pytestmark = pytest.mark.e2e

ADMIN = ("admin", "admin-" + secrets.token_hex(8))
SERVING = ("serving", "serving-" + secrets.token_hex(8))
SIGNED_IN_ONLY = "/api/2.0/mlflow/registered-models/search?max_results=1"
CREDENTIAL_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "SANDBOX_AUTH_ADMIN_PASSWORD")


@dataclass(frozen=True)
class AuthStack:
    tracking_uri: str
    serving_url: str
    serving_log: Path
    first: str
    second: str


def client_env(tracking_uri: str, user: tuple[str, str] | None) -> dict[str, str]:
    """A client's environment, signed in as `user` (MLflow's own variables), or with no credentials at all."""
    env = module_env(MLFLOW_TRACKING_URI=tracking_uri, SANDBOX_TRACKING_WAIT_SECONDS="30")
    for name in CREDENTIAL_VARIABLES:
        env.pop(name, None)
    if user:
        env.update(MLFLOW_TRACKING_USERNAME=user[0], MLFLOW_TRACKING_PASSWORD=user[1])
    return env


def signed_in(monkeypatch: pytest.MonkeyPatch, tracking_uri: str, user: tuple[str, str]) -> MlflowClient:
    """A client of this test process, signed in as `user` through MLflow's own variables."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user[1])
    return MlflowClient(tracking_uri=tracking_uri)


@pytest.fixture(scope="module")
def auth_stack(tmp_path_factory: pytest.TempPathFactory, mnist_root: Path) -> Iterator[AuthStack]:
    root = tmp_path_factory.mktemp("auth")
    mlflow_port = free_port()
    tracking_uri = f"http://127.0.0.1:{mlflow_port}"
    server_env = module_env(
        SANDBOX_AUTH="true",
        SANDBOX_AUTH_ADMIN_PASSWORD=ADMIN[1],
        SANDBOX_AUTH_SERVING_PASSWORD=SERVING[1],
        MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),
        SANDBOX_AUTH_DATABASE_URI=f"sqlite:///{root / 'basic_auth.db'}",
        MLFLOW_BACKEND_STORE_URI=f"sqlite:///{root / 'mlflow.db'}",
        MLFLOW_ARTIFACTS_DESTINATION=str(root / "artifacts"),
        MLFLOW_PORT=str(mlflow_port),
    )
    with ExitStack() as running:
        health = f"{tracking_uri}/health"
        running.enter_context(tracking_server(server_env, root, health))
        admin_env = client_env(tracking_uri, ADMIN) | {"SANDBOX_MNIST_ROOT": str(mnist_root)}
        result = root / "training.json"
        # The training job signs in as the admin, registers a version and moves @production to it.
        trained = run_module(
            "training.train",
            *("--train-limit", "2000", "--epochs", "1", "--alias", "production", "--output-json", str(result)),
            env=admin_env,
        )
        assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
        first = json.loads(result.read_text())["version"]
        # A second version of the same weights: enough for serving to show that it follows a move.
        with pytest.MonkeyPatch.context() as patch:
            admin = signed_in(patch, tracking_uri, ADMIN)
            registered = admin.get_model_version(MODEL, first)
            assert registered.source, registered
            # The server (3.17) checks that a models:/m-<id> source is the logged model that model_id names.
            copy = admin.create_model_version(
                MODEL, registered.source, run_id=registered.run_id, model_id=logged_model_id(registered.source)
            )
            second = str(copy.version)
        http_port = free_port()
        serving_env = client_env(tracking_uri, SERVING) | {
            "MLSERVER_HOST": "127.0.0.1",
            "MLSERVER_HTTP_PORT": str(http_port),
            "MLSERVER_GRPC_PORT": str(free_port()),
            "MLSERVER_METRICS_PORT": str(free_port()),
            "SANDBOX_SERVING_POLL_SECONDS": "1",
            "SANDBOX_SERVING_WEBHOOK_ADDRESS": f"127.0.0.1:{free_port()}",
            "SANDBOX_SERVING_WEBHOOK_SECRET": secrets.token_hex(16),
        }
        stack = AuthStack(tracking_uri, f"http://127.0.0.1:{http_port}", root / "serving.log", first, second)
        ready = f"{stack.serving_url}/v2/models/{MODEL}/ready"
        running.enter_context(server("serving", "services.serving.entrypoint", serving_env, root, ready, timeout=180))
        yield stack


def test_without_credentials_the_server_answers_401_and_a_client_names_the_variables(auth_stack: AuthStack) -> None:
    assert requests.get(f"{auth_stack.tracking_uri}{SIGNED_IN_ONLY}", timeout=10).status_code == 401
    wrong = requests.get(f"{auth_stack.tracking_uri}{SIGNED_IN_ONLY}", auth=(ADMIN[0], "wrong-password-0"), timeout=10)
    assert wrong.status_code == 401
    # What every client of the project calls first (training, serving, the CLIs, the rehearsal).
    for user, refusal in ((None, "needs a user and password"), ((SERVING[0], "wrong-password-0"), "refused user")):
        settings = TrackingClientSettings(
            tracking_uri=auth_stack.tracking_uri,
            username=user[0] if user else None,
            password=SecretStr(user[1]) if user else None,
        )
        with pytest.raises(DependencyUnavailable, match=refusal) as refused:
            connect(settings)
        assert "(401): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in str(refused.value)


# The stage API is deprecated, and still what stage URIs and the CLI use in MLflow 3.12: it is tried here too.
@pytest.mark.filterwarnings("ignore:.*transition_model_version_stage.*:FutureWarning")
def test_the_read_only_user_reads_but_cannot_promote(auth_stack: AuthStack, monkeypatch: pytest.MonkeyPatch) -> None:
    reader = signed_in(monkeypatch, auth_stack.tracking_uri, SERVING)
    assert reader.get_model_version_by_alias(MODEL, "production").version == auth_stack.first
    with pytest.raises(MlflowException) as alias:
        reader.set_registered_model_alias(MODEL, "production", auth_stack.second)
    with pytest.raises(MlflowException) as stage:
        reader.transition_model_version_stage(MODEL, auth_stack.second, "Production")
    for refused in (alias.value, stage.value):
        assert refused.get_http_status_code() == 403 and refused.error_code == "PERMISSION_DENIED"
    assert reader.get_model_version_by_alias(MODEL, "production").version == auth_stack.first, "nothing moved"


def test_the_admin_promotes_and_serving_follows_as_the_read_only_user(auth_stack: AuthStack) -> None:
    admin_env = client_env(auth_stack.tracking_uri, ADMIN)
    promoted = run_module("infra.ops.registry", "promote", auth_stack.second, "--to", "production", env=admin_env)
    assert promoted.returncode == 0, promoted.stderr
    wait_until_served(auth_stack.serving_url, MODEL, auth_stack.second, timeout=120)
    log = auth_stack.serving_log.read_text()
    # Webhooks are admin-only in MLflow 3.12's auth app: serving says so and follows by polling.
    assert "user 'serving' may not register webhooks" in log


def test_the_ui_signs_in_in_a_real_browser(auth_stack: AuthStack) -> None:
    assert CHROMIUM.exists(), f"no {CHROMIUM}: apt-get install chromium (.ci/run installs it)"
    home = f"{auth_stack.tracking_uri}/"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            wrong: HttpCredentials = {"username": ADMIN[0], "password": "wrong-password-0"}
            for credentials in (None, wrong):
                page = browser.new_context(http_credentials=credentials).new_page()
                with page.expect_response(home) as answer:
                    # Chromium ends a navigation that it has no (right) credentials for with an error page.
                    with contextlib.suppress(PlaywrightError):
                        page.goto(home)
                assert answer.value.status == 401, credentials
                assert answer.value.headers.get("www-authenticate") == 'Basic realm="mlflow"', "the sign-in prompt"
            admin = browser.new_context(http_credentials={"username": ADMIN[0], "password": ADMIN[1]}).new_page()
            assert (signed_in_home := admin.goto(home)) is not None and signed_in_home.status == 200
            admin.goto(f"{auth_stack.tracking_uri}/#/models/{MODEL}")
            expect(admin.get_by_role("link", name=f"Version {auth_stack.second}", exact=True)).to_be_visible(
                timeout=60_000
            )
        finally:
            browser.close()
