use super::*;
use prism_common::schema::{ColumnSpec, ColumnType};

/// A two-row `patients` dataset.
pub(crate) fn dataset() -> Dataset {
    Dataset {
        schema: DatasetSchema {
            name: "patients".into(),
            columns: vec![ColumnSpec {
                name: "age".into(),
                ty: ColumnType::Integer,
                bounds: None,
                public_keys: None,
                not_null: false,
                privacy_unit: None,
            }],
        },
        columns: vec![ColumnData::Integer(vec![Some(1), Some(2)])],
        rows: 2,
    }
}

#[test]
fn concurrent_reservations_never_overspend() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, _) = Store::open(&dir.path().join("n.redb")).expect("open");
    store
        .put_dataset(&dataset(), Budget::new(5.0, 1e-5), false, "t")
        .expect("put");
    let store = std::sync::Arc::new(store);
    let handles: Vec<_> = (0..200)
        .map(|i| {
            let s = store.clone();
            std::thread::spawn(
                move || match s.reserve("patients", 0.1, 0.0, &format!("run{i}")) {
                    Ok(r) => {
                        s.settle(&r.id, Some((0.1, 0.0)), "released", serde_json::Value::Null)
                            .expect("settle");
                        true
                    }
                    Err(StoreError::BudgetExhausted { .. }) => false,
                    Err(e) => panic!("unexpected {e}"),
                },
            )
        })
        .collect();
    let granted = handles
        .into_iter()
        .map(|h| h.join().expect("join"))
        .filter(|&g| g)
        .count();
    let b = store.budget("patients").expect("budget");
    // Exact: 50 × 0.1 fit in 5.0, the 51st does not.
    assert_eq!(
        granted, 50,
        "granted {granted} × 0.1 against a total of 5.0"
    );
    assert_eq!(b.spent_epsilon, b.total_epsilon);
    assert_eq!(b.reserved_epsilon, 0);
    assert!(matches!(
        store.reserve("patients", 0.1, 0.0, "late"),
        Err(StoreError::BudgetExhausted { .. })
    ));
}

#[test]
fn crash_with_open_reservation_and_committed_charges_survive_reopen() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("n.redb");
    {
        let (store, _) = Store::open(&path).expect("open");
        store
            .put_dataset(&dataset(), Budget::new(1.0, 0.0), false, "t")
            .expect("put");
        let r = store
            .reserve("patients", 0.3, 0.0, "done")
            .expect("reserve");
        store
            .settle(&r.id, Some((0.3, 0.0)), "released", serde_json::Value::Null)
            .expect("settle");
        // Reserved, computing, then the process dies: no settle.
        store
            .reserve("patients", 0.5, 0.0, "in-flight")
            .expect("reserve");
        assert!((store.budget("patients").expect("b").remaining_epsilon() - 0.2).abs() < 1e-12);
    }
    let (store, settled) = Store::open(&path).expect("reopen");
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0].run_id, "in-flight");
    let b = store.budget("patients").expect("budget");
    // The committed charge stays; the open reservation (whose answer never left) is released.
    assert_eq!(b.spent_epsilon, units_up(0.3));
    assert_eq!(b.reserved_epsilon, 0);
    assert!(store.open_reservations().expect("open").is_empty());
    // imported, charged, released-after-restart.
    assert_eq!(
        prism_common::audit::store::verify(store.db()).expect("chain"),
        3
    );
}

#[test]
fn settle_never_charges_more_than_reserved_and_budget_cannot_drop_below_spent() {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, _) = Store::open(&dir.path().join("n.redb")).expect("open");
    store
        .put_dataset(&dataset(), Budget::new(1.0, 0.0), false, "t")
        .expect("put");
    let r = store.reserve("patients", 0.2, 0.0, "r").expect("reserve");
    let b = store
        .settle(&r.id, Some((0.9, 0.0)), "released", serde_json::Value::Null)
        .expect("settle");
    assert_eq!(b.spent_epsilon, units_up(0.2));
    assert!(matches!(
        store.set_budget("patients", 0.1, 0.0, "owner"),
        Err(StoreError::InvalidBudget(_))
    ));
    assert!(matches!(
        store.set_budget("patients", f64::NAN, 0.0, "owner"),
        Err(StoreError::InvalidBudget(_))
    ));
    assert!(store.set_budget("patients", 2.0, 0.0, "owner").is_ok());
    assert!(matches!(
        store.reserve("nope", 0.1, 0.0, "r"),
        Err(StoreError::UnknownDataset(_))
    ));
}

fn answer(run_id: &str) -> prism_common::wire::HeldAnswer {
    prism_common::wire::HeldAnswer::dp(
        run_id,
        prism_common::wire::Execution {
            table: prism_common::plan::Table {
                columns: vec!["count".into()],
                rows: vec![vec![serde_json::json!(2)]],
            },
            proof: serde_json::json!({}),
            epsilon_spent: 0.1,
            delta_spent: 0.0,
            compute_ms: 1.0,
        },
    )
}

#[test]
fn a_charged_answer_is_held_with_its_charge_until_acknowledged_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("n.redb");
    {
        let (store, _) = Store::open(&path).expect("open");
        store
            .put_dataset(&dataset(), Budget::new(5.0, 1e-5), false, "t")
            .expect("put");
        for id in ["r1", "r2"] {
            let r = store.reserve("patients", 0.1, 0.0, id).expect("reserve");
            store
                .settle_holding(
                    &r.id,
                    Some((0.1, 0.0)),
                    "released",
                    serde_json::Value::Null,
                    Some(answer(id)),
                )
                .expect("settle");
        }
        // A released (uncharged) reservation holds nothing.
        let r = store.reserve("patients", 0.1, 0.0, "r3").expect("reserve");
        store
            .settle(&r.id, None, "refused", serde_json::Value::Null)
            .expect("release");
    }
    let (store, _) = Store::open(&path).expect("reopen");
    let held: Vec<String> = store
        .held()
        .expect("held")
        .into_iter()
        .map(|h| h.answer.run_id)
        .collect();
    assert_eq!(held, ["r1", "r2"]);
    let got = store
        .held_answers(&["r2".into(), "r3".into()])
        .expect("answers");
    assert_eq!(got, vec![answer("r2")]);
    assert_eq!(
        store
            .acknowledge(&["r1".into(), "nope".into()])
            .expect("ack"),
        1
    );
    assert_eq!(store.held().expect("held").len(), 1);
    // Held past HOLD_FOR: dropped, and the drop is audited.
    let later = super::held::now_ms() + u64::try_from(HOLD_FOR.as_millis()).expect("ms") + 1000;
    assert!(store.expire_held(later).expect("expire").is_empty());
    assert!(store.held().expect("held").is_empty());
    let entries = audit::list(&store.db, 0, 100).expect("audit");
    assert!(
        entries
            .iter()
            .any(|e| e.action == "held_answer_dropped" && e.details["run_id"] == "r2"),
        "the drop is audited"
    );
}

#[test]
fn datasets_of_one_population_charge_its_one_budget_and_the_chain_binds_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("n.redb");
    let named = |name: &str| {
        let mut ds = dataset();
        ds.schema.name = name.into();
        ds
    };
    {
        let (store, _) = Store::open(&path).expect("open");
        store
            .put_dataset_in(
                &named("visits"),
                Budget::new(1.0, 0.0),
                false,
                "t",
                Some("clinic"),
            )
            .expect("first of the population");
        // A later member shares the population's budget; its own request does not apply.
        store
            .put_dataset_in(
                &named("claims"),
                Budget::new(9.0, 0.0),
                false,
                "t",
                Some("clinic"),
            )
            .expect("second");
        store
            .put_dataset(&named("staff"), Budget::new(1.0, 0.0), false, "t")
            .expect("own budget");
        let r = store.reserve("visits", 0.6, 0.0, "run-1").expect("reserve");
        store
            .settle(&r.id, Some((0.6, 0.0)), "released", serde_json::Value::Null)
            .expect("charge");
        // The same people through the other table: only 0.4 is left.
        match store.reserve("claims", 0.6, 0.0, "run-2") {
            Err(StoreError::BudgetExhausted {
                remaining_epsilon, ..
            }) => assert!((remaining_epsilon - 0.4).abs() < 1e-9),
            other => panic!("claims was not refused: {other:?}"),
        }
        assert_eq!(
            store.budget("claims").expect("claims"),
            store.budget("visits").expect("visits")
        );
        // Another dataset's budget is its own.
        assert_eq!(store.budget("staff").expect("staff").spent_epsilon, 0);
        // Setting the total through any member sets the population's.
        store.set_budget("claims", 2.0, 0.0, "t").expect("set");
        assert_eq!(
            store.budget("visits").expect("visits").remaining_epsilon(),
            1.4
        );
        // Replacing keeps the population; moving, or joining later, is refused.
        store
            .put_dataset(&named("visits"), Budget::new(0.0, 0.0), true, "t")
            .expect("replace");
        assert_eq!(
            store
                .dataset_meta("visits")
                .expect("meta")
                .population
                .as_deref(),
            Some("clinic")
        );
        for (name, population) in [("visits", "ward"), ("staff", "clinic")] {
            let err = store
                .put_dataset_in(
                    &named(name),
                    Budget::new(1.0, 0.0),
                    true,
                    "t",
                    Some(population),
                )
                .expect_err("refused");
            assert!(matches!(err, StoreError::InvalidBudget(_)), "{err}");
        }
        let err = store
            .put_dataset_in(
                &named("ward"),
                Budget::new(1.0, 0.0),
                false,
                "t",
                Some("Bad Name"),
            )
            .expect_err("bad name");
        assert!(err.to_string().contains("population name"), "{err}");
        let listed = store.datasets().expect("list");
        let spent: Vec<(String, u64)> = listed
            .iter()
            .map(|(m, b)| (m.schema.name.clone(), b.spent_epsilon))
            .collect();
        assert!(
            spent.contains(&("claims".to_string(), 600_000_000_000)),
            "{spent:?}"
        );
    }
    // The chain binds the population's ledger: the store reopens, and refuses an edited one.
    let (store, _) = Store::open(&path).expect("reopen");
    drop(store);
    {
        let db = redb::Database::open(&path).expect("open");
        let txn = db.begin_write().expect("txn");
        {
            let mut t = txn.open_table(BUDGETS).expect("table");
            let mut b: Budget = serde_json::from_str(
                t.get("population:clinic")
                    .expect("get")
                    .expect("ledger")
                    .value(),
            )
            .expect("budget");
            b.spent_epsilon = 0;
            t.insert(
                "population:clinic",
                serde_json::to_string(&b).expect("json").as_str(),
            )
            .expect("insert");
        }
        txn.commit().expect("commit");
    }
    assert!(matches!(
        Store::open(&path),
        Err(StoreError::LedgerMismatch { .. })
    ));
}
