"""Registry lifecycle commands, against a tracking-server URL or a sqlite:/// URI.

    python -m infra.ops.registry list
    python -m infra.ops.registry promote 3 --to staging
    python -m infra.ops.registry promote 3 --to production   # archives the old production version
    python -m infra.ops.registry promote 4 --to production --gate   # only if not worse than production
    python -m infra.ops.registry rollback                    # production back to the version it replaced
    python -m infra.ops.registry resolve @production         # the version it points at; exit 1 if none
    python -m infra.ops.registry archive 2                   # stage Archived; @staging moves off it
    python -m infra.ops.registry delete 2                    # its aliases first, then the version

`list` ends with any contradiction it finds in the registry (an alias naming a deleted or archived version,
a stage that disagrees with its alias) and how to fix it; none of this CLI's commands leaves one.
Every command first finishes a promotion or rollback that was cut short between its alias move and its
stage moves (a tracking server that died in between; registry.repair) and says so on stderr. A server that
stops answering during a command is reported in one line, naming what could not be reached.

MLFLOW_TRACKING_URI and SANDBOX_MODEL_NAME are read from the environment; --tracking-uri and --model-name
override them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import ValidationError

from mlops_sandbox import registry
from mlops_sandbox.gate import gate_and_promote
from mlops_sandbox.mnist import MnistUnavailable, load_test_set
from mlops_sandbox.references import LIFECYCLE_ALIASES
from mlops_sandbox.settings import EndpointSettings, MnistSettings, ModelReference, TrackingClientSettings, command_name
from mlops_sandbox.tracking import TrackingServerFailed, connect, diagnose, is_server
from mlops_sandbox.v2 import InferenceError
from mlops_sandbox.waiting import DependencyUnavailable, on_stderr


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=command_name("infra.ops.registry"),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tracking-uri", help="overrides MLFLOW_TRACKING_URI")
    parser.add_argument("--model-name", help="overrides SANDBOX_MODEL_NAME")
    commands = parser.add_subparsers(dest="command", required=True)
    promote = commands.add_parser("promote", help="point an alias (and its stage) at a version")
    promote.add_argument("version", help="a version number, or @alias / stage of an existing version")
    promote.add_argument("--to", required=True, type=str.lower, choices=list(LIFECYCLE_ALIASES), help="target alias")
    promote.add_argument(
        "--gate",
        action="store_true",
        help="stage the version, measure it through the staging endpoint and production through the "
        "production endpoint, and promote only if it is at most --tolerance worse",
    )
    promote.add_argument("--tolerance", type=float, default=0.005, help="allowed accuracy drop (default 0.005)")
    promote.add_argument("-n", "--images", type=int, default=10_000, help="test images for the gate")
    promote.add_argument("--staging-url", help="staging V2 endpoint (default: SANDBOX_STAGING_URL)")
    promote.add_argument("--production-url", help="production V2 endpoint (default: SANDBOX_SERVING_URL)")
    commands.add_parser("rollback", help="return @production to the previous production version")
    commands.add_parser("list", help="a lineage table of every version")
    resolve = commands.add_parser("resolve", help="print the version a reference points at; exit 1 when none does")
    resolve.add_argument("ref", help="a version number, @alias or stage")
    for command, help_ in (
        ("archive", "set a version's stage to Archived; @staging moves to the production version"),
        ("delete", "delete a version, after taking its aliases off it (never @production)"),
    ):
        commands.add_parser(command, help=help_).add_argument("version", help="a version number")
    return parser.parse_args(argv)


def gated_promotion(client: MlflowClient, name: str, version: str, args: argparse.Namespace) -> int:
    if args.to != "production":
        raise ValueError("--gate applies to promotions to production")
    if not 1 <= args.images <= 10_000 or not 0 <= args.tolerance < 1:
        raise ValueError("--images must be 1 to 10000 and --tolerance between 0 and 1")
    endpoints, mnist = EndpointSettings(), MnistSettings()
    images, labels = load_test_set(mnist.root, download=mnist.download, limit=args.images)
    decision = gate_and_promote(
        client,
        name,
        version,
        staging_url=args.staging_url or endpoints.staging_url,
        production_url=args.production_url or endpoints.serving_url,
        images=images.numpy(),
        labels=labels.numpy(),
        tolerance=args.tolerance,
    )
    if decision.promoted:
        print(f"gate passed: {decision.reason}; {name} version {version} is now @production")
        return 0
    print(f"gate rejected version {version}: {decision.reason}; it stays @staging", file=sys.stderr)
    return 1


NEXT_CALL_REPAIRS = (
    "an operation cut short between its alias move and its stage moves is finished by the next command of this "
    "CLI once the server is back (any command, `list` for instance)"
)


def describe(args: argparse.Namespace, name: str) -> str:
    """What a command does, for the error line when the server fails during it."""
    if args.command == "promote":
        return f"promoting {name} {args.version} to @{args.to}"
    if args.command in ("archive", "delete"):
        return f"{'archiving' if args.command == 'archive' else 'deleting'} {name} version {args.version}"
    if args.command == "resolve":
        return f"resolving {args.ref}"
    return f"rolling {name} back" if args.command == "rollback" else f"listing {name}'s versions"


@contextmanager
def failing_server(tracking_uri: str, doing: str) -> Iterator[None]:
    """A request that failed after MLflow's retries becomes one line naming what could not be reached."""
    if not is_server(tracking_uri):
        yield
        return
    try:
        yield
    except (MlflowException, requests.RequestException) as err:
        raise diagnose(tracking_uri, doing, err) from err


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        tracking = TrackingClientSettings(**({"tracking_uri": args.tracking_uri} if args.tracking_uri else {}))
        name = ModelReference(**({"name": args.model_name} if args.model_name else {})).name
        client = connect(tracking, notice=on_stderr)
        doing = describe(args, name)
        with failing_server(tracking.tracking_uri, doing):
            for repaired in registry.repair(client, name):
                print(f"repaired a half-done promotion: {repaired}", file=sys.stderr)
            return run_command(client, name, tracking.tracking_uri, args)
    except (ValidationError, ValueError) as err:
        print(f"invalid input: {err}", file=sys.stderr)
        return 2
    except TrackingServerFailed as err:
        print(f"error: {err}; {NEXT_CALL_REPAIRS}", file=sys.stderr)
        return 1
    except (registry.RegistryError, DependencyUnavailable, InferenceError, MnistUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def no_versions(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """Why `list` has nothing to show: a registered model without versions, or no model of that name at all,
    with the names the registry does hold (a mistyped SANDBOX_MODEL_NAME or --model-name)."""
    try:
        client.get_registered_model(name)
        return f"{name} has no versions yet at {tracking_uri}"
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    names = sorted(model.name for model in client.search_registered_models(max_results=100))
    held = f"it holds {', '.join(names)}" if names else "it holds none yet"
    return f"no registered model is named {name} at {tracking_uri}: {held} (--model-name or SANDBOX_MODEL_NAME)"


def run_command(client: MlflowClient, name: str, tracking_uri: str, args: argparse.Namespace) -> int:
    """Run the parsed command; its exit code."""
    if args.command == "promote" and args.gate:
        return gated_promotion(client, name, registry.resolve_version(client, name, args.version), args)
    if args.command == "promote":
        version = registry.resolve_version(client, name, args.version)
        print(registry.promote(client, name, version, args.to).describe())
    elif args.command == "resolve":
        print(registry.resolve_version(client, name, args.ref))
    elif args.command == "rollback":
        print(registry.rollback(client, name).describe())
    elif args.command == "archive":
        registry.archive(client, name, args.version)
        print(f"{name} version {args.version} is Archived")
    elif args.command == "delete":
        registry.delete_version(client, name, args.version)
        print(f"{name} version {args.version} is deleted")
    else:
        rows = registry.lineage(client, name)
        if not rows:
            print(no_versions(client, name, tracking_uri), file=sys.stderr)
            return 1
        print(registry.format_lineage(rows))
        for problem in registry.inconsistencies(client, name):
            print(f"warning: {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
