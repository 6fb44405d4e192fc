"""The traffic split of the router (services/router, Envoy), read and changed through Envoy's admin API.

The router sends each request to production or to the candidate, and may mirror production's requests to
the candidate, as two numbers in Envoy's runtime: `POST /runtime_modify` on the admin port changes them in
place, without dropping a connection: requests sent after the admin API answered see the new split
(tests/e2e/test_router.py). Envoy keeps such changes in memory only, so a restarted router sends all traffic
to production again: the safe state.

Both numbers are stored as fractions out of 10,000 (basis points), so a split has a precision of 0.01
percentage point (a 0.5 % canary is possible). Envoy decides both for one request with the same random
number: the candidate takes the draws below `candidate_percent`, and a mirror policy keyed on the same draw
would only ever mirror draws below its own threshold. So that `shadow_percent` means what it says, the
percent of production's requests that are mirrored, the mirror's threshold is stored above the candidate's
share: candidate + shadow x (100 - candidate) / 100. `Split` is always the meaning, never the stored value;
with the candidate near 100 %, the shadow's share of the little traffic left to production is coarser.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

CANDIDATE_PERCENT_KEY = "sandbox.router.candidate_percent"
"""Runtime key: the share of requests routed to the candidate instead of production."""
SHADOW_PERCENT_KEY = "sandbox.router.shadow_percent"
"""Runtime key: the mirror's threshold on the per-request random draw (see the module's docstring)."""
BACKEND_HEADER = "x-sandbox-backend"
"""Response header (gRPC: initial metadata) that names the backend that answered: production or candidate."""
BASIS_POINTS = 10_000
"""The denominator of both runtime values (Envoy's TEN_THOUSAND)."""
# Envoy's names of FractionalPercent's denominators. A runtime value that is a bare integer is a percent.
_DENOMINATORS = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}


LEASE_KEY = "sandbox.router.lease"
"""Runtime key: `OWNER@EXPIRES`, the rollout controller that may change the split, and until when (Unix
seconds). The router's watchdog returns all traffic to production when no live lease covers a split."""


class RouterUnavailable(RuntimeError):
    """The router's admin API did not answer, or did not answer 200; the message names its URL."""


class RouterBusy(RuntimeError):
    """Another rollout holds the router's lease; the message names it and when the lease expires."""


@dataclass(frozen=True)
class Lease:
    """Who may change the split (`owner`), until `expires` (Unix time, seconds)."""

    owner: str
    expires: float

    def live(self, now: float) -> bool:
        """Whether the lease still holds at `now` (Unix time, seconds)."""
        return now < self.expires

    @classmethod
    def parse(cls, value: str) -> Lease | None:
        """The lease in a runtime value `OWNER@EXPIRES`; None for an empty or malformed value."""
        owner, _, expires = value.strip().rpartition("@")
        try:
            return cls(owner, float(expires)) if owner else None
        except ValueError:
            return None


@dataclass(frozen=True)
class Split:
    """How the router divides traffic, in percent (0 to 100, to 0.01).

    candidate_percent: the share of all requests that the candidate answers.
    shadow_percent: the share of production's requests that are also sent to the candidate, whose answers
    are discarded.
    """

    candidate_percent: float
    shadow_percent: float


def runtime_value(basis_points: int) -> str:
    """The runtime value of a fraction out of 10,000: a FractionalPercent as JSON, which Envoy parses."""
    return json.dumps({"numerator": basis_points, "denominator": "TEN_THOUSAND"}, separators=(",", ":"))


def parse_runtime_value(key: str, value: str) -> int:
    """A runtime value in basis points: a bare integer is a percent (Envoy's rule), else a FractionalPercent.

    ValueError, naming the key, for anything else.
    """
    text = value.strip()
    if text.isdigit():
        return min(int(text), 100) * 100
    try:
        fraction = json.loads(text)
        numerator, denominator = (
            int(fraction.get("numerator", 0)),
            _DENOMINATORS[fraction.get("denominator", "HUNDRED")],
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        raise ValueError(f"runtime key {key} holds {value!r}, neither a percent nor a FractionalPercent") from None
    return min(round(numerator * BASIS_POINTS / denominator), BASIS_POINTS)


def _check_percent(name: str, value: float) -> int:
    if not (isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= 100):
        raise ValueError(f"{name} must be a number from 0 to 100 (percent), got {value!r}")
    return round(value * 100)


class RouterAdmin:
    """The router's split, through Envoy's admin API (by default http://127.0.0.1:8079)."""

    def __init__(self, admin_url: str, *, timeout: float = 5.0) -> None:
        """`admin_url`: Envoy's admin address, http://host:port; `timeout`: seconds per HTTP request."""
        self.admin_url = admin_url.rstrip("/")
        self.timeout = timeout

    def _request(self, method: str, path: str, params: dict[str, str] | None = None) -> str:
        # The standard library's client, not requests: the router's watchdog process imports this module for
        # its whole life, and requests doubled its memory (18 against 10 MiB of PSS, measured).
        url = f"{self.admin_url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=self.timeout) as response:
                return str(response.read().decode("utf-8", errors="replace"))
        except urllib.error.HTTPError as err:
            body = err.read().decode("utf-8", errors="replace").strip()[:300]
            raise RouterUnavailable(f"{method} {url} answered {err.code}: {body}") from None
        except (OSError, ValueError) as err:  # URLError, refused, timed out, a malformed admin URL
            raise RouterUnavailable(f"the router's admin API at {self.admin_url} did not answer: {err}") from None

    def set_split(self, candidate_percent: float, shadow_percent: float = 0.0) -> None:
        """Route `candidate_percent` of requests to the candidate and mirror `shadow_percent` of the rest to it.

        Both are percents from 0 to 100, rounded to 0.01; both change in one admin request, so no request sees
        one without the other. Open connections stay open. Envoy's admin thread posts the change to each worker
        thread's event loop (its thread-local storage: "Envoy threading model", blog.envoyproxy.io), so a request
        waiting in the same turn of a worker's loop may still see the old split; tests/e2e/test_router.py saw
        none sent after this returned (26 runs beside six busy loops). Requests in flight keep their route.
        ValueError for a percent out of range; RouterUnavailable when the admin API cannot be reached or
        refuses.
        """
        candidate = _check_percent("candidate_percent", candidate_percent)
        shadow = _check_percent("shadow_percent", shadow_percent)
        mirror_threshold = candidate + round(shadow * (BASIS_POINTS - candidate) / BASIS_POINTS)
        self._request(
            "POST",
            "/runtime_modify",
            {CANDIDATE_PERCENT_KEY: runtime_value(candidate), SHADOW_PERCENT_KEY: runtime_value(mirror_threshold)},
        )

    def split(self) -> Split:
        """The split in force now, read from GET /runtime.

        When all traffic goes to the candidate, nothing reaches production and shadow_percent reads 0.
        RouterUnavailable when the admin API cannot be reached or refuses; ValueError when a runtime key holds
        a value that Envoy would not read as a fraction.
        """
        entries = self._entries()

        def basis_points(key: str) -> int:
            entry = entries.get(key)
            return parse_runtime_value(key, entry["final_value"]) if entry else 0

        candidate, mirror_threshold = basis_points(CANDIDATE_PERCENT_KEY), basis_points(SHADOW_PERCENT_KEY)
        if candidate >= BASIS_POINTS:
            return Split(candidate_percent=100.0, shadow_percent=0.0)
        shadow = max(mirror_threshold - candidate, 0) * BASIS_POINTS / (BASIS_POINTS - candidate)
        return Split(candidate_percent=candidate / 100, shadow_percent=round(shadow) / 100)

    def reset(self) -> None:
        """All traffic to production, nothing mirrored: set_split(0, 0)."""
        self.set_split(0.0, 0.0)

    def _entries(self) -> dict[str, dict[str, str]]:
        return dict(json.loads(self._request("GET", "/runtime", {"format": "json"})).get("entries", {}))

    def lease(self) -> Lease | None:
        """The lease recorded in the router, live or expired; None when there is none. RouterUnavailable."""
        entry = self._entries().get(LEASE_KEY)
        return Lease.parse(entry["final_value"]) if entry else None

    def acquire_lease(self, owner: str, seconds: float) -> None:
        """Take the lease for `seconds` (renew_lease extends it). RouterBusy when another owner's lease is live.

        Envoy's admin API has no compare-and-set: two controllers starting within the same few milliseconds
        could both read "free". The lease is read back after it is written, which narrows that to a race
        between two writes; a rollout is started by a person or a pipeline, not by many at once.
        """
        held = self.lease()
        if held is not None and held.owner != owner and held.live(time.time()):
            raise RouterBusy(
                f"another rollout ({held.owner}) holds the router at {self.admin_url} for "
                f"{held.expires - time.time():.0f} s more; wait for it to end (or to expire if it was killed)"
            )
        self.renew_lease(owner, seconds)
        held = self.lease()
        if held is None or held.owner != owner:
            raise RouterBusy(f"another rollout ({held.owner if held else '?'}) took the router at the same time")

    def renew_lease(self, owner: str, seconds: float) -> None:
        """Hold the lease for `seconds` more from now. RouterUnavailable."""
        self._request("POST", "/runtime_modify", {LEASE_KEY: f"{owner}@{time.time() + seconds:.3f}"})

    def release_lease(self, owner: str) -> None:
        """Give the lease up if `owner` holds it (an expired lease in the past). RouterUnavailable."""
        held = self.lease()
        if held is not None and held.owner == owner:
            self._request("POST", "/runtime_modify", {LEASE_KEY: f"{owner}@0"})
