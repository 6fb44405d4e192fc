"""docs/settings.md, .env.example and compose.yaml agree with the settings classes."""

from __future__ import annotations

import re

from tools import settings_docs

COMPOSE = settings_docs.ROOT / "compose.yaml"
# ${VAR:-default} or ${VAR-default} in compose.yaml
DEFAULTED = re.compile(r"\$\{([A-Z][A-Z0-9_]*):?-([^}]*)\}")
# Where compose's default differs from the class's on purpose.
OWN_DEFAULTS = {"MLFLOW_BACKEND_STORE_URI": "compose keeps SQLite in the mlflow-db volume"}


def documented() -> dict[str, settings_docs.Variable]:
    """Each variable as the first settings class that declares it (in docs/settings.md's order) has it."""
    found: dict[str, settings_docs.Variable] = {}
    for section in settings_docs.SECTIONS:
        for var in settings_docs.variables(section.settings):
            found.setdefault(var.name, var)
    return found


def test_the_generated_files_are_current() -> None:
    assert settings_docs.main(["--check"]) == 0, "run python -m tools.settings_docs and commit the result"


def test_every_variable_compose_reads_is_a_documented_setting_with_the_same_default() -> None:
    variables = documented()
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE.read_text()))
    assert not used - set(variables), (
        f"compose.yaml reads variables no settings class declares: {used - set(variables)}"
    )
    for name, default in DEFAULTED.findall(COMPOSE.read_text()):
        if name not in OWN_DEFAULTS and not variables[name].per_process:
            assert default == variables[name].default, f"compose.yaml defaults {name} to {default!r}"


def test_env_example_is_short_and_lists_what_compose_requires_first() -> None:
    names = re.findall(r"(?m)^([A-Z][A-Z0-9_]*)=", settings_docs.ENV_EXAMPLE.read_text())
    assert set(names) == {name for name, var in documented().items() if var.in_env_example}
    # Eight settings, and SANDBOX_AUTH: the one to turn on before the stack is reachable from another machine.
    assert len(names) <= 9, "the full reference is docs/settings.md; .env.example keeps the few a user sets"
    required = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):\?", COMPOSE.read_text()))
    assert required and names[: len(required)] == sorted(required, key=names.index), "required ones come first"


def test_every_secret_in_env_example_is_a_placeholder_that_compose_refuses() -> None:
    for line in settings_docs.ENV_EXAMPLE.read_text().splitlines():
        name, _, value = line.partition("=")
        if re.search(r"SECRET|PASSWORD|ACCESS_KEY", name) and not name.startswith("#"):
            assert value.startswith("change-me"), f"{name}={value} is not a placeholder"
