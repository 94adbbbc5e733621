//! Tests of the HE backend: the pure parts (encoding, checks, pre-aggregation, final table) and,
//! with real TFHE at the smallest honest sizes, exactness against plaintext and the refusal of
//! malformed blobs.

use std::sync::OnceLock;

use super::cipher::{encrypt_constant, read_constant};
use super::encode::{encode, text_filter_columns};
use super::eval::{Path, evaluate_path};
use super::groups::{Limits, prepare};
use super::holder::{answer, encrypt_constants};
use super::keys::{KeySet, NodeKeys, ServerKeyGuard, read_public_key, read_server_key};
use super::*;
use crate::plan::{AggFunc, Plan};
use crate::schema::{Bounds, ColumnData, ColumnSpec, ColumnType, Dataset, DatasetSchema};
use crate::sql::plan_query;

const DIAGNOSES: [&str; 4] = ["asthma", "copd", "diabetes", "healthy"];
const AGES: [i64; 7] = [0, 3, 7, 8, 12, 19, 20];
const COSTS: [i64; 8] = [-40, -7, 0, 3, 12, 25, 33, 50];

fn spec(name: &str, ty: ColumnType, bounds: Option<(f64, f64)>) -> ColumnSpec {
    ColumnSpec {
        name: name.into(),
        ty,
        bounds: bounds.map(|(min, max)| Bounds { min, max }),
        public_keys: None,
        not_null: false,
        privacy_unit: None,
    }
}

fn schema() -> DatasetSchema {
    let mut diagnosis = spec("diagnosis", ColumnType::Text, None);
    diagnosis.public_keys = Some(DIAGNOSES.iter().map(|s| s.to_string()).collect());
    DatasetSchema {
        name: "t".into(),
        columns: vec![
            spec("id", ColumnType::Integer, None),
            spec("age", ColumnType::Integer, Some((0.0, 20.0))),
            diagnosis,
            spec("cost", ColumnType::Integer, Some((-50.0, 50.0))),
            spec("smoker", ColumnType::Boolean, None),
            spec("price", ColumnType::Float, Some((0.0, 10.0))),
        ],
    }
}

/// A small xorshift generator: reproducible data without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[(self.next() % xs.len() as u64) as usize]
    }
    fn null(&mut self) -> bool {
        self.next().is_multiple_of(10)
    }
}

fn dataset(seed: u64, rows: usize) -> Dataset {
    let mut r = Rng(seed | 1);
    let mut codes = Vec::new();
    let dict: Vec<String> = DIAGNOSES[..3].iter().map(|s| s.to_string()).collect();
    let (mut age, mut cost, mut smoker, mut price, mut id) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..rows {
        id.push(Some(i as i64));
        age.push((!r.null()).then(|| r.pick(&AGES)));
        codes.push((!r.null()).then(|| (r.next() % 3) as u32));
        cost.push((!r.null()).then(|| r.pick(&COSTS)));
        smoker.push((!r.null()).then(|| r.next().is_multiple_of(2)));
        price.push(Some(1.5));
    }
    Dataset {
        schema: schema(),
        columns: vec![
            ColumnData::Integer(id),
            ColumnData::Integer(age),
            ColumnData::Text { dict, codes },
            ColumnData::Integer(cost),
            ColumnData::Boolean(smoker),
            ColumnData::Float(price),
        ],
        rows,
    }
}

fn plan(sql: &str) -> Plan {
    plan_query(sql, &schema()).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn domains(ds: &Dataset, plan: &Plan) -> Vec<TextDomain> {
    text_filter_columns(plan, &ds.schema)
        .iter()
        .filter_map(|c| match ds.column(c) {
            Some((s, ColumnData::Text { dict, .. })) => Some(TextDomain::of(s, dict)),
            _ => None,
        })
        .collect()
}

const LIMITS: Limits = Limits {
    max_distinct_values: 8,
    max_groups: 64,
};

/// The plaintext answer, straight from the rows.
fn expected(plan: &Plan, ds: &Dataset) -> Vec<serde_json::Value> {
    let mask = crate::eval::filter_mask(plan.filter.as_ref(), ds).expect("mask");
    plan.aggregates()
        .map(|a| {
            let Some(col) = &a.column else {
                return serde_json::json!(mask.iter().filter(|m| **m).count());
            };
            let (_, data) = ds.column(col).expect("column");
            let vals: Vec<i64> = (0..ds.rows)
                .filter(|i| mask[*i] && !data.is_null(*i))
                .filter_map(|i| data.number(i).map(|x| x as i64))
                .collect();
            let n = (0..ds.rows)
                .filter(|i| mask[*i] && !data.is_null(*i))
                .count();
            match a.func {
                AggFunc::Count => serde_json::json!(n),
                _ if vals.is_empty() => serde_json::Value::Null,
                AggFunc::Sum => serde_json::json!(vals.iter().sum::<i64>() * a.weight.unwrap_or(1)),
                AggFunc::Avg => {
                    serde_json::json!(vals.iter().sum::<i64>() as f64 / vals.len() as f64)
                }
                AggFunc::Min => serde_json::json!(vals.iter().min()),
                AggFunc::Max => serde_json::json!(vals.iter().max()),
            }
        })
        .collect()
}

#[test]
fn dp_noise_under_a_privacy_unit_is_calibrated_to_its_max_rows() {
    use super::release::calibrate_noise;
    use super::shape::HeValue;
    let cells = || {
        vec![
            super::ResultCell {
                value: HeValue::CountRows,
                bits: 16,
                offset: 0,
                noise: None,
            },
            super::ResultCell {
                value: HeValue::Sum {
                    column: "cost".into(),
                },
                bits: 16,
                offset: -50,
                noise: None,
            },
        ]
    };
    let rows = dataset(3, 50);
    let mut c = cells();
    calibrate_noise(&mut c, &rows, 1.0).expect("rows");
    let row_level: Vec<u64> = c
        .iter()
        .map(|c| c.noise.as_ref().expect("noise").sensitivity)
        .collect();
    assert_eq!(row_level, vec![1, 100]);
    let mut units = rows.clone();
    units.schema.columns[0].privacy_unit = Some(crate::schema::ContributionBounds {
        max_rows: 4,
        max_groups: 1,
    });
    let mut c = cells();
    calibrate_noise(&mut c, &units, 1.0).expect("units");
    let per_unit: Vec<u64> = c
        .iter()
        .map(|c| c.noise.as_ref().expect("noise").sensitivity)
        .collect();
    assert_eq!(per_unit, vec![4, 400]);
}

#[test]
fn constants_are_encoded_with_clamping_and_rounding_and_never_in_the_shape() {
    let ds = dataset(1, 50);
    let p = plan(
        "SELECT COUNT(*) FROM t WHERE diagnosis = 'zzz' AND age >= -5 AND age < 7.5 AND cost IN (3, 2.5) \
         AND smoker = true AND age BETWEEN 2.2 AND 99",
    );
    let e = encode(&p, &ds.schema, &domains(&ds, &p)).expect("encode");
    // diagnosis: 'zzz' is outside the 4-value domain → code 4. age: [0, 20] → codes x + 1,
    // clamped into 0..=22: -5 → 0, ceil(7.5) = 8 → 9; cost: 3 → 3 + 51 = 54, 2.5 → 0 (no match).
    // smoker: true → 2. between: ceil(2.2) = 3 → 4, 99 → 22.
    assert_eq!(e.codes, vec![4, 0, 9, 4, 22, 54, 0, 2]);
    assert_eq!(e.query.constant_bits(), vec![3, 5, 5, 5, 5, 7, 7, 2]);
    let shape = serde_json::to_string(&e.query).expect("json");
    for secret in ["zzz", "7.5", "2.2", "99", "true"] {
        assert!(!shape.contains(secret), "{secret} leaked into {shape}");
    }
}

#[test]
fn constructs_he_does_not_evaluate_are_refused_with_their_name() {
    let ds = dataset(2, 10);
    for (sql, needle) in [
        ("SELECT COUNT(*) FROM t WHERE age = 1 OR age = 2", "or"),
        ("SELECT COUNT(*) FROM t WHERE NOT age = 1", "not"),
        ("SELECT COUNT(*) FROM t WHERE age IS NULL", "is null"),
        (
            "SELECT diagnosis, COUNT(*) FROM t GROUP BY diagnosis",
            "group by",
        ),
        ("SELECT SUM(price) FROM t", "price"),
        ("SELECT SUM(id) FROM t", "bounds"),
        ("SELECT COUNT(*) FROM t WHERE id = 3", "bounds"),
        ("SELECT COUNT(*) FROM t WHERE price > 1", "float"),
    ] {
        let p = plan(sql);
        let err = encode(&p, &ds.schema, &domains(&ds, &p)).expect_err(sql);
        assert!(err.to_string().contains(needle), "{sql}: {err}");
        if matches!(needle, "or" | "not" | "is null" | "group by") {
            assert!(
                crate::support::check_supported(crate::backend::BackendId::HeBackend, &p).is_err()
            );
        }
    }
    // COUNT of a float or unbounded column needs no bounds.
    let p = plan("SELECT COUNT(price), COUNT(id) FROM t");
    assert!(encode(&p, &ds.schema, &[]).is_ok());
}

#[test]
fn preaggregation_groups_by_filter_values_and_enforces_the_policy() {
    let ds = dataset(3, 200);
    let p =
        plan("SELECT COUNT(*), SUM(cost), MIN(cost) FROM t WHERE diagnosis = 'copd' AND age > 3");
    let e = encode(&p, &ds.schema, &domains(&ds, &p)).expect("encode");
    let prep = prepare(&e.query, &ds, &LIMITS).expect("prepare");
    assert!(prep.distinct[0].len() <= 3 && prep.distinct[1].len() <= AGES.len());
    assert!(prep.groups.len() <= 3 * AGES.len());
    let counted: u64 = prep.groups.iter().filter_map(|g| g.cells[0]).sum();
    let non_null = (0..ds.rows)
        .filter(|i| !ds.columns[1].is_null(*i) && !ds.columns[2].is_null(*i))
        .count();
    assert_eq!(
        counted, non_null as u64,
        "every row with both filter columns is in one group"
    );
    let tight = Limits {
        max_distinct_values: 2,
        ..LIMITS
    };
    let err = prepare(&e.query, &ds, &tight).expect_err("too many distinct values");
    assert_eq!(err.code(), "policy_violation");
    assert!(err.to_string().contains("he_max_distinct_values"), "{err}");
    // Data outside the declared bounds is refused, not clamped.
    let mut bad = ds.clone();
    bad.columns[3] = ColumnData::Integer(vec![Some(51); ds.rows]);
    let err = prepare(&e.query, &bad, &LIMITS).expect_err("out of bounds");
    assert!(
        err.to_string().contains("outside the declared bounds"),
        "{err}"
    );
    // A domain that changed since encoding is a mismatch, not a wrong answer.
    let mut stale = ds.clone();
    stale.columns[2] = ColumnData::Text {
        dict: vec!["new".into()],
        codes: vec![Some(0); ds.rows],
    };
    assert_eq!(
        prepare(&e.query, &stale, &LIMITS)
            .expect_err("stale")
            .code(),
        "he_mismatch"
    );
}

/// One key set for every TFHE test in this process.
fn keys() -> &'static (KeySet, NodeKeys) {
    static KEYS: OnceLock<(KeySet, NodeKeys)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let ks = KeySet::generate().expect("keygen");
        let node = NodeKeys::from_blobs(&ks.key_id, &ks.public_key_bytes, &ks.server_key_bytes)
            .expect("node keys");
        (ks, node)
    })
}

/// The whole exchange without the network: key holder → node → key holder.
fn run(sql: &str, ds: &Dataset) -> Vec<serde_json::Value> {
    run_path(sql, ds, Path::Auto)
}

fn run_path(sql: &str, ds: &Dataset, path: Path) -> Vec<serde_json::Value> {
    let (holder, node) = keys();
    let p = plan(sql);
    let e = encode(&p, &ds.schema, &domains(ds, &p)).expect("encode");
    let blobs = encrypt_constants(holder, &e).expect("encrypt");
    let prep = prepare(&e.query, ds, &LIMITS).expect("prepare");
    let constants = {
        let _key = ServerKeyGuard::set(&node.server_key);
        let bits = e.query.constant_bits();
        blobs
            .iter()
            .zip(&bits)
            .map(|(b, w)| read_constant(b, *w))
            .collect::<Result<Vec<_>, _>>()
            .expect("constants")
    };
    let out = evaluate_path(&e.query, &prep, &constants, node, path).expect("evaluate");
    if path == Path::Lookup {
        assert!(
            out.ops.table_lookups > 0,
            "{sql} did not take the lookup path"
        );
    }
    assert_eq!(out.homomorphic, e.query.has_constants());
    let table = answer(holder, &p, &e, &out.blob, &prep.cells, None)
        .expect("answer")
        .table;
    assert_eq!(table.columns, p.column_names());
    table.rows.into_iter().next().expect("one row")
}

fn assert_same(sql: &str, got: &[serde_json::Value], want: &[serde_json::Value]) {
    assert_eq!(got.len(), want.len(), "{sql}");
    for (g, w) in got.iter().zip(want) {
        match (g.as_f64(), w.as_f64()) {
            (Some(a), Some(b)) => assert!((a - b).abs() < 1e-9, "{sql}: {got:?} vs {want:?}"),
            _ => assert_eq!(g, w, "{sql}: {got:?} vs {want:?}"),
        }
    }
}

#[test]
fn encrypted_answers_equal_plaintext_answers_on_random_data() {
    let mut r = Rng(0x5eed);
    for round in 0..2u64 {
        let ds = dataset(100 + round, 60 + 70 * round as usize);
        let (d1, d2) = (r.pick(&DIAGNOSES), r.pick(&DIAGNOSES));
        let (a, b) = (r.pick(&AGES), r.pick(&AGES));
        let c = r.pick(&COSTS);
        let queries = [
            format!("SELECT COUNT(*), SUM(cost), AVG(cost) FROM t WHERE diagnosis = '{d1}'"),
            format!(
                "SELECT COUNT(cost), MIN(cost), MAX(cost) FROM t WHERE age >= {a} AND age < {b}"
            ),
            format!(
                "SELECT SUM(cost * 3), COUNT(*) FROM t WHERE diagnosis IN ('{d1}', '{d2}') AND smoker = true"
            ),
            format!("SELECT MIN(age), MAX(age), AVG(age) FROM t WHERE cost BETWEEN {c} AND 40"),
            format!(
                "SELECT COUNT(*), SUM(age) FROM t WHERE diagnosis <> '{d2}' AND age NOT BETWEEN {a} AND {b}"
            ),
            format!("SELECT COUNT(*), MAX(cost) FROM t WHERE age > {a}.5 AND cost <= {c}"),
        ];
        for sql in &queries {
            let got = run(sql, &ds);
            assert_same(sql, &got, &expected(&plan(sql), &ds));
        }
    }
}

#[test]
fn table_lookups_and_per_value_comparisons_agree_with_plaintext() {
    let mut r = Rng(0x100c);
    let ds = dataset(11, 90);
    let (a, c, c2) = (r.pick(&AGES), r.pick(&COSTS), r.pick(&COSTS));
    let d = r.pick(&DIAGNOSES);
    for sql in [
        format!("SELECT COUNT(*), SUM(cost), COUNT(cost) FROM t WHERE age >= {a}"),
        format!("SELECT COUNT(*), SUM(age) FROM t WHERE cost BETWEEN {c} AND {c2}"),
        format!("SELECT COUNT(*) FROM t WHERE diagnosis <> '{d}'"),
        "SELECT SUM(cost), AVG(cost) FROM t WHERE age < 7.5".to_string(),
    ] {
        let want = expected(&plan(&sql), &ds);
        for path in [Path::Lookup, Path::PerValue] {
            assert_same(&sql, &run_path(&sql, &ds, path), &want);
        }
    }
}

#[test]
fn empty_selections_and_queries_without_constants_are_exact() {
    let ds = dataset(7, 40);
    for sql in [
        "SELECT COUNT(*), SUM(age), MIN(cost) FROM t WHERE diagnosis = 'not-a-diagnosis'",
        "SELECT COUNT(*), SUM(cost), AVG(age), MIN(age), MAX(cost), COUNT(smoker) FROM t",
    ] {
        let got = run(sql, &ds);
        assert_same(sql, &got, &expected(&plan(sql), &ds));
    }
}

#[test]
fn malformed_oversized_or_foreign_blobs_are_refused() {
    let (holder, _) = keys();
    let (pk, sk) = (&holder.public_key_bytes, &holder.server_key_bytes);
    // Blobs that do not hash to the announced key id.
    let err = NodeKeys::from_blobs("tfhe-0000", pk, sk)
        .err()
        .expect("wrong id");
    assert_eq!(err.code(), "he_malformed_blob");
    // Garbage, truncation and oversize.
    assert!(read_public_key(b"not a key").is_err());
    assert!(read_server_key(&sk[..sk.len() / 2]).is_err());
    assert!(read_server_key(&vec![0u8; MAX_SERVER_KEY_BYTES + 1]).is_err());
    assert!(read_public_key(&vec![0u8; MAX_PUBLIC_KEY_BYTES + 1]).is_err());
    // A well-formed public key for other parameters is not conformant.
    let other = tfhe::ClientKey::generate(tfhe::ConfigBuilder::default().build());
    let foreign = keys::serialize(&tfhe::CompactPublicKey::new(&other)).expect("serialize");
    let Err(err) = read_public_key(&foreign) else {
        panic!("a public key of foreign parameters was accepted");
    };
    assert!(err.to_string().contains("public key"), "{err}");
    // A constant of another width than the shape announces.
    let c8 = encrypt_constant(&holder.client_key, 8, 3).expect("encrypt");
    assert!(read_constant(&c8, 8).is_ok());
    assert!(read_constant(&c8, 4).is_err());
    assert!(read_constant(&c8[..c8.len() - 3], 8).is_err());
    // Results that do not match their announced layout.
    let e = cipher::read_results(&c8, &[8]).err().expect("not a list");
    assert_eq!(e.code(), "he_malformed_blob");
    // A compact result list: garbage, or another element count than the layout announces.
    let pk = read_public_key(&holder.public_key_bytes).expect("public key");
    let mut two = tfhe::CompactCiphertextList::builder(&pk);
    two.push_with_num_bits(5u64, 16).expect("push");
    two.push_with_num_bits(7u64, 16).expect("push");
    let two = keys::serialize(&two.build()).expect("serialize");
    let _key = ServerKeyGuard::set(&holder.server_key);
    let got = cipher::read_compact_results(&two, &[16, 16]).expect("conformant");
    let clear: Vec<u64> = got.iter().map(|v| v.decrypt(&holder.client_key)).collect();
    assert_eq!(clear, [5, 7]);
    for (blob, bits) in [(&two[..], &[16][..]), (&c8[..], &[8][..])] {
        let e = cipher::read_compact_results(blob, bits)
            .err()
            .expect("refused");
        assert_eq!(e.code(), "he_malformed_blob");
    }
}
