"""The environment of (e), KServe's model server: `.venv-kserve`, built on demand by the first run that asks for (e).

KServe cannot share this project's environment: kserve 0.21.0 requires starlette>=1.3.1, MLServer 1.7.1
fastapi<0.116, whose releases require starlette<0.47. So (e) gets a venv of its own, git-ignored, at the
project root:

- kserve and mlflow at the pins below, installed with uv (a dev dependency of this project; ~10 s from its
  cache, ~750 MB on disk). mlflow 3.12.0 declares starlette<1 and cryptography<47, kserve 0.21.0 starlette>=1.3.1
  and cryptography>=50: no release of either fits the other, so uv overrides mlflow's two upper bounds. Only
  the client half of mlflow runs here (registry lookup, artifact download, pyfunc.load_model, predict), which
  uses neither starlette nor cryptography; the benchmark checks (e)'s answers against pyfunc.predict in
  its own process before it times (e).
- numpy and cloudpickle at this environment's versions, which the model was logged with.
- torch is not installed a second time: PyPI's only torch that installs here is the 6.5 GB CUDA build. A .pth
  file appends this environment's site-packages to the end of the venv's sys.path, so torch (and the CUDA
  libraries, sympy, networkx it needs) is imported from here, while every package the venv has (kserve, mlflow,
  numpy, fastapi, starlette, grpcio, protobuf, ...) comes first from the venv. build() checks where each of
  them is imported from.

A stamp file records what the venv was built with; a venv whose stamp does not match (a pin changed, or an
interrupted build) is removed and built again.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tools.benchmark.servers import PROJECT_ROOT

VENV = PROJECT_ROOT / ".venv-kserve"
KSERVE_VERSION = "0.21.0"
REQUIREMENTS = (f"kserve=={KSERVE_VERSION}", "mlflow==3.12.0")
# mlflow 3.12.0's upper bounds, overridden for kserve 0.21.0's lower ones (see the module's docstring).
OVERRIDES = ("starlette>=1.3.1", "cryptography>=50")
# Imported from the venv, never from this environment: what KServe's server and the model loading run on.
OWN = ("kserve", "mlflow", "numpy", "pandas", "fastapi", "starlette", "uvicorn", "grpc", "google.protobuf")
STAMP = "sandbox-kserve-env.json"
PTH = "zz-sandbox-torch.pth"  # sorted last, so its path is the last one added to sys.path


def python() -> Path:
    """The venv's interpreter, building the venv first if it is missing or was built with other pins.

    Raises RuntimeError when the build or its check fails (uv or PyPI unreachable, a package imported from
    the wrong environment).
    """
    wanted = _wanted()
    stamp = VENV / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return VENV / "bin" / "python"
    build(wanted)
    return VENV / "bin" / "python"


def _wanted() -> dict[str, Any]:
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in ("numpy", "cloudpickle")]
    return {
        "requirements": [*REQUIREMENTS, *pins],
        "overrides": list(OVERRIDES),
        "python": sys.version.split()[0],
        "site_packages": str(_torch_site_packages()),
        "torch": importlib.metadata.version("torch"),
    }


def _torch_site_packages() -> Path:
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        raise RuntimeError("torch is not installed in this environment; (e) reuses it")
    return Path(spec.origin).resolve().parents[1]


def _uv() -> str:
    found = Path(sys.executable).with_name("uv")
    uv = str(found) if found.is_file() else shutil.which("uv")
    if uv is None:
        raise RuntimeError("building .venv-kserve needs uv (in this project's dev extra: pip install uv)")
    return uv


def build(wanted: dict[str, Any]) -> None:
    """(Re)build the venv: python -m venv, uv pip install, the .pth to torch, then check where imports come from."""
    print(f"building {VENV} for (e): {' '.join(wanted['requirements'])} ...", flush=True)
    began = time.monotonic()
    shutil.rmtree(VENV, ignore_errors=True)
    # This interpreter's venv module: the venv gets the same Python, which the reused torch was built for.
    _run([sys.executable, "-m", "venv", str(VENV)])
    venv_python = VENV / "bin" / "python"
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as overrides:
        overrides.write("\n".join(OVERRIDES) + "\n")
        overrides.flush()
        install = [_uv(), "pip", "install", "--python", str(venv_python), "--override", overrides.name]
        _run([*install, *wanted["requirements"]])
    site = subprocess.run(
        [str(venv_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / PTH).write_text(f"{wanted['site_packages']}\n")
    check(venv_python, Path(wanted["site_packages"]), wanted["torch"])
    (VENV / STAMP).write_text(json.dumps(wanted, indent=2))
    print(f"built {VENV} in {time.monotonic() - began:.0f} s", flush=True)


def check(venv_python: Path, torch_site: Path, torch_version: str) -> None:
    """Raise RuntimeError unless the venv imports its own packages (OWN) and this environment's torch."""
    probe = (
        "import importlib, json, sys\n"
        f"names = {[*OWN, 'torch']!r}\n"
        "print(json.dumps({n: importlib.import_module(n).__file__ for n in names}))\n"
    )
    done = subprocess.run([str(venv_python), "-c", probe], capture_output=True, text=True, cwd=VENV)
    if done.returncode != 0:
        raise RuntimeError(f"{venv_python} cannot import what (e) needs:\n{done.stderr[-3000:]}")
    found = {name: Path(path).resolve() for name, path in json.loads(done.stdout).items()}
    venv = VENV.resolve()
    wrong = [f"{name} from {path}" for name, path in found.items() if name != "torch" and not path.is_relative_to(venv)]
    if not found["torch"].is_relative_to(torch_site):
        wrong.append(f"torch from {found['torch']}, not {torch_site}")
    if wrong:
        raise RuntimeError(f"{VENV} imports packages from the wrong environment: {', '.join(wrong)}")
    print(f"{VENV}: kserve, mlflow and their dependencies from the venv, torch {torch_version} from {torch_site}")


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")
