"""The Prism coordinator's analyst API (``/api/v1``) from Python.

Every call is one HTTP request with the bearer token; an error answer raises
:class:`PrismError` carrying the API's stable ``code`` and its ``message`` word for word.
Released tables come back as pandas DataFrames; for each column with a 95 % confidence
interval (DP noise, under any backend) the frame gains ``<column>_ci95`` (the half-width),
``<column>_low`` and ``<column>_high``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import pandas as pd
import requests

JSON = Dict[str, Any]

#: Run states that no longer change.
RUN_FINAL = ("completed", "failed")
#: Room states that no longer change without someone acting.
ROOM_FINAL = ("completed", "failed", "declined", "cancelled")


class PrismError(Exception):
    """An error answer of the API: HTTP status, stable code, message and details."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


@dataclass(frozen=True)
class Validation:
    """What ``POST /queries/validate`` says about a query."""

    valid: bool
    errors: List[JSON]
    estimated_epsilon: Optional[float]
    estimated_delta: Optional[float]
    release_mode: Optional[str]
    budget: Optional[JSON]
    raw: JSON = field(repr=False)


@dataclass(frozen=True)
class Result:
    """A finished run or data room: its record, the released table and its proof."""

    record: JSON = field(repr=False)
    frame: pd.DataFrame
    proof: JSON = field(repr=False)

    @property
    def status(self) -> str:
        return str(self.record.get("status"))

    @property
    def epsilon_consumed(self) -> float:
        return float(self.record.get("epsilon_consumed") or 0.0)

    @property
    def release_mode(self) -> Optional[str]:
        """How the holding node released the answer: ``dp`` (noise it added and charged) or
        ``exact`` (the data owner's opt-in), as the proof records it."""
        release = self.proof.get("release") if isinstance(self.proof, dict) else None
        if isinstance(release, str):  # a data room's proof: the manifest's mode
            return release
        if isinstance(release, dict) and release.get("mode"):
            return str(release["mode"])
        # dp_sandbox's proof lists its statistics without a mode: it is always dp.
        return "dp" if isinstance(release, dict) and "statistics" in release else None


def frame(result: Optional[Mapping[str, Any]], half_widths: Optional[Sequence[Any]] = None) -> pd.DataFrame:
    """A released table as a DataFrame, with ``_ci95``, ``_low`` and ``_high`` columns for
    every column that has a 95 % half-width."""
    if not result:
        return pd.DataFrame()
    columns = list(result.get("columns") or [])
    df = pd.DataFrame(list(result.get("rows") or []), columns=columns)
    for name, hw in zip(columns, half_widths or []):
        if isinstance(hw, (int, float)) and not isinstance(hw, bool):
            values = pd.to_numeric(df[name], errors="coerce")
            df[f"{name}_ci95"] = float(hw)
            df[f"{name}_low"] = values - float(hw)
            df[f"{name}_high"] = values + float(hw)
    return df


class PrismClient:
    """A client of one coordinator, as one user (its API token).

    ``timeout`` bounds each HTTP request; ``wait`` is how long :meth:`run`, :meth:`wait_run`,
    :meth:`follow_room` and :meth:`execute_room` follow a run or room unless the call says
    otherwise (a federation's first ``he_backend`` run also generates and installs the key
    set, which takes longer on a loaded machine).
    """

    def __init__(self, url: str, token: str, timeout: float = 60.0,
                 session: Optional[requests.Session] = None, wait: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.wait = wait
        self._http = session or requests.Session()
        self._http.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json"})

    @classmethod
    def from_env(cls) -> "PrismClient":
        """A client from ``PRISM_URL`` and ``PRISM_TOKEN``."""
        try:
            return cls(os.environ["PRISM_URL"], os.environ["PRISM_TOKEN"])
        except KeyError as e:
            raise RuntimeError(f"set {e.args[0]} (the coordinator's URL and your API token)") from None

    # ---------- transport ----------

    def _call(self, method: str, path: str, body: Optional[JSON] = None,
              params: Optional[JSON] = None, timeout: Optional[float] = None) -> Any:
        resp = self._http.request(method, self.url + "/api/v1" + path, json=body, params=params,
                                  timeout=timeout or self.timeout)
        try:
            data = resp.json() if resp.content else None
        except ValueError:
            data = None
        if resp.ok:
            return data
        err = (data or {}).get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            raise PrismError(resp.status_code, str(err.get("code")), str(err.get("message")), err.get("details"))
        raise PrismError(resp.status_code, f"http_{resp.status_code}", resp.text[:300])

    # ---------- catalog ----------

    def me(self) -> JSON:
        """The signed-in user: name, role, organization."""
        return self._call("GET", "/me")

    def backends(self) -> List[JSON]:
        """The backend registry with each backend's status."""
        return self._call("GET", "/backends")

    def datasets(self) -> pd.DataFrame:
        """The catalog, one row per dataset, with the budget its owner publishes
        (``remaining_epsilon`` etc. are NaN where the owner keeps it private)."""
        rows = []
        for d in self._call("GET", "/datasets"):
            b = d.get("budget") or {}
            rows.append({
                "id": d["id"], "organization": d["organization"], "name": d["name"],
                "row_count": d["row_count"], "online": d.get("online"),
                "total_epsilon": b.get("total_epsilon"), "spent_epsilon": b.get("spent_epsilon"),
                "remaining_epsilon": b.get("remaining_epsilon"), "total_delta": b.get("total_delta"),
                "remaining_delta": b.get("remaining_delta"),
            })
        return pd.DataFrame(rows, columns=["id", "organization", "name", "row_count", "online", "total_epsilon",
                                           "spent_epsilon", "remaining_epsilon", "total_delta", "remaining_delta"])

    def dataset(self, dataset_id: str) -> JSON:
        """One catalog entry: columns (bounds, allowed values), row count, budget."""
        return self._call("GET", f"/datasets/{dataset_id}")

    # ---------- queries ----------

    @staticmethod
    def _query(dataset_id: str, sql: str, backend: str, epsilon: Optional[float],
               delta: Optional[float]) -> JSON:
        body: JSON = {"dataset_id": dataset_id, "sql": sql, "backend": backend}
        if epsilon is not None:
            body["epsilon"] = epsilon
        if delta is not None:
            body["delta"] = delta
        return body

    def validate(self, dataset_id: str, sql: str, backend: str = "dp_sandbox",
                 epsilon: Optional[float] = None, delta: Optional[float] = None) -> Validation:
        """Checks a query without running it: the ε the holding node would charge, or why
        it would be refused (including a budget that would not cover it)."""
        v = self._call("POST", "/queries/validate", self._query(dataset_id, sql, backend, epsilon, delta))
        return Validation(valid=bool(v.get("valid")), errors=list(v.get("errors") or []),
                          estimated_epsilon=v.get("estimated_epsilon"), estimated_delta=v.get("estimated_delta"),
                          release_mode=v.get("release_mode"), budget=v.get("budget"), raw=v)

    def submit(self, dataset_id: str, sql: str, backend: str = "dp_sandbox",
               epsilon: Optional[float] = None, delta: Optional[float] = None) -> JSON:
        """Saves and starts a query; returns the run as first recorded (``pending``)."""
        q = self._call("POST", "/queries", self._query(dataset_id, sql, backend, epsilon, delta))
        return self._call("POST", f"/queries/{q['id']}/execute", {})

    def run_record(self, run_id: str) -> JSON:
        """A run as the API shows it."""
        return self._call("GET", f"/runs/{run_id}")

    def runs(self) -> List[JSON]:
        """The caller's runs, newest first."""
        return self._call("GET", "/runs")

    def wait_run(self, run_id: str, timeout: Optional[float] = None, poll: float = 0.5) -> Result:
        """Waits until a run is completed or failed (at most ``timeout`` seconds, by default
        the client's ``wait``); a failed run raises :class:`PrismError` with the run's error
        code and message."""
        timeout = self.wait if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            r = self.run_record(run_id)
            if r.get("status") in RUN_FINAL:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} is still {r.get('status')} after {timeout} s")
            time.sleep(poll)
        if r["status"] == "failed":
            raise PrismError(422, str(r.get("error_code")), str(r.get("error_message")), r)
        return Result(record=r, frame=frame(r.get("result"), r.get("ci95_half_width")),
                      proof=r.get("proof_artifacts") or {})

    def run(self, dataset_id: str, sql: str, backend: str = "dp_sandbox",
            epsilon: Optional[float] = None, delta: Optional[float] = None,
            timeout: Optional[float] = None) -> Result:
        """Runs a query on any backend and waits for its answer. An ``mpc_backend`` query opens
        a data room that runs once every participant has attested (see :meth:`room_of`)."""
        run = self.submit(dataset_id, sql, backend, epsilon, delta)
        return self.wait_run(run["id"], timeout=timeout)

    def room_of(self, run_id: str, timeout: float = 30.0) -> JSON:
        """The data room an ``mpc_backend`` run opened (with ``waiting_for``: who must attest)."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.run_record(run_id)
            room_id = (r.get("proof_artifacts") or {}).get("room_id")
            if room_id:
                try:
                    return self.room(room_id)
                except PrismError as e:
                    # The run names its room a moment before the room is stored.
                    if e.code != "unknown_room" or time.monotonic() > deadline:
                        raise
            if r.get("status") in RUN_FINAL or time.monotonic() > deadline:
                raise PrismError(409, "no_room", f"run {run_id} opened no data room ({r.get('status')})", r)
            time.sleep(0.2)

    def proof(self, run_id: str) -> JSON:
        """A run's proof artifacts: mechanism, ε, δ, noise scale and interval per statistic."""
        return self.run_record(run_id).get("proof_artifacts") or {}

    # ---------- data rooms ----------

    def create_room(self, name: str, query_text: str, participants: Iterable[str],
                    epsilon: Optional[float] = None,
                    participant_epsilon: Optional[Mapping[str, float]] = None,
                    group_keys: Optional[Mapping[str, Sequence[str]]] = None,
                    description: str = "", release: Optional[str] = None) -> JSON:
        """Creates a data room; invitations go to the participants' nodes."""
        body: JSON = {"name": name, "description": description, "query_text": query_text,
                      "backend": "mpc_backend", "participants": list(participants)}
        if epsilon is not None:
            body["epsilon"] = epsilon
        if participant_epsilon:
            body["participant_epsilon"] = dict(participant_epsilon)
        if group_keys:
            body["group_keys"] = {k: list(v) for k, v in group_keys.items()}
        if release is not None:
            body["release"] = release
        return self._call("POST", "/data_rooms", body)

    def room(self, room_id: str) -> JSON:
        """A room with each participant's standing and ``waiting_for``."""
        return self._call("GET", f"/data_rooms/{room_id}")

    def rooms(self) -> List[JSON]:
        """The rooms the caller may see."""
        return self._call("GET", "/data_rooms")

    def follow_room(self, room_id: str, until: Sequence[str] = ("ready",) + ROOM_FINAL,
                    timeout: Optional[float] = None, poll: float = 0.5) -> JSON:
        """Polls a room until its status is one of ``until`` (at most ``timeout`` seconds, by
        default the client's ``wait``); returns it."""
        timeout = self.wait if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            r = self.room(room_id)
            if r.get("status") in until:
                return r
            if time.monotonic() > deadline:
                raise TimeoutError(f"room {room_id} is still {r.get('status')}, waiting for {r.get('waiting_for')}")
            time.sleep(poll)

    def execute_room(self, room_id: str, timeout: Optional[float] = None) -> Result:
        """Executes a ready room and waits for its answer; a failed room raises."""
        self._call("POST", f"/data_rooms/{room_id}/execute", {})
        r = self.follow_room(room_id, until=ROOM_FINAL, timeout=timeout)
        if r["status"] != "completed":
            raise PrismError(422, str(r.get("error_code")), str(r.get("error_message")), r)
        return Result(record=r, frame=frame(r.get("result"), r.get("ci95_half_width")),
                      proof=r.get("proof_artifacts") or {})

    def cancel_room(self, room_id: str) -> JSON:
        """Cancels a room before it executes."""
        return self._call("POST", f"/data_rooms/{room_id}/cancel", {})
