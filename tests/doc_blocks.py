"""The commands of the documentation, run as written: the marked code blocks of README.md and docs/operations.md.

A block a user is meant to run carries a marker on the line before its fence:

    <!-- test -->                      run it; `timeout=SECONDS` (default 600) bounds it
    <!-- test: server ready=URL -->    start it in the background, go on once GET URL answers 200
    <!-- test: docker -->              run it in the compose smoke test, against the stack it started
    <!-- untested: REASON -->          not run, for the reason given

A `Session` runs blocks as a terminal would: one after another, in one folder, each seeing what the ones
before it exported (`source .venv/bin/activate` included); a command that fails fails its block.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from mlops_sandbox.processes import start_group, stop_group
from mlops_sandbox.waiting import http_ok, wait_for

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = (PROJECT_ROOT / "README.md", PROJECT_ROOT / "docs" / "operations.md")
RUNNABLE = ("bash", "sh", "python")
MARKED = re.compile(r"<!-- (test|untested)(?::\s*(.*?))? -->\n```(\w+)\n(.*?)\n```", re.S)
FENCE = re.compile(r"^```(\w+)$", re.M)


@dataclass(frozen=True)
class Block:
    """One marked code block: where it is, how it is to be run, and its text."""

    document: Path
    line: int
    tested: bool
    options: str
    language: str
    text: str

    def __str__(self) -> str:
        return f"{self.document.relative_to(PROJECT_ROOT)}:{self.line}"

    @property
    def timeout(self) -> float:
        found = re.search(r"timeout=(\d+)", self.options)
        return float(found.group(1)) if found else 600.0

    @property
    def ready_url(self) -> str | None:
        """For a server block, the URL that answers 200 once it is up."""
        found = re.search(r"server ready=(\S+)", self.options)
        return found.group(1) if found else None

    @property
    def docker(self) -> bool:
        return self.options.strip() == "docker"


def blocks(document: Path) -> list[Block]:
    """The marked blocks of `document`, in order."""
    text = document.read_text()
    found = []
    for match in MARKED.finditer(text):
        kind, options, language, body = match.groups()
        line = text.count("\n", 0, match.start()) + 2  # the fence's line, below the marker
        found.append(Block(document, line, kind == "test", options or "", language, body))
    return found


def unmarked(document: Path) -> list[int]:
    """Lines of the fences of runnable blocks (bash, sh, python) that carry no marker."""
    text = document.read_text()
    marked = {block.line for block in blocks(document)}
    lines = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        if match.group(1) in RUNNABLE and line not in marked:
            lines.append(line)
    return lines


@dataclass
class Session:
    """A terminal in `cwd` with environment `env`; the logs of its blocks go to `log_dir`."""

    cwd: Path
    env: dict[str, str]
    log_dir: Path
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, block: Block) -> str:
        """Run `block`; its output. AssertionError, with the output, when a command of it fails."""
        if block.ready_url:
            self._start(block, block.ready_url)
            return ""
        script = (
            f"python - <<'SANDBOX_BLOCK'\n{block.text}\nSANDBOX_BLOCK" if block.language == "python" else block.text
        )
        state = self.log_dir / "environment"
        # set -e: a failing command fails the block, as a reader would notice it; the environment is kept for
        # the next block, as a terminal keeps it.
        wrapped = f"set -euo pipefail\n{script}\nenv -0 > {state}\n"
        try:
            done = subprocess.run(
                ["bash", "-c", wrapped],
                cwd=self.cwd,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=block.timeout,
            )
        except subprocess.TimeoutExpired as err:
            raise AssertionError(
                f"{block} did not finish in {block.timeout:.0f} s:\n{err.stdout!r}\n{err.stderr!r}"
            ) from None
        output = done.stdout + done.stderr
        (self.log_dir / f"{block.document.stem}-{block.line}.log").write_text(output)
        assert done.returncode == 0, (
            f"{block} failed ({done.returncode}):\n{block.text}\n--- output ---\n{output[-6000:]}"
        )
        self.env = dict(entry.split("=", 1) for entry in state.read_text().split("\0") if "=" in entry)
        return output

    def _start(self, block: Block, ready_url: str) -> None:
        log = self.log_dir / f"{block.document.stem}-{block.line}.log"
        with open(log, "wb") as out:
            server = start_group(["bash", "-c", block.text], env=self.env, stdout=out.fileno(), cwd=str(self.cwd))
        self.servers.append(server)

        def up() -> None:
            assert server.poll() is None, f"{block} exited ({server.returncode}):\n{log.read_text()[-4000:]}"
            http_ok(ready_url)()

        wait_for(up, service=f"the server of {block}", address=ready_url, timeout=block.timeout, hint=f"log: {log}")

    def close(self) -> None:
        """Stop the servers that blocks started, by process group."""
        for server in self.servers:
            stop_group(server.pid, grace=15, leader=server)
        self.servers.clear()
