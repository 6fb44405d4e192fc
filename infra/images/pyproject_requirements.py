"""Print dependency lines of pyproject.toml, so that images install the project's own pins and no copy.

    python3 pyproject_requirements.py pyproject.toml                      # every dependency
    python3 pyproject_requirements.py pyproject.toml mlflow boto3         # only these, as pinned there
    python3 pyproject_requirements.py pyproject.toml --extra local        # an optional-dependency group

The MLflow server image needs MLflow, boto3 and psycopg2 but not torch: it installs a subset of the same
lines. Python 3.11 (tomllib) is enough; nothing else is imported.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import tomllib


def requirement_name(line: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    if not match:
        raise ValueError(f"not a requirement: {line!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def select(pyproject: Path, names: list[str], extra: str | None) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    lines: list[str] = project["optional-dependencies"][extra] if extra else project["dependencies"]
    if not names:
        return list(lines)
    wanted = {requirement_name(name) for name in names}
    chosen = [line for line in lines if requirement_name(line) in wanted]
    missing = wanted - {requirement_name(line) for line in chosen}
    if missing:
        raise SystemExit(f"not in {pyproject}: {', '.join(sorted(missing))}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("names", nargs="*", help="distribution names to keep (default: all)")
    parser.add_argument("--extra", help="read this optional-dependency group instead")
    args = parser.parse_args(argv)
    print("\n".join(select(args.pyproject, args.names, args.extra)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
