//! Sources where the data already is: a PostgreSQL table queried by pushdown (a real server,
//! one million rows) and a CSV file read in place, through a real node in the in-process
//! federation.
//!
//! PostgreSQL: the DP answers have the noise their proofs state around the exact SQL answers;
//! only aggregate statements reach the server; a filter value that looks like SQL is bound as
//! a parameter; a dropped table or a stopped server fails the query with an error naming the
//! source and charges nothing; HE is refused with its reason; a declared column the table
//! lacks is refused at registration. CSV: registered, refreshed when the file changes, and a
//! removed file keeps the previous data with a clear error. Parquet, the same ([`parquet`]).

mod columnar;
mod parquet;

use std::time::{Duration, Instant};

use prism_tests::{Api, Federation, FederationSpec};
use serde_json::{Value, json};

use crate::pg::Pg;

const ORG: &str = "hospital-a";
const ROWS: i64 = 1_000_000;

fn one_node() -> FederationSpec {
    FederationSpec {
        orgs: vec![ORG.into()],
        rows_per_org: 0,
        ..Default::default()
    }
}

/// The owner's declaration of `visits`, as a schema file would give it.
fn columns() -> Value {
    json!([
        {"name": "id", "type": "integer", "not_null": true},
        {"name": "age", "type": "integer", "bounds": {"min": 0, "max": 90}},
        {"name": "state", "type": "text", "public_keys": ["CA", "NY", "TX", "WA"]},
        {"name": "city", "type": "text"},
        {"name": "cost", "type": "float", "bounds": {"min": 0, "max": 5000}},
        {"name": "smoker", "type": "boolean"},
    ])
}

async fn ledger(node: &Api, name: &str) -> Value {
    let (s, b) = node
        .get(&format!("/v1/datasets/{name}/budget"))
        .await
        .expect("budget");
    assert_eq!(s, 200, "{b}");
    b
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// A completed DP run of `sql`.
async fn dp_run(api: &Api, dataset: &str, sql: &str, epsilon: f64) -> Value {
    let (_, s, run) = api
        .run_query(dataset, sql, "dp_sandbox", Some(epsilon))
        .await
        .expect("run");
    assert_eq!(
        (s, &run["status"]),
        (200, &json!("completed")),
        "{sql}: {run}"
    );
    run
}

/// The 99.9 % half-width of discrete Laplace noise of scale `b` (P(|X| > t) ≤ e^(-t/b)), plus
/// one fixed-point step for rounding.
fn bound(b: f64, step: f64) -> f64 {
    b * 1000f64.ln() + step
}

/// The proof's statistic that feeds output `col`.
fn statistic<'a>(run: &'a Value, col: &str) -> &'a Value {
    run["proof_artifacts"]["release"]["statistics"]
        .as_array()
        .expect("statistics")
        .iter()
        .find(|s| {
            s["outputs"]
                .as_array()
                .is_some_and(|o| o.contains(&json!(col)))
        })
        .unwrap_or_else(|| panic!("no statistic for {col}: {run}"))
}

async fn exact(c: &tokio_postgres::Client, sql: &str) -> Vec<f64> {
    let row = c.query_one(sql, &[]).await.expect(sql);
    (0..row.len())
        .map(|i| row.get::<_, Option<f64>>(i).unwrap_or(0.0))
        .collect()
}

/// Checks that every statement the node sent `pg` is the schema lookup or an aggregate SELECT
/// over `visits`, each item an aggregate or a GROUP BY key; returns the statements.
fn only_aggregates_sent(pg: &Pg) -> Vec<String> {
    let sent = pg.node_statements().expect("log");
    for st in &sent {
        if st.contains("information_schema.columns") {
            assert!(!st.contains("visits\""), "{st}");
            continue;
        }
        assert!(
            st.starts_with("SELECT ") && st.contains(" FROM \"visits\""),
            "{st}"
        );
        assert!(!st.contains('*') || st.contains("count(*)"), "{st}");
        let keys = st
            .split(" GROUP BY ")
            .nth(1)
            .map_or(0, |g| g.split(", ").count());
        for (i, item) in select_items(st).iter().enumerate() {
            let aggregate = item.starts_with("count(")
                || item.starts_with("coalesce(sum(")
                || item.starts_with("(count(*) - count(");
            assert!(aggregate || i < keys, "{item} in {st}");
        }
    }
    sent
}

/// The select list of a statement, split at top-level commas.
fn select_items(sql: &str) -> Vec<String> {
    let body = sql
        .strip_prefix("SELECT ")
        .and_then(|s| s.split(" FROM ").next())
        .unwrap_or("");
    let (mut items, mut depth, mut cur) = (Vec::new(), 0i32, String::new());
    for ch in body.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                items.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    items.push(cur.trim().to_string());
    items
}

/// `visits`: one million rows generated inside PostgreSQL (ages 0..99 against declared bounds
/// 0..90, one null age in a thousand, five states of which four are declared keys, costs up to
/// 7142.71 against declared bounds 0..5000).
async fn create_visits(db: &tokio_postgres::Client) {
    create_visits_rows(db, ROWS).await
}

/// [`create_visits`] with `rows` rows.
async fn create_visits_rows(db: &tokio_postgres::Client, rows: i64) {
    let started = Instant::now();
    db.batch_execute(&format!(
        "CREATE TABLE visits AS SELECT g::int8 AS id,
             CASE WHEN g % 1000 = 0 THEN NULL ELSE ((g * 7919) % 100)::int4 END AS age,
             (ARRAY['CA','NY','TX','WA','OR'])[1 + g % 5] AS state,
             CASE WHEN g % 10 = 0 THEN 'St. John''s' ELSE 'Springfield' END AS city,
             ((g * 31) % 50000)::float8 / 7 AS cost,
             (g % 3 = 0) AS smoker,
             g % 250000 AS patient
         FROM generate_series(1::int8, {rows}) g;"
    ))
    .await
    .expect("create the table");
    eprintln!("generated {rows} rows in {:?}", started.elapsed());
}

/// Attests room `id` on a node once its invitation arrived; the node's answer.
async fn attest(node: &Api, id: &str) -> (u16, Value) {
    let path = format!("/v1/invitations/{id}");
    let mut tries = 0;
    while !matches!(node.get(&path).await, Ok((200, _))) {
        tries += 1;
        assert!(tries < 200, "the invitation of room {id} never arrived");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    node.post(&format!("{path}/attest"), &json!({}))
        .await
        .expect("attest")
}

/// A data room with a party whose rows stay in PostgreSQL: hospital-a's `visits` is a
/// PostgreSQL source, hospital-b's an import of the same declaration. hospital-a's exact local
/// vector is computed by one aggregate statement in the database (no row is read), noised and
/// shared like any party's: the room's grouped total lies within its stated intervals around
/// the exact answer, each party is charged its ε, and the database saw aggregates only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dp_room_pushes_a_postgres_partys_vector_down_into_the_database() {
    let pg = Pg::start().expect("postgres");
    let db = pg.client().await.expect("client");
    create_visits_rows(&db, 2000).await;
    // Both owners opted in to exact totals: a database source still refuses them.
    let f = Federation::start(FederationSpec {
        orgs: vec![ORG.into(), "hospital-b".into()],
        rows_per_org: 0,
        policy: prism_node::Policy {
            release: prism_common::release::ReleaseModes {
                mpc_backend: prism_common::release::ReleaseMode::Exact,
                ..Default::default()
            },
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .expect("federation");
    let a = f.node_admin(ORG).expect("node a");
    let (s, b) = a
        .post(
            "/v1/sources",
            &json!({"name": "visits", "columns": columns(),
                    "source": {"kind": "postgres", "conninfo": pg.conninfo(), "table": "visits",
                               "password_file": pg.password_file()}}),
        )
        .await
        .expect("register");
    assert_eq!(s, 201, "{b}");
    // hospital-b: 400 rows of its own, imported.
    let mut csv = String::from("id,age,state,city,cost,smoker\n");
    for i in 0..400 {
        let state = ["CA", "NY", "TX", "WA"][i % 4];
        csv.push_str(&format!(
            "{i},{},{state},Springfield,{}.5,false\n",
            20 + i % 50,
            i % 900
        ));
    }
    let b_node = f.node_admin("hospital-b").expect("node b");
    let (s, b) = b_node
        .post(
            "/v1/datasets",
            &json!({"name": "visits", "columns": columns(), "csv": csv}),
        )
        .await
        .expect("import");
    assert_eq!(s, 201, "{b}");
    catalog_rows(&f, "hospital-a.visits", 2000).await;
    catalog_rows(&f, "hospital-b.visits", 400).await;

    let api = f.analyst();
    let sql = "SELECT state, COUNT(*) AS n, SUM(cost) AS cost FROM visits GROUP BY state";
    let (s, room) = api
        .post(
            "/api/v1/data_rooms",
            &json!({"name": "exact", "query_text": sql, "participants": [ORG, "hospital-b"],
                    "group_keys": {"state": ["CA", "NY", "TX", "WA"]}, "release": "exact"}),
        )
        .await
        .expect("create room");
    assert_eq!(s, 201, "{room}");
    let (s, err) = attest(&a, room["id"].as_str().expect("id")).await;
    assert_eq!(s, 409, "{err}");
    let msg = err["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("queried by pushdown") && msg.ends_with("(source_unsupported)"),
        "{err}"
    );

    let (s, room) = api
        .post(
            "/api/v1/data_rooms",
            &json!({"name": "pushed", "query_text": sql, "participants": [ORG, "hospital-b"],
                    "group_keys": {"state": ["CA", "NY", "TX", "WA"]}, "epsilon": 0.5}),
        )
        .await
        .expect("create room");
    assert_eq!(s, 201, "{room}");
    let id = room["id"].as_str().expect("id").to_string();
    for node in [&a, &b_node] {
        let (s, body) = attest(node, &id).await;
        assert_eq!(s, 200, "{body}");
    }
    let mut done = Value::Null;
    for _ in 0..100 {
        let (s, r) = api
            .post(
                &format!("/api/v1/data_rooms/{id}/execute?wait=true"),
                &json!({}),
            )
            .await
            .expect("execute");
        if s == 200 {
            done = r;
            break;
        }
        // Not ready until both attestations reached the coordinator.
        assert_eq!(s, 409, "{r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(done["status"], "completed", "{done}");

    // The exact answer: hospital-a's from the database, hospital-b's from its rows.
    let dp = &done["proof_artifacts"]["dp"];
    let half = |c: &str| {
        dp["noise"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["component"] == c))
            .and_then(|n| n["ci95_half_width"].as_f64())
            .unwrap_or_else(|| panic!("no interval for {c}: {dp}"))
    };
    for row in done["result"]["rows"].as_array().expect("rows") {
        let state = row[0].as_str().expect("state");
        let exact_a = exact(
            &db,
            &format!(
                "SELECT count(*)::float8, coalesce(sum(LEAST(GREATEST(cost, 0), 5000)), 0)::float8 \
                 FROM visits WHERE state = '{state}'"
            ),
        )
        .await;
        let (n_b, cost_b) = (0..400)
            .filter(|i| ["CA", "NY", "TX", "WA"][i % 4] == state)
            .fold((0.0, 0.0), |(n, c), i| {
                (n + 1.0, c + (i % 900) as f64 + 0.5)
            });
        let (n, cost) = (num(&row[1]), num(&row[2]));
        assert!(
            (n - (exact_a[0] + n_b)).abs() <= 2.0 * half("n"),
            "{state}: {n} vs {} ± {}",
            exact_a[0] + n_b,
            half("n")
        );
        assert!(
            (cost - (exact_a[1] + cost_b)).abs() <= 2.0 * half("cost"),
            "{state}: {cost} vs {} ± {}",
            exact_a[1] + cost_b,
            half("cost")
        );
    }
    for node in [&a, &b_node] {
        assert_eq!(num(&ledger(node, "visits").await["spent_epsilon"]), 0.5);
    }
    // The database saw aggregates only: the registration's census and the room's one
    // grouped aggregate statement, never a row read.
    let sent = only_aggregates_sent(&pg);
    let grouped: Vec<&String> = sent.iter().filter(|s| s.contains(" GROUP BY ")).collect();
    assert_eq!(grouped.len(), 1, "{sent:#?}");
    f.shutdown().await;
}

/// TLS to PostgreSQL: a source registered with `sslmode=require` and the CA of the server's
/// certificate is read over TLS (the server logs every connection of the node as `SSL enabled`)
/// and answers a DP query; a CA that did not sign the server's certificate, a host name the
/// certificate does not carry, and a server that offers no TLS are each refused with the
/// reason, never read in clear, and charge nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_source_over_tls_verifies_the_server_and_never_falls_back_to_clear_text() {
    let pg = Pg::start_tls().expect("postgres with TLS");
    let db = pg.client().await.expect("client");
    create_visits_rows(&db, 1000).await;
    let plain = Pg::start().expect("postgres without TLS");
    create_visits_rows(&plain.client().await.expect("client"), 1000).await;

    let f = Federation::start(one_node()).await.expect("federation");
    let node = f.node_admin(ORG).expect("node");
    let api = f.analyst();
    let conninfo = |port: u16, host: &str| {
        format!(
            "host={host} port={port} dbname=postgres user={} application_name=prism-node sslmode=require",
            crate::pg::USER
        )
    };
    let register = async |name: &str, conninfo: String, ca: &std::path::Path| {
        node.post(
            "/v1/sources",
            &json!({"name": name, "columns": columns(),
                    "source": {"kind": "postgres", "conninfo": conninfo, "table": "visits",
                               "password_file": pg.password_file(), "ca_file": ca}}),
        )
        .await
        .expect("register")
    };

    let (s, b) = register("visits", conninfo(pg.port, "localhost"), &pg.ca_file()).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["rows"], 1000, "{b}");
    catalog_rows(&f, "hospital-a.visits", 1000).await;
    let run = dp_run(
        &api,
        &format!("{ORG}.visits"),
        "SELECT COUNT(*) FROM visits",
        0.5,
    )
    .await;
    let n = num(&run["result"]["rows"][0][0]);
    assert!((n - 1000.0).abs() < 100.0, "{run}");
    let connections = pg.node_connections().expect("server log");
    assert!(connections.len() >= 2, "{connections:?}");
    for c in &connections {
        assert!(c.contains("SSL enabled"), "a connection in clear: {c}");
    }
    let spent = num(&ledger(&node, "visits").await["spent_epsilon"]);

    // A CA that did not sign the server's certificate.
    let dir = tempfile::tempdir().expect("tmp");
    let other_ca = dir.path().join("other-ca.pem");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().expect("key");
    std::fs::write(&other_ca, params.self_signed(&key).expect("ca").pem()).expect("write");
    let (s, b) = register("visits_b", conninfo(pg.port, "localhost"), &other_ca).await;
    refused_with(s, &b, 502, "source_unavailable", "UnknownIssuer");
    // A host name the certificate does not carry (it names localhost, not 127.0.0.1).
    let (s, b) = register("visits_c", conninfo(pg.port, "127.0.0.1"), &pg.ca_file()).await;
    refused_with(s, &b, 502, "source_unavailable", "not valid for name");
    // A server that offers no TLS: refused, never read in clear.
    let (s, b) = register("visits_d", conninfo(plain.port, "localhost"), &pg.ca_file()).await;
    refused_with(s, &b, 502, "source_unavailable", "TLS");
    assert!(
        plain.node_statements().expect("log").is_empty(),
        "the node sent a statement in clear"
    );
    // Nothing was charged for the refusals, and the TLS source answers on.
    assert_eq!(num(&ledger(&node, "visits").await["spent_epsilon"]), spent);
    let (s, datasets) = node.get("/v1/datasets").await.expect("datasets");
    assert_eq!(s, 200);
    let names: Vec<&str> = datasets
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(names, ["visits"], "{datasets}");
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_table_answers_dp_queries_by_pushdown_and_a_failing_source_charges_nothing() {
    let mut pg = Pg::start().expect("postgres");
    let db = pg.client().await.expect("client");
    create_visits(&db).await;

    let f = Federation::start(one_node()).await.expect("federation");
    let node = f.node_admin(ORG).expect("node");
    let api = f.analyst();
    let source = json!({"kind": "postgres", "conninfo": pg.conninfo(), "table": "visits",
                        "password_file": pg.password_file()});

    // A declared column the table lacks is refused at registration, naming it.
    let mut bad = columns();
    bad.as_array_mut()
        .expect("columns")
        .push(json!({"name": "ssn", "type": "text"}));
    let (s, b) = node
        .post(
            "/v1/sources",
            &json!({"name": "visits", "columns": bad, "source": source}),
        )
        .await
        .expect("register");
    refused_with(s, &b, 422, "source_missing_column", "ssn");
    // A column declared not_null that holds nulls is refused, as an import refuses it.
    let mut strict = columns();
    strict[1]["not_null"] = json!(true);
    let (s, b) = node
        .post(
            "/v1/sources",
            &json!({"name": "visits", "columns": strict, "source": source}),
        )
        .await
        .expect("register");
    assert_eq!(
        (s, &b["error"]["code"]),
        (422, &json!("invalid_source")),
        "{b}"
    );
    let msg = b["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("column age") && msg.contains("1000 of its values are null"),
        "{b}"
    );
    // A password in the connection string is refused (it would be stored and shown).
    let mut with_pw = source.clone();
    with_pw["conninfo"] = json!(format!("{} password=x", pg.conninfo()));
    let (s, b) = node
        .post(
            "/v1/sources",
            &json!({"name": "visits", "columns": columns(), "source": with_pw}),
        )
        .await
        .expect("register");
    assert_eq!(
        (s, &b["error"]["code"]),
        (422, &json!("invalid_source")),
        "{b}"
    );

    let (s, b) = node
        .post(
            "/v1/sources",
            &json!({"name": "visits", "columns": columns(), "source": source,
                                     "budget": {"epsilon": 20.0, "delta": 1e-5}}),
        )
        .await
        .expect("register");
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        (b["rows"].as_i64(), &b["source"]),
        (Some(ROWS), &json!("postgres")),
        "{b}"
    );
    f.wait_for_datasets(1).await.expect("catalog");
    let (_, list) = node.get("/v1/datasets").await.expect("list");
    assert_eq!(list[0]["source"]["kind"], "postgres", "{list}");
    assert_eq!(list[0]["source"]["table"], "visits", "{list}");
    assert!(!list.to_string().contains("s3cret"), "{list}");
    let ds = "hospital-a.visits";

    // COUNT(*), SUM and AVG with filters, and a GROUP BY: noise within the proof's scale.
    let eps = 1.0;
    let t = Instant::now();
    let run = dp_run(&api, ds, "SELECT COUNT(*) FROM visits", eps).await;
    eprintln!(
        "pushed-down COUNT(*) over {ROWS} rows: {:?} (node compute {} ms)",
        t.elapsed(),
        run["proof_artifacts"]["node_compute_ms"]
    );
    let got = num(&run["result"]["rows"][0][0]);
    let b = bound(num(&statistic(&run, "count")["noise_scale"]), 1.0);
    assert!(
        (got - ROWS as f64).abs() <= b,
        "count {got} vs {ROWS} (±{b})"
    );

    let sql = "SELECT SUM(age) AS s FROM visits WHERE state = 'NY' AND smoker = true";
    let t = Instant::now();
    let run = dp_run(&api, ds, sql, eps).await;
    eprintln!("pushed-down filtered SUM: {:?}", t.elapsed());
    let want = exact(
        &db,
        "SELECT sum(LEAST(GREATEST(age, 0), 90))::float8 FROM visits \
                           WHERE state = 'NY' AND smoker",
    )
    .await[0];
    let got = num(&run["result"]["rows"][0][0]);
    let b = bound(num(&statistic(&run, "s")["noise_scale"]), 1.0);
    assert!((got - want).abs() <= b, "sum {got} vs exact {want} (±{b})");

    let sql = "SELECT AVG(cost) AS a FROM visits WHERE age >= 30";
    let t = Instant::now();
    let run = dp_run(&api, ds, sql, eps).await;
    eprintln!("pushed-down filtered AVG: {:?}", t.elapsed());
    let w = exact(
        &db,
        "SELECT sum(LEAST(GREATEST(round(cost::numeric * 100), 0), 500000))::float8 \
                        / 100, count(cost)::float8 FROM visits WHERE age >= 30",
    )
    .await;
    let (sum, n) = (w[0], w[1]);
    let st = statistic(&run, "a");
    let comps = st["components"].as_array().expect("components");
    let (bs, bc) = (
        bound(num(&comps[0]["noise_scale"]), 0.01),
        bound(num(&comps[1]["noise_scale"]), 1.0),
    );
    let got = num(&run["result"]["rows"][0][0]);
    // avg = center + (Σ(x - center) + e_s) / (n + e_c): the error is at most
    // (|e_s| + |avg - center| |e_c|) / (n - |e_c|).
    let b = (bs + 2500.0 * bc) / (n - bc);
    assert!(
        (got - sum / n).abs() <= b,
        "avg {got} vs exact {} (±{b})",
        sum / n
    );

    let sql = "SELECT state, COUNT(*) AS n, SUM(age) AS s FROM visits GROUP BY state";
    let t = Instant::now();
    let run = dp_run(&api, ds, sql, eps).await;
    eprintln!("pushed-down GROUP BY: {:?}", t.elapsed());
    let rows = run["result"]["rows"].as_array().expect("rows");
    // The declared keys, not OR (outside the domain), in key order.
    let keys: Vec<&str> = rows.iter().map(|r| r[0].as_str().expect("key")).collect();
    assert_eq!(keys, ["CA", "NY", "TX", "WA"], "{run}");
    let (bn, bsum) = (
        bound(num(&statistic(&run, "n")["noise_scale"]), 1.0),
        bound(num(&statistic(&run, "s")["noise_scale"]), 1.0),
    );
    for r in rows {
        let k = r[0].as_str().expect("key");
        let w = exact(
            &db,
            &format!(
                "SELECT count(*)::float8, sum(LEAST(GREATEST(age, 0), 90))::float8 \
                                     FROM visits WHERE state = '{k}'"
            ),
        )
        .await;
        assert!(
            (num(&r[1]) - w[0]).abs() <= bn,
            "{k}: count {} vs {} (±{bn})",
            r[1],
            w[0]
        );
        assert!(
            (num(&r[2]) - w[1]).abs() <= bsum,
            "{k}: sum {} vs {} (±{bsum})",
            r[2],
            w[1]
        );
    }

    // A privacy unit: each patient has 4 visits, all in one state; bounded to 2 rows per unit
    // in the database (window functions), so the exact answers are 2 × the number of units.
    let mut with_unit = columns();
    with_unit.as_array_mut().expect("columns").push(
        json!({"name": "patient", "type": "integer", "privacy_unit": {"max_rows": 2, "max_groups": 1}}),
    );
    let (s, b) = node
        .post(
            "/v1/sources",
            &json!({"name": "visits_units", "columns": with_unit, "source": source}),
        )
        .await
        .expect("register");
    assert_eq!(s, 201, "{b}");
    f.wait_for_datasets(2).await.expect("catalog");
    let run = dp_run(
        &api,
        "hospital-a.visits_units",
        "SELECT COUNT(*) AS n FROM visits_units",
        eps,
    )
    .await;
    assert!(
        run["proof_artifacts"]["release"]["privacy_unit"]
            .as_str()
            .is_some_and(|u| u.contains("patient")),
        "{run}"
    );
    let b = bound(num(&statistic(&run, "n")["noise_scale"]), 1.0);
    let got = num(&run["result"]["rows"][0][0]);
    assert!(
        (got - 500_000.0).abs() <= b,
        "bounded count {got} vs 500000 (±{b})"
    );
    let run = dp_run(
        &api,
        "hospital-a.visits_units",
        "SELECT state, COUNT(*) AS n FROM visits_units GROUP BY state",
        eps,
    )
    .await;
    let b = bound(num(&statistic(&run, "n")["noise_scale"]), 1.0);
    let rows = run["result"]["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 4, "{run}");
    for r in rows {
        assert!(
            (num(&r[1]) - 100_000.0).abs() <= b,
            "{r:?} vs 100000 (±{b})"
        );
    }

    // A quote in a filter value is data, not SQL: bound as a parameter, the answer is right.
    let run = dp_run(
        &api,
        ds,
        "SELECT COUNT(*) AS n FROM visits WHERE city = 'St. John''s'",
        eps,
    )
    .await;
    let b = bound(num(&statistic(&run, "n")["noise_scale"]), 1.0);
    let got = num(&run["result"]["rows"][0][0]);
    assert!((got - 100_000.0).abs() <= b, "count {got} vs 100000 (±{b})");
    let evil = "SELECT COUNT(*) AS n FROM visits WHERE city = 'x''; DROP TABLE visits; --' OR city = 'Springfield'";
    let run = dp_run(&api, ds, evil, eps).await;
    let got = num(&run["result"]["rows"][0][0]);
    assert!((got - 900_000.0).abs() <= b, "count {got} vs 900000 (±{b})");
    let still = exact(&db, "SELECT count(*)::float8 FROM visits").await[0];
    assert_eq!(still, ROWS as f64, "the table is intact");

    // HE evaluates encrypted constants on rows: refused for a pushdown source, with the reason.
    let text = he_refused(&api, ds).await;
    assert!(
        text.contains("postgres source") && text.contains("pushed"),
        "{text}"
    );

    // Only aggregates crossed the connection: every statement the node sent is the schema
    // lookup or an aggregate SELECT over the table, each item an aggregate or a GROUP BY key.
    let sent = only_aggregates_sent(&pg);
    assert!(sent.len() >= 6, "{sent:#?}");
    for st in &sent {
        // Constants of the analyst's SQL are parameters, never statement text.
        assert!(!st.contains("DROP") && !st.contains("John"), "{st}");
    }

    // The table is dropped: the query fails naming the source; nothing is charged.
    db.batch_execute("DROP TABLE visits").await.expect("drop");
    let before = ledger(&node, "visits").await;
    let (_, s, run) = api
        .run_query(
            ds,
            "SELECT SUM(age) FROM visits WHERE smoker = false",
            "dp_sandbox",
            Some(0.5),
        )
        .await
        .expect("run");
    assert_eq!((s, &run["status"]), (200, &json!("failed")), "{run}");
    assert_eq!(run["error_code"], "source_unavailable", "{run}");
    let msg = run["error_message"].as_str().expect("message");
    assert!(
        msg.contains("postgres table visits") && msg.contains("does not exist"),
        "{msg}"
    );
    assert_eq!(
        ledger(&node, "visits").await,
        before,
        "dropped table: the ledger changed"
    );

    // The server is stopped: the query fails naming the source; nothing is charged; refresh
    // says the same, and the dataset stays registered.
    drop(db);
    pg.stop_server().expect("stop");
    let (_, s, run) = api
        .run_query(
            ds,
            "SELECT COUNT(*) FROM visits WHERE smoker = true",
            "dp_sandbox",
            Some(0.5),
        )
        .await
        .expect("run");
    assert_eq!((s, &run["status"]), (200, &json!("failed")), "{run}");
    assert_eq!(run["error_code"], "source_unavailable", "{run}");
    let msg = run["error_message"].as_str().expect("message");
    assert!(
        msg.contains("postgres table visits") && msg.contains(&pg.port.to_string()),
        "{msg}"
    );
    assert_eq!(
        ledger(&node, "visits").await,
        before,
        "stopped server: the ledger changed"
    );
    let (s, b) = node
        .post("/v1/datasets/visits/refresh", &json!({}))
        .await
        .expect("refresh");
    assert_eq!(
        (s, &b["error"]["code"]),
        (502, &json!("source_unavailable")),
        "{b}"
    );
    let (_, list) = node.get("/v1/datasets").await.expect("list");
    assert!(
        list[0]["source"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("visits")),
        "{list}"
    );
    f.shutdown().await;
}

/// The catalog's row count of `dataset`, once it equals `want`.
async fn catalog_rows(f: &Federation, dataset: &str, want: u64) {
    for _ in 0..100 {
        let (_, v) = f.admin().get("/api/v1/datasets").await.expect("catalog");
        let rows = v
            .as_array()
            .and_then(|a| a.iter().find(|d| d["id"] == dataset))
            .and_then(|d| d["row_count"].as_u64());
        if rows == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the catalog's row count of {dataset} did not become {want}");
}

/// Refreshes the file source `visits`: the node answers with the file's new row count `rows`,
/// and the catalog follows.
async fn refresh_reads(f: &Federation, node: &Api, rows: u64) {
    let (s, b) = node
        .post("/v1/datasets/visits/refresh", &json!({}))
        .await
        .expect("refresh");
    assert_eq!((s, &b["rows"]), (200, &json!(rows)), "{b}");
    catalog_rows(f, "hospital-a.visits", rows).await;
}

/// The file (`file`) of the `kind` source `visits` is gone: refresh fails naming it and charges
/// nothing; the previous `rows` stay in service, with the error on the source and in the
/// node's audit log.
async fn a_removed_file_keeps_the_previous_rows(node: &Api, kind: &str, file: &str, rows: u64) {
    let before = ledger(node, "visits").await;
    let (s, b) = node
        .post("/v1/datasets/visits/refresh", &json!({}))
        .await
        .expect("refresh");
    refused_with(s, &b, 502, "source_unavailable", file);
    assert_eq!(
        ledger(node, "visits").await,
        before,
        "a failed re-read charged"
    );
    let (_, list) = node.get("/v1/datasets").await.expect("list");
    assert_eq!(
        (&list[0]["source"]["kind"], &list[0]["rows"]),
        (&json!(kind), &json!(rows)),
        "{list}"
    );
    assert!(
        list[0]["source"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(file)),
        "{list}"
    );
    let (_, audit) = node.get("/v1/audit").await.expect("audit");
    assert!(
        audit
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["action"] == "source_failed"
                && e["details"]["error"]
                    .as_str()
                    .is_some_and(|m| m.contains(file))),
        "{audit}"
    );
}

fn csv(rows: usize) -> String {
    let mut s = String::from("id,age,state,city,cost,smoker\n");
    for i in 0..rows {
        s.push_str(&format!(
            "{i},{},CA,Springfield,{}.5,{}\n",
            i % 80,
            i % 900,
            i % 2 == 0
        ));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_file_source_is_read_in_place_and_follows_the_file_on_refresh() {
    let f = Federation::start(one_node()).await.expect("federation");
    let node = f.node_admin(ORG).expect("node");
    let api = f.analyst();
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("visits.csv");
    std::fs::write(&path, csv(2_000)).expect("write");
    let (s, b) = node
        .post(
            "/v1/sources",
            &json!({"name": "visits", "columns": columns(),
                                     "source": {"kind": "csv", "path": path}}),
        )
        .await
        .expect("register");
    assert_eq!(
        (s, &b["rows"], &b["source"]),
        (201, &json!(2000), &json!("csv")),
        "{b}"
    );
    let ds = "hospital-a.visits";
    catalog_rows(&f, ds, 2_000).await;
    let run = dp_run(&api, ds, "SELECT COUNT(*) AS n FROM visits", 1.0).await;
    let b = bound(num(&statistic(&run, "n")["noise_scale"]), 1.0);
    assert!(
        (num(&run["result"]["rows"][0][0]) - 2000.0).abs() <= b,
        "{run}"
    );

    // The file changes: refresh re-reads it; the row count and the answer follow.
    std::fs::write(&path, csv(5_000)).expect("write");
    refresh_reads(&f, &node, 5_000).await;
    let run = dp_run(&api, ds, "SELECT COUNT(*) AS n FROM visits", 1.0).await;
    assert!(
        (num(&run["result"]["rows"][0][0]) - 5000.0).abs() <= b_of(&run),
        "{run}"
    );

    // The file is removed: refresh fails naming it; the previous data stays in service.
    std::fs::remove_file(&path).expect("remove");
    a_removed_file_keeps_the_previous_rows(&node, "csv", "visits.csv", 5_000).await;
    let run = dp_run(&api, ds, "SELECT COUNT(*) AS n FROM visits", 1.0).await;
    assert!(
        (num(&run["result"]["rows"][0][0]) - 5000.0).abs() <= b_of(&run),
        "{run}"
    );

    // The source is re-established at node start: the file, back with other rows, is re-read.
    std::fs::write(&path, csv(3_000)).expect("write");
    let mut f = f;
    f.stop_node(ORG).await.expect("stop");
    f.restart_node(ORG).await.expect("restart");
    catalog_rows(&f, ds, 3_000).await;
    let node = f.node_admin(ORG).expect("node");
    let (_, list) = node.get("/v1/datasets").await.expect("list");
    assert_eq!(list[0]["rows"], 3000, "{list}");
    assert!(list[0]["source"]["last_error"].is_null(), "{list}");
    f.shutdown().await;
}

fn b_of(run: &Value) -> f64 {
    bound(num(&statistic(run, "n")["noise_scale"]), 1.0)
}

/// Timings for docs/PERFORMANCE.md (not a pass/fail test): the same DP queries over the same
/// million rows, pushed down to PostgreSQL and imported into the node. Run with
/// `cargo test --release --workspace --test e2e -- --ignored --nocapture sources::timings`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run on demand"]
async fn timings_of_pushdown_and_import_over_one_million_rows() {
    use futures::StreamExt;
    let pg = Pg::start().expect("postgres");
    let db = pg.client().await.expect("client");
    create_visits(&db).await;
    let f = Federation::start(one_node()).await.expect("federation");
    let node = f.node_admin(ORG).expect("node");
    let api = f.analyst();
    let source = json!({"kind": "postgres", "conninfo": pg.conninfo(), "table": "visits",
                        "password_file": pg.password_file()});
    let t = Instant::now();
    let (s, b) = node
        .post(
            "/v1/sources",
            &json!({"name": "visits", "columns": columns(), "source": source,
                                     "budget": {"epsilon": 100.0, "delta": 1e-5}}),
        )
        .await
        .expect("register");
    assert_eq!(s, 201, "{b}");
    eprintln!("register the postgres source: {:?}", t.elapsed());
    let copy = db
        .copy_out("COPY visits TO STDOUT WITH (FORMAT csv, HEADER)")
        .await
        .expect("copy");
    let mut copy = std::pin::pin!(copy);
    let mut csv = Vec::new();
    while let Some(chunk) = copy.next().await {
        csv.extend_from_slice(&chunk.expect("chunk"));
    }
    let csv = String::from_utf8(csv).expect("utf-8");
    let t = Instant::now();
    let (s, b) = node
        .post(
            "/v1/datasets",
            &json!({"name": "imported", "columns": columns(), "csv": csv,
                                      "budget": {"epsilon": 100.0, "delta": 1e-5}}),
        )
        .await
        .expect("import");
    assert_eq!(s, 201, "{b}");
    eprintln!(
        "import the same rows as CSV ({} MB): {:?}",
        csv.len() / 1_000_000,
        t.elapsed()
    );
    f.wait_for_datasets(2).await.expect("catalog");
    for sql in [
        "SELECT COUNT(*) FROM {t}",
        "SELECT SUM(age) FROM {t} WHERE state = 'NY' AND smoker = true",
        "SELECT AVG(cost) FROM {t} WHERE age >= 30",
        "SELECT state, COUNT(*), SUM(age) FROM {t} GROUP BY state",
    ] {
        for t in ["visits", "imported"] {
            let q = sql.replace("{t}", t);
            let mut node_ms = Vec::new();
            let mut wall = Vec::new();
            for _ in 0..5 {
                let started = Instant::now();
                let run = dp_run(&api, &format!("hospital-a.{t}"), &q, 0.5).await;
                wall.push(started.elapsed().as_secs_f64() * 1000.0);
                node_ms.push(num(&run["proof_artifacts"]["node_compute_ms"]));
            }
            let median = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            eprintln!(
                "{q}: node {:.1} ms, end to end {:.1} ms (median of 5)",
                median(&mut node_ms),
                median(&mut wall)
            );
        }
    }
    f.shutdown().await;
}

/// An admin API error: its status, its code, and a message that contains `words`.
/// An HE query on the source dataset `ds`, refused (at creation or as a failed run); the
/// refusal's text.
async fn he_refused(api: &Api, ds: &str) -> String {
    let (q, s, r) = api
        .run_query(
            ds,
            "SELECT COUNT(*) FROM visits WHERE age > 40",
            "he_backend",
            None,
        )
        .await
        .expect("he");
    let text = format!("{q} {r}");
    assert!(s == 422 || r["status"] == "failed", "{s} {text}");
    text
}

fn refused_with(status: u16, body: &serde_json::Value, want: u16, code: &str, words: &str) {
    assert_eq!(
        (status, &body["error"]["code"]),
        (want, &json!(code)),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(words)),
        "{body}"
    );
}
