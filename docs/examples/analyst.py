"""An analyst's session with the Prism Python client (clients/python).

Run it against a federation, for instance the local one of
`cargo run --release --bin prism-sim -- serve --dir /tmp/prism`, whose federation.json holds the
API URL and an analyst token:

    pip install ./clients/python
    PRISM_URL=$(jq -r .api_url /tmp/prism/federation.json) \
    PRISM_TOKEN=$(jq -r .analyst_token /tmp/prism/federation.json) python docs/examples/analyst.py

It lists the catalog with the budget each data owner publishes, validates a query, runs it
under differential privacy and prints the answer with its 95 % interval and how it was
protected. The test suite runs this file (tests/tests/e2e/python_client.rs).
"""

from prism_client import PrismClient, PrismError

DATASET = "hospital-a.patients"
SQL = "SELECT COUNT(*) FROM patients WHERE age >= 65"


def main() -> None:
    prism = PrismClient.from_env()
    me = prism.me()
    print(f"signed in as {me['name']} ({me['role']})")

    catalog = prism.datasets()
    print(catalog[["id", "row_count", "remaining_epsilon", "total_epsilon"]].to_string(index=False))

    check = prism.validate(DATASET, SQL, epsilon=0.5)
    if not check.valid:
        # e.g. the budget would not cover it: the message names the organization to ask.
        raise SystemExit(check.errors[0]["message"])
    print(f"valid; the holding node will charge ε = {check.estimated_epsilon}")

    try:
        result = prism.run(DATASET, SQL, epsilon=0.5)
    except PrismError as e:
        raise SystemExit(f"refused ({e.code}): {e.message}")
    print(result.frame.to_string(index=False))
    release = result.proof["release"]
    print(f"mechanism {release['mechanism']}, ε spent {release['epsilon']}, δ spent {release['delta']}")
    for stat in release["statistics"]:
        if not stat["hidden"]:
            print(f"  {stat['aggregate']}: noise scale {stat['noise_scale']}, ± {stat['ci95_half_width']} (95 %)")
    left = prism.dataset(DATASET)["budget"]
    if left:
        print(f"{DATASET}: ε {left['remaining_epsilon']} of {left['total_epsilon']} left")


if __name__ == "__main__":
    main()
