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
    # README: the first steps in compose; docs/operations.md: the workflow, and the rollout rehearsals.
    assert sum(block.docker for block in tested) == 3
