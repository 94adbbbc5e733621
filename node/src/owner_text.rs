//! The `prism-node` CLI's human-readable output: the admin API's JSON as short summaries and
//! tables (`--json` prints the JSON itself). Pure functions of the JSON, so they are tested
//! without a node.

use std::fmt::Write;

use serde_json::Value;

fn s(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(x) => x.clone(),
        Value::Number(n) => n
            .as_f64()
            .map_or_else(|| n.to_string(), |x| format!("{}", (x * 1e9).round() / 1e9)),
        other => other.to_string(),
    }
}

fn who(by: &Value) -> String {
    match (by["user"].as_str(), by["organization"].as_str()) {
        (Some(u), Some(o)) => format!("{u} ({o})"),
        (Some(u), None) => format!("{u} (no organization)"),
        _ => "not forwarded by the coordinator".into(),
    }
}

fn list(v: &Value) -> String {
    v.as_array()
        .map_or_else(|| s(v), |a| a.iter().map(s).collect::<Vec<_>>().join(", "))
}

/// One explained invitation (`GET /v1/requests/{room_id}`).
pub fn request(r: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Room {}  [{}]", s(&r["room_id"]), s(&r["status"]));
    let keys = r["group_keys"]
        .as_array()
        .filter(|k| !k.is_empty())
        .map_or_else(
            || "1 (no GROUP BY)".to_string(),
            |k| {
                let by = r["group_by"].as_array().cloned().unwrap_or_default();
                let parts: Vec<String> = k
                    .iter()
                    .enumerate()
                    .map(|(i, vals)| {
                        format!(
                            "{}: {}",
                            by.get(i).map_or_else(|| "key".into(), s),
                            list(vals)
                        )
                    })
                    .collect();
                format!("{} — {}", s(&r["key_count"]), parts.join("; "))
            },
        );
    let expiry = if r["expired"] == true {
        format!("{} (expired)", s(&r["expires_at"]))
    } else {
        s(&r["expires_at"])
    };
    let rows = [
        ("Query", s(&r["query"])),
        ("Requested by", who(&r["requested_by"])),
        ("Dataset", s(&r["dataset"])),
        ("Release mode", s(&r["release"])),
        ("ε charged here", s(&r["epsilon"])),
        ("Group keys", keys),
        ("Participants", list(&r["participants"])),
        ("Expires", expiry),
        ("Manifest hash", s(&r["manifest_hash"])),
        ("Leaves the node", s(&r["leaves"])),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "  {k:<16} {v}");
    }
    if let Some(reason) = r["reason"].as_str() {
        let _ = writeln!(out, "  {:<16} {reason}", "Reason");
    }
    if let Some(changes) = r["changes"].as_array().filter(|c| !c.is_empty()) {
        let _ = writeln!(
            out,
            "  Changed from the manifest received {}:",
            s(&r["previous"]["received_at"])
        );
        for c in changes {
            let _ = writeln!(
                out,
                "    {}: {} → {}",
                s(&c["field"]),
                c["before"],
                c["after"]
            );
        }
    }
    out
}

/// Every invitation (`GET /v1/requests`), pending count first.
pub fn requests(v: &Value) -> String {
    let all = v["requests"].as_array().cloned().unwrap_or_default();
    let mut out = format!(
        "{} invitation(s), {} pending\n",
        all.len(),
        s(&v["pending"])
    );
    for r in &all {
        out.push('\n');
        out.push_str(&request(r));
    }
    if all.iter().any(|r| r["pending"] == true) {
        out.push_str(
            "\nAttest with `prism-node attest ROOM`, decline with `prism-node decline ROOM --reason …`.\n",
        );
    }
    out
}

/// The node's status (`GET /v1/status`) and its pending-request count.
pub fn status(st: &Value, pending: Option<u64>) -> String {
    let p = &st["policy"];
    let link = if st["connected"] == true {
        "connected"
    } else {
        "not connected"
    };
    let rows = [
        ("Organization", s(&st["org"])),
        ("Coordinator", format!("{} ({link})", s(&st["coordinator"]))),
        ("Peer endpoint", s(&st["peer_addr"])),
        ("Backends", list(&p["backends"])),
        (
            "Release modes",
            format!(
                "dp_sandbox {}, he_backend {}, mpc_backend {}",
                s(&p["release"]["dp_sandbox"]),
                s(&p["release"]["he_backend"]),
                s(&p["release"]["mpc_backend"])
            ),
        ),
        (
            "Per query",
            format!(
                "ε ≤ {}, δ ≤ {}",
                s(&p["max_epsilon_per_query"]),
                s(&p["max_delta_per_query"])
            ),
        ),
        ("Min group size", s(&p["min_group_size"])),
        (
            "Auto-attest",
            if p["auto_attest"] == true {
                "on"
            } else {
                "off"
            }
            .into(),
        ),
        (
            "Pending rooms",
            pending.map_or_else(|| "—".into(), |n| n.to_string()),
        ),
    ];
    rows.iter().map(|(k, v)| format!("{k:<15} {v}\n")).collect()
}

/// A table of dataset budgets (`GET /v1/datasets`), or one dataset's.
pub fn budgets(datasets: &Value, only: Option<&str>) -> Result<String, String> {
    let all = datasets.as_array().cloned().unwrap_or_default();
    let rows: Vec<&Value> = all
        .iter()
        .filter(|d| only.is_none_or(|n| d["name"] == n))
        .collect();
    if let Some(n) = only
        && rows.is_empty()
    {
        return Err(format!("dataset {n} does not exist on this node"));
    }
    let head = [
        "dataset",
        "ε total",
        "ε spent",
        "ε reserved",
        "ε left",
        "δ total",
        "δ spent",
        "δ left",
    ];
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|d| {
            let b = &d["budget"];
            let mut r = vec![s(&d["name"])];
            for k in [
                "total_epsilon",
                "spent_epsilon",
                "reserved_epsilon",
                "remaining_epsilon",
                "total_delta",
                "spent_delta",
                "remaining_delta",
            ] {
                r.push(s(&b[k]));
            }
            r
        })
        .collect();
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .chain([head[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                let pad = w.saturating_sub(c.chars().count());
                if i == 0 {
                    format!("{c}{}", " ".repeat(pad))
                } else {
                    format!("{}{c}", " ".repeat(pad))
                }
            })
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(head.to_vec());
    for r in &table {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    if table.is_empty() {
        out.push_str("(no dataset imported)\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn budget_table_aligns_and_names_a_missing_dataset() {
        let ds = json!([
            {"name": "patients", "budget": {"total_epsilon": 10.0, "spent_epsilon": 0.5,
             "reserved_epsilon": 0.0, "remaining_epsilon": 9.5, "total_delta": 1e-5,
             "spent_delta": 0.0, "remaining_delta": 1e-5}},
        ]);
        let t = budgets(&ds, None).expect("table");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2, "{t}");
        assert!(lines[0].starts_with("dataset") && lines[1].starts_with("patients"));
        assert!(
            lines[1].contains("9.5") && lines[1].contains("0.00001"),
            "{t}"
        );
        let e = budgets(&ds, Some("nope")).expect_err("missing");
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn a_request_reads_as_a_summary() {
        let r = json!({"room_id": "r1", "status": "pending", "query": "SELECT COUNT(*) FROM p",
            "requested_by": {"user": "ana", "organization": "lab"}, "dataset": "p",
            "release": "dp", "epsilon": 0.5, "group_keys": [], "key_count": 1,
            "participants": ["a", "b"], "expires_at": "2999-01-01T00:00:00Z", "expired": false,
            "manifest_hash": "ab", "leaves": "one partial sum",
            "changes": [{"field": "epsilon", "before": 0.25, "after": 0.5}],
            "previous": {"received_at": "2026-01-01T00:00:00Z"}});
        let t = request(&r);
        for want in [
            "Room r1  [pending]",
            "SELECT COUNT(*) FROM p",
            "ana (lab)",
            "ε charged here   0.5",
            "a, b",
            "epsilon: 0.25 → 0.5",
        ] {
            assert!(t.contains(want), "{want:?} missing from:\n{t}");
        }
        assert!(t.lines().count() < 20, "a summary, not a manifest:\n{t}");
    }
}
