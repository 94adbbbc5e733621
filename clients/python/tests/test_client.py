"""prism-client against a live federation.

The Rust test tests/tests/e2e/python_client.rs starts the federation and sets PRISM_URL,
PRISM_TOKEN (an analyst), PRISM_NODES (each organization's node admin URL and token, to act as
its data owner) and PRISM_EXAMPLE (docs/examples/analyst.py).
"""

import json
import math
import os
import subprocess
import sys
import time
from typing import Tuple

import pandas as pd
import pytest
import requests

from prism_client import PrismClient, PrismError, Result

DATASET = "hospital-a.patients"
NODES = json.loads(os.environ["PRISM_NODES"])


@pytest.fixture(scope="module")
def prism() -> PrismClient:
    return PrismClient(os.environ["PRISM_URL"], os.environ["PRISM_TOKEN"])


def owner(org: str, method: str, path: str, body=None):
    """The data owner of `org`, on its node's admin API."""
    n = NODES[org]
    r = requests.request(method, n["url"] + path, json=body,
                         headers={"Authorization": "Bearer " + n["token"]}, timeout=30)
    return r.status_code, (r.json() if r.content else None)


def attest(org: str, room_id: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        status, body = owner(org, "POST", f"/v1/invitations/{room_id}/attest", {})
        if status == 200:
            return
        assert time.monotonic() < deadline, f"{org} could not attest {room_id}: {status} {body}"
        time.sleep(0.2)


def remaining(prism: PrismClient, dataset: str) -> float:
    return float(prism.dataset(dataset)["budget"]["remaining_epsilon"])


def wait_remaining(prism: PrismClient, dataset: str, expected: float) -> None:
    deadline = time.monotonic() + 20
    while abs(remaining(prism, dataset) - expected) > 1e-6:
        assert time.monotonic() < deadline, f"{dataset}: ε left {remaining(prism, dataset)}, expected {expected}"
        time.sleep(0.1)


def interval_in_frame(result: Result) -> Tuple[str, float]:
    """The released column and its 95 % half-width, checked against the frame's `_ci95`,
    `_low` and `_high` columns."""
    col = result.record["result"]["columns"][0]
    hw = result.record["ci95_half_width"][0]
    assert hw > 0
    df = result.frame
    assert list(df.columns) == [col, f"{col}_ci95", f"{col}_low", f"{col}_high"]
    assert df[col][0] == result.record["result"]["rows"][0][0]
    assert df[f"{col}_ci95"][0] == pytest.approx(hw)
    assert df[f"{col}_high"][0] - df[f"{col}_low"][0] == pytest.approx(2 * hw)
    return col, float(hw)


def test_the_catalog_lists_every_dataset_with_its_budget(prism: PrismClient) -> None:
    assert prism.me()["role"] == "analyst"
    catalog = prism.datasets()
    assert sorted(catalog["id"]) == ["hospital-a.patients", "hospital-b.patients", "hospital-c.patients"]
    row = catalog.set_index("id").loc[DATASET]
    budget = prism.dataset(DATASET)["budget"]
    assert row["remaining_epsilon"] == pytest.approx(budget["remaining_epsilon"])
    assert row["total_epsilon"] == pytest.approx(budget["total_epsilon"]) and row["total_epsilon"] > 0


def test_a_dp_run_gives_a_frame_with_its_interval_and_charges_the_budget(prism: PrismClient) -> None:
    sql = "SELECT COUNT(*) FROM patients WHERE age >= 50"
    v = prism.validate(DATASET, sql, epsilon=0.5)
    assert v.valid, v.errors
    assert v.estimated_epsilon == pytest.approx(0.5)
    before = remaining(prism, DATASET)
    result = prism.run(DATASET, sql, epsilon=0.5)
    col, hw = interval_in_frame(result)
    stats = [s for s in result.proof["release"]["statistics"] if not s["hidden"]]
    assert stats[0]["ci95_half_width"] == pytest.approx(hw)
    assert prism.proof(result.record["id"]) == result.proof
    wait_remaining(prism, DATASET, before - result.epsilon_consumed)


@pytest.fixture(scope="module")
def he_keys(prism: PrismClient) -> Result:
    """The federation's first he_backend run: the coordinator generates the key set and
    installs it on the holding node. Done once, followed for as long as that takes on a loaded
    machine, so that the HE test's own run is the evaluation alone."""
    first = prism.run(DATASET, "SELECT COUNT(*) FROM patients", backend="he_backend", epsilon=0.5, timeout=900)
    assert first.status == "completed", first.record
    assert first.proof["key_set"]["generated_this_run"], first.proof["key_set"]
    assert first.proof["key_transfer"] is not None
    return first


def test_an_he_run_gives_a_frame_with_its_interval_its_release_mode_and_its_proof(
        prism: PrismClient, he_keys: Result) -> None:
    sql = "SELECT COUNT(*) FROM patients WHERE diagnosis = 'diabetes'"
    v = prism.validate(DATASET, sql, backend="he_backend", epsilon=0.5)
    assert v.valid, v.errors
    assert v.release_mode == "dp"
    before = remaining(prism, DATASET)
    result = prism.run(DATASET, sql, backend="he_backend", epsilon=0.5)
    assert result.status == "completed"
    # Released under DP by the node (the default mode), with the interval in the frame.
    assert result.release_mode == "dp"
    col, hw = interval_in_frame(result)
    # The proof: one encrypted constant, the key set generated and installed by the first run.
    proof = prism.proof(result.record["id"])
    assert proof == result.proof
    assert proof["backend"] == "he_backend" and proof["homomorphic_evaluation"]
    assert proof["encrypted_constants"] == 1
    assert proof["key_id"] == he_keys.proof["key_id"]
    assert not proof["key_set"]["generated_this_run"] and proof["key_transfer"] is None
    assert proof["release"]["epsilon"] == pytest.approx(result.epsilon_consumed) and result.epsilon_consumed > 0
    assert proof["release"]["ci95_half_width"][col] == pytest.approx(hw)
    wait_remaining(prism, DATASET, before - result.epsilon_consumed)


def test_a_query_over_the_published_budget_is_refused_naming_whom_to_ask(prism: PrismClient) -> None:
    spent = float(prism.dataset(DATASET)["budget"]["spent_epsilon"])
    status, body = owner("hospital-a", "PUT", "/v1/datasets/patients/budget", {"epsilon": spent + 0.1, "delta": 1e-5})
    assert status == 200, body
    try:
        wait_remaining(prism, DATASET, 0.1)
        v = prism.validate(DATASET, "SELECT COUNT(*) FROM patients", epsilon=0.5)
        assert not v.valid
        assert v.errors[0]["code"] == "budget_exhausted"
        assert "organization hospital-a" in v.errors[0]["message"]
        # Run anyway: the node refuses, and the run's message names the organization too.
        with pytest.raises(PrismError) as refused:
            prism.run(DATASET, "SELECT COUNT(*) FROM patients", epsilon=0.5)
        assert refused.value.code == "budget_exhausted"
        assert "hospital-a" in refused.value.message
    finally:
        status, body = owner("hospital-a", "PUT", "/v1/datasets/patients/budget", {"epsilon": 10.0, "delta": 1e-5})
        assert status == 200, body


def test_the_enclave_backend_is_refused_with_its_code(prism: PrismClient) -> None:
    with pytest.raises(PrismError) as refused:
        prism.run(DATASET, "SELECT COUNT(*) FROM patients", backend="enclave_backend")
    assert refused.value.code == "backend_not_implemented"
    assert refused.value.status == 501


def test_a_data_room_is_created_followed_and_executed(prism: PrismClient) -> None:
    room = prism.create_room("Diabetes in A and B", "SELECT COUNT(*) FROM patients WHERE diagnosis = 'diabetes'",
                             ["hospital-a", "hospital-b"], epsilon=0.5, participant_epsilon={"hospital-b": 0.4})
    assert room["status"] == "pending"
    assert sorted(room["waiting_for"]) == ["hospital-a", "hospital-b"]
    for org in ("hospital-a", "hospital-b"):
        attest(org, room["id"])
    ready = prism.follow_room(room["id"], timeout=30)
    assert ready["status"] == "ready", ready
    result = prism.execute_room(room["id"], timeout=120)
    col = result.record["result"]["columns"][0]
    assert result.frame[f"{col}_ci95"][0] == pytest.approx(result.record["ci95_half_width"][0])
    parties = {p["organization"]: p["epsilon"] for p in result.proof["dp"]["parties"]}
    assert parties == {"hospital-a": 0.5, "hospital-b": 0.4}


def test_a_declined_room_ends_declined_with_the_reason(prism: PrismClient) -> None:
    room = prism.create_room("Declined", "SELECT COUNT(*) FROM patients", ["hospital-a", "hospital-c"], epsilon=0.5)
    deadline = time.monotonic() + 30
    while owner("hospital-c", "POST", f"/v1/invitations/{room['id']}/decline", {"reason": "not this quarter"})[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    done = prism.follow_room(room["id"], until=("declined",), timeout=30)
    assert "hospital-c" in done["error_message"] and "not this quarter" in done["error_message"]
    with pytest.raises(PrismError) as refused:
        prism.execute_room(room["id"])
    assert refused.value.code == "room_not_ready"


def test_an_mpc_query_opens_a_room_and_answers_once_everyone_attested(prism: PrismClient) -> None:
    run = prism.submit(DATASET, "SELECT COUNT(*) FROM patients WHERE age < 40", backend="mpc_backend", epsilon=0.5)
    room = prism.room_of(run["id"])
    assert sorted(room["waiting_for"]) == ["hospital-a", "hospital-b", "hospital-c"]
    for org in room["waiting_for"]:
        attest(org, room["id"])
    result = prism.wait_run(run["id"], timeout=180)
    assert result.status == "completed"
    col = result.record["result"]["columns"][0]
    assert not math.isnan(result.frame[f"{col}_ci95"][0])
    assert isinstance(result.frame, pd.DataFrame)


def test_the_documented_example_runs(prism: PrismClient) -> None:
    out = subprocess.run([sys.executable, os.environ["PRISM_EXAMPLE"]], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PRISM_URL": prism.url, "PRISM_TOKEN": os.environ["PRISM_TOKEN"]})
    assert out.returncode == 0, out.stderr
    assert "signed in as" in out.stdout and "(95 %)" in out.stdout and "left" in out.stdout, out.stdout
