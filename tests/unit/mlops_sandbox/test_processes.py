"""Process groups: a supervisor's SIGTERM stops grandchildren that ignore their parent's death."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from mlops_sandbox.processes import group_alive, start_group, stop_group, supervise_command
from tests.support import assert_sigterm_stops_supervised_group

# A parent that starts a child and does not pass signals on, like `mlflow models serve` with MLServer.
PARENT = textwrap.dedent("""
    import subprocess, sys, time
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    time.sleep(600)
""")
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


def test_stop_group_takes_down_grandchildren() -> None:
    proc = start_group([sys.executable, "-c", PARENT])
    time.sleep(1.0)
    assert stop_group(proc.pid, grace=10, leader=proc) is False
    assert not group_alive(proc.pid)


def test_stop_group_kills_what_ignores_sigterm_after_the_grace_period() -> None:
    proc = start_group([sys.executable, "-c", STUBBORN])
    time.sleep(0.5)
    began = time.monotonic()
    assert stop_group(proc.pid, grace=1.0, leader=proc) is True
    assert 1.0 <= time.monotonic() - began < 10
    assert proc.returncode == -signal.SIGKILL


def test_supervised_entrypoint_stops_its_whole_group_on_sigterm() -> None:
    supervisor = textwrap.dedent(f"""
        import sys
        from mlops_sandbox.processes import run_supervised
        sys.exit(run_supervised([sys.executable, "-c", {PARENT!r}], env={{}}, grace=5, name="test"))
    """)
    with subprocess.Popen([sys.executable, "-c", supervisor], stdout=subprocess.PIPE, text=True) as proc:
        time.sleep(1.5)
        assert_sigterm_stops_supervised_group(proc, timeout=20)
        assert proc.stdout is not None
        assert "stopping process group" in proc.stdout.read()


def test_the_supervisor_command_stops_its_group_and_removes_its_folder(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir()
    (private / "config.ini").write_text("secret")
    argv = supervise_command([sys.executable, "-c", PARENT], grace=5, name="test", remove=str(private))
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
        time.sleep(1.5)
        assert_sigterm_stops_supervised_group(proc, timeout=20)
    assert not private.exists()


# A program that forks a child leading its own group (one that does not pass signals on either), then execs into
# the supervisor with --pid, as the serving entrypoint does.
FORK_THEN_SUPERVISE = textwrap.dedent("""
    import os, sys
    from mlops_sandbox.processes import replace_process, supervise_command
    pid = os.fork()
    if pid == 0:
        os.setsid()
        os.execv(sys.executable, [sys.executable, "-c", sys.argv[1]])
    replace_process(supervise_command(None, grace=5, name="test", pid=pid), os.environ)
""")


def test_the_supervisor_adopts_a_forked_child_and_stops_its_group_on_sigterm() -> None:
    argv = [sys.executable, "-c", FORK_THEN_SUPERVISE, PARENT]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
        time.sleep(1.5)
        assert psutil.Process(proc.pid).cmdline()[1:3] == ["-m", "mlops_sandbox.processes"]
        assert_sigterm_stops_supervised_group(proc, timeout=20)
        assert proc.stdout is not None
        assert "stopping process group" in proc.stdout.read()


def test_the_supervisor_exits_with_its_adopted_childs_code() -> None:
    argv = [sys.executable, "-c", FORK_THEN_SUPERVISE, "import sys, time; time.sleep(0.5); sys.exit(7)"]
    assert subprocess.run(argv, timeout=30).returncode == 7


def test_the_supervisor_needs_a_command_or_a_pid() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mlops_sandbox.processes", "--grace", "1", "--name", "x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "give either --pid or a command" in done.stderr
