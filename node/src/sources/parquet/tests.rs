//! The Parquet reader against files written here with arrow-rs's own writer.

use std::path::Path;
use std::sync::Arc;

use ::parquet::arrow::ArrowWriter;
use ::parquet::basic::{Compression, ZstdLevel};
use ::parquet::file::properties::WriterProperties;
use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray, UInt64Array,
};
use prism_common::schema::{ColumnData, ColumnSpec, ColumnType};

use super::{BATCH_ROWS, read};
use crate::sources::SourceError;

fn col(name: &str, ty: ColumnType) -> ColumnSpec {
    ColumnSpec {
        name: name.into(),
        ty,
        bounds: None,
        public_keys: None,
        not_null: false,
        privacy_unit: None,
    }
}

fn write(path: &Path, columns: Vec<(&str, ArrayRef)>, compression: Compression) {
    let batch = RecordBatch::try_from_iter(columns).expect("batch");
    let props = WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(3000))
        .build();
    let file = std::fs::File::create(path).expect("create");
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
}

fn visits(path: &Path, ages: Vec<Option<i64>>, compression: Compression) {
    let n = ages.len();
    let states: Vec<Option<&str>> = (0..n)
        .map(|i| [Some("CA"), Some("TX"), None][i % 3])
        .collect();
    write(
        path,
        vec![
            ("state", Arc::new(StringArray::from(states)) as ArrayRef),
            ("age", Arc::new(Int64Array::from(ages))),
            (
                "score",
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| i as f64 / 2.0),
                )),
            ),
            (
                "insured",
                Arc::new(BooleanArray::from_iter((0..n).map(|i| Some(i % 2 == 0)))),
            ),
            (
                "ignored",
                Arc::new(BinaryArray::from_iter_values((0..n).map(|_| b"x"))),
            ),
        ],
        compression,
    );
}

fn cols() -> Vec<ColumnSpec> {
    vec![
        col("age", ColumnType::Integer),
        col("state", ColumnType::Text),
        col("score", ColumnType::Float),
        col("insured", ColumnType::Boolean),
    ]
}

#[test]
fn a_directory_is_its_parquet_files_in_name_order_with_only_the_declared_columns() {
    let dir = tempfile::tempdir().expect("tmp");
    // Written out of order, with each codec the node is built with, over several row groups
    // and record batches.
    let big = BATCH_ROWS + 1500;
    visits(
        &dir.path().join("b.parquet"),
        (0..big as i64).map(Some).collect(),
        Compression::ZSTD(ZstdLevel::default()),
    );
    visits(
        &dir.path().join("a.parquet"),
        vec![Some(7), None, Some(9)],
        Compression::SNAPPY,
    );
    std::fs::write(dir.path().join("notes.csv"), "age\n1\n").expect("write");
    let ds = read("p", &cols(), dir.path()).expect("read");
    assert_eq!(ds.rows, 3 + big);
    let ColumnData::Integer(ages) = &ds.columns[0] else {
        panic!("{:?}", ds.columns[0])
    };
    assert_eq!(&ages[..5], &[Some(7), None, Some(9), Some(0), Some(1)]);
    assert_eq!(ages[3 + big - 1], Some(big as i64 - 1));
    // One dictionary across files; nulls stay null.
    let keys: Vec<_> = (0..6).map(|i| ds.columns[1].key(i)).collect();
    let s = |x: &str| Some(x.to_string());
    assert_eq!(keys, [s("CA"), s("TX"), None, s("CA"), s("TX"), None]);
    assert!(matches!(&ds.columns[1], ColumnData::Text { dict, .. } if dict.len() == 2));
    assert_eq!(ds.columns[2].number(3 + 5), Some(2.5));
    assert_eq!(ds.columns[3], {
        let mut v = vec![Some(true), Some(false), Some(true)];
        v.extend((0..big).map(|i| Some(i % 2 == 0)));
        ColumnData::Boolean(v)
    });
    assert_eq!(
        ds.columns.len(),
        4,
        "the undeclared binary column is not read"
    );
}

#[test]
fn narrower_types_widen_and_integers_read_as_floats() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("n.parquet");
    write(
        &file,
        vec![
            (
                "age",
                Arc::new(Int32Array::from(vec![Some(40), None])) as ArrayRef,
            ),
            ("weight", Arc::new(Int64Array::from(vec![70, 80]))),
            ("ratio", Arc::new(Float32Array::from(vec![0.5, 1.5]))),
        ],
        Compression::UNCOMPRESSED,
    );
    let declared = [
        ("age", ColumnType::Integer),
        ("weight", ColumnType::Float),
        ("ratio", ColumnType::Float),
    ];
    let declared: Vec<_> = declared.iter().map(|(n, t)| col(n, *t)).collect();
    let ds = read("p", &declared, &file).expect("read");
    assert_eq!(ds.columns[0], ColumnData::Integer(vec![Some(40), None]));
    assert_eq!(
        ds.columns[1],
        ColumnData::Float(vec![Some(70.0), Some(80.0)])
    );
    assert_eq!(ds.columns[2], ColumnData::Float(vec![Some(0.5), Some(1.5)]));
}

#[test]
fn a_missing_column_names_the_columns_present_and_a_wrong_type_names_both_types() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("v.parquet");
    visits(&file, vec![Some(1)], Compression::SNAPPY);
    let mut declared = cols();
    declared.push(col("zip", ColumnType::Text));
    let err = read("p", &declared, &file).expect_err("missing");
    assert!(
        matches!(&err, SourceError::MissingColumn { column, .. } if column == "zip"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("state, age, score, insured, ignored"),
        "{err}"
    );

    let declared = vec![col("state", ColumnType::Integer)];
    let err = read("p", &declared, &file).expect_err("type");
    let msg = err.to_string();
    assert!(
        msg.contains("column state is declared integer but is Utf8"),
        "{msg}"
    );
    let declared = vec![col("ignored", ColumnType::Text)];
    let msg = read("p", &declared, &file).expect_err("binary").to_string();
    assert!(msg.contains("declared text but is Binary"), "{msg}");
}

#[test]
fn a_non_finite_float_or_a_null_in_a_not_null_column_names_its_row() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("f.parquet");
    let n = BATCH_ROWS + 10;
    let mut xs: Vec<Option<f64>> = (0..n).map(|i| Some(i as f64)).collect();
    xs[BATCH_ROWS + 4] = Some(f64::INFINITY); // row BATCH_ROWS + 5, in the second batch
    let mut ids: Vec<Option<i64>> = (0..n as i64).map(Some).collect();
    ids[41] = None;
    write(
        &file,
        vec![
            ("x", Arc::new(Float64Array::from(xs)) as ArrayRef),
            ("id", Arc::new(Int64Array::from(ids))),
        ],
        Compression::SNAPPY,
    );
    let msg = read("p", &[col("x", ColumnType::Float)], &file)
        .expect_err("inf")
        .to_string();
    assert!(
        msg.contains(&format!(
            "row {}: column x: inf is not a finite number",
            BATCH_ROWS + 5
        )),
        "{msg}"
    );
    let mut id = col("id", ColumnType::Integer);
    id.not_null = true;
    let msg = read("p", &[id], &file).expect_err("null").to_string();
    assert!(
        msg.contains("row 42: column id is declared not_null"),
        "{msg}"
    );
    // A nullable declaration reads the same file.
    let ds = read("p", &[col("id", ColumnType::Integer)], &file).expect("nullable");
    assert!(ds.columns[0].is_null(41) && !ds.columns[0].is_null(40));
}

#[test]
fn an_unsigned_value_beyond_i64_is_refused_with_its_row() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("u.parquet");
    let vals = UInt64Array::from(vec![1, u64::MAX]);
    write(
        &file,
        vec![("n", Arc::new(vals) as ArrayRef)],
        Compression::SNAPPY,
    );
    let msg = read("p", &[col("n", ColumnType::Integer)], &file)
        .expect_err("big")
        .to_string();
    assert!(
        msg.contains("row 2: column n: the value does not fit"),
        "{msg}"
    );
}

#[test]
fn corrupt_truncated_foreign_and_absent_files_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let good = dir.path().join("good.parquet");
    visits(&good, (0..5000).map(Some).collect(), Compression::SNAPPY);
    let bytes = std::fs::read(&good).expect("read");

    let truncated = dir.path().join("truncated.parquet");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let text = dir.path().join("text.parquet");
    std::fs::write(&text, "age,state\n1,CA\n").expect("write");
    // Valid footer, damaged pages: the reader fails while decoding, not at open.
    let mut damaged = bytes.clone();
    for b in &mut damaged[4..bytes.len() / 2] {
        *b = 0xA5;
    }
    let corrupt = dir.path().join("corrupt.parquet");
    std::fs::write(&corrupt, &damaged).expect("write");
    for file in [&truncated, &text, &corrupt] {
        let err = read("p", &cols(), file).expect_err("bad file");
        assert!(matches!(err, SourceError::Invalid { .. }), "{err}");
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{err}"
        );
    }

    let gone = dir.path().join("gone.parquet");
    let err = read("p", &cols(), &gone).expect_err("absent");
    assert!(
        matches!(err, SourceError::Unavailable { .. }) && err.to_string().contains("gone.parquet"),
        "{err}"
    );

    let empty = tempfile::tempdir().expect("tmp");
    std::fs::write(empty.path().join("v.csv"), "age\n1\n").expect("write");
    let msg = read("p", &cols(), empty.path())
        .expect_err("empty dir")
        .to_string();
    assert!(msg.contains("holds no .parquet file"), "{msg}");

    let msg = read("p", &cols(), &empty.path().join("v.csv"))
        .expect_err("csv")
        .to_string();
    assert!(msg.contains("kind csv"), "{msg}");
}

#[test]
fn a_file_without_rows_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("e.parquet");
    write(
        &file,
        vec![(
            "age",
            Arc::new(Int64Array::from(Vec::<i64>::new())) as ArrayRef,
        )],
        Compression::SNAPPY,
    );
    let msg = read("p", &[col("age", ColumnType::Integer)], &file)
        .expect_err("empty")
        .to_string();
    assert!(msg.contains("no rows"), "{msg}");
}
