"""Every command block of README.md and docs/operations.md says whether a test runs it, and why not if not."""

from __future__ import annotations

import pytest

from tests.doc_blocks import DOCUMENTS, blocks, unmarked


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_runnable_block_is_marked(document) -> None:  # noqa: ANN001 - a Path
    assert unmarked(document) == [], f"{document.name}: give these blocks a <!-- test --> or <!-- untested: why -->"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_untested_blocks_say_why_and_server_blocks_say_when_they_are_up(document) -> None:  # noqa: ANN001
    for block in blocks(document):
        if not block.tested:
            assert len(block.options.split()) >= 4, f"{block}: say why it is not run"
        elif block.options.startswith("server"):
            assert block.ready_url and block.ready_url.startswith("http://127.0.0.1:"), block


def test_the_main_command_and_the_workflow_are_run() -> None:
    tested = [block for document in DOCUMENTS for block in blocks(document) if block.tested]
    texts = "\n".join(block.text for block in tested)
    for command in ("bash infra/sandbox.sh", "sandbox promote", "mlflow models serve", "load_model", "curl"):
        assert command in texts, f"no tested block runs {command}"
    # docs/operations.md: the workflow in compose, and the rollout rehearsals.
    assert sum(block.docker for block in tested) == 2


def commands(text: str) -> list[str]:
    """A shell block's commands, comments and spacing aside."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [" ".join(line.split()) for line in lines if line]


def test_the_readmes_compose_commands_are_the_ones_the_smoke_test_runs() -> None:
    # README's first compose steps are not run a second time: they must be commands of a docker block.
    readme, operations = DOCUMENTS
    run = {command for block in blocks(operations) if block.docker for command in commands(block.text)}
    compose_blocks = [block for block in blocks(readme) if "docker compose run" in block.text]
    assert compose_blocks, "README shows no `docker compose run` block"
    for block in compose_blocks:
        missing = [command for command in commands(block.text) if command not in run]
        assert block.docker or not missing, f"{block}: not run by the compose smoke test: {missing}"
