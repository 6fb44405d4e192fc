"""Registry lifecycle commands, against a tracking-server URL or a sqlite:/// URI.

    python -m training.registry_cli list
    python -m training.registry_cli promote 3 --to staging
    python -m training.registry_cli promote 3 --to production   # archives the old production version
    python -m training.registry_cli rollback                    # production back to the version it replaced

MLFLOW_TRACKING_URI and MODEL_NAME are read from the environment; --tracking-uri and --model-name
override them.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from services.common.waiting import DependencyUnavailable
from training import registry
from training.settings import RegistrySettings
from training.tracking import connect


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.registry_cli",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tracking-uri", help="overrides MLFLOW_TRACKING_URI")
    parser.add_argument("--model-name", help="overrides MODEL_NAME")
    commands = parser.add_subparsers(dest="command", required=True)
    promote = commands.add_parser("promote", help="point an alias (and its stage) at a version")
    promote.add_argument("version", help="a version number, or @alias / stage of an existing version")
    promote.add_argument(
        "--to", required=True, type=str.lower, choices=list(registry.LIFECYCLE_ALIASES), help="target alias"
    )
    commands.add_parser("rollback", help="return @production to the previous production version")
    commands.add_parser("list", help="a lineage table of every version")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {"tracking_uri": args.tracking_uri, "model_name": args.model_name}
    try:
        settings = RegistrySettings(**{k: v for k, v in overrides.items() if v is not None})
        client = connect(settings.tracking_uri, wait_seconds=settings.tracking_wait_seconds)
        name = settings.model_name
        if args.command == "promote":
            version = registry.resolve_version(client, name, args.version)
            print(registry.promote(client, name, version, args.to).describe())
        elif args.command == "rollback":
            print(registry.rollback(client, name).describe())
        else:
            rows = registry.lineage(client, name)
            if not rows:
                print(f"{name} has no versions yet at {settings.tracking_uri}", file=sys.stderr)
                return 1
            print(registry.format_lineage(rows))
    except (ValidationError, ValueError) as err:
        print(f"invalid input: {err}", file=sys.stderr)
        return 2
    except (registry.RegistryError, DependencyUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
