//! File sources: a CSV file, or a directory of CSV files, read in place into the normal
//! in-memory [`Dataset`] (at registration, at node start and on refresh), so every backend
//! works on it unchanged. Each file is parsed exactly as an import is ([`parse_csv`]: the
//! header names the declared columns, the first bad cell refuses the whole source).

use std::collections::HashMap;
use std::path::Path;

use prism_common::schema::{ColumnData, ColumnSpec, Dataset};

use super::SourceError;
use crate::import::parse_csv;

/// Reads a file source into a dataset with the declared columns.
pub fn read(name: &str, columns: &[ColumnSpec], path: &Path) -> Result<Dataset, SourceError> {
    let mut parts = Vec::new();
    for file in super::files(path, "csv")? {
        let text = std::fs::read_to_string(&file).map_err(|e| SourceError::Unavailable {
            source_name: file.display().to_string(),
            message: e.to_string(),
        })?;
        let ds = parse_csv(name, columns.to_vec(), &text).map_err(|e| SourceError::Invalid {
            source_name: file.display().to_string(),
            message: e.to_string(),
        })?;
        parts.push(ds);
    }
    let mut parts = parts.into_iter();
    let first = parts.next().ok_or_else(|| SourceError::Unavailable {
        source_name: path.display().to_string(),
        message: "no file to read".into(),
    })?;
    Ok(parts.fold(first, concat))
}

/// Appends `b`'s rows to `a` (same schema); text dictionaries are merged.
fn concat(mut a: Dataset, b: Dataset) -> Dataset {
    for (ca, cb) in a.columns.iter_mut().zip(b.columns) {
        match (ca, cb) {
            (ColumnData::Integer(x), ColumnData::Integer(y)) => x.extend(y),
            (ColumnData::Float(x), ColumnData::Float(y)) => x.extend(y),
            (ColumnData::Boolean(x), ColumnData::Boolean(y)) => x.extend(y),
            (
                ColumnData::Text { dict, codes },
                ColumnData::Text {
                    dict: d2,
                    codes: c2,
                },
            ) => {
                let mut at: HashMap<String, u32> = dict
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.clone(), i as u32))
                    .collect();
                let remap: Vec<u32> = d2
                    .into_iter()
                    .map(|s| {
                        *at.entry(s.clone()).or_insert_with(|| {
                            dict.push(s);
                            (dict.len() - 1) as u32
                        })
                    })
                    .collect();
                codes.extend(
                    c2.into_iter()
                        .map(|c| c.and_then(|c| remap.get(c as usize).copied())),
                );
            }
            // parse_csv gives every part the declared types, so the shapes always agree.
            _ => {}
        }
    }
    a.rows += b.rows;
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_common::schema::ColumnType;

    fn cols() -> Vec<ColumnSpec> {
        ["age", "state"]
            .iter()
            .zip([ColumnType::Integer, ColumnType::Text])
            .map(|(n, ty)| ColumnSpec {
                name: n.to_string(),
                ty,
                bounds: None,
                public_keys: None,
                not_null: false,
                privacy_unit: None,
            })
            .collect()
    }

    #[test]
    fn a_directory_is_its_csv_files_in_name_order() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("b.csv"), "state,age\nNY,3\nCA,4\n").expect("write");
        std::fs::write(dir.path().join("a.csv"), "age,state\n1,CA\n2,TX\n").expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not data").expect("write");
        let ds = read("p", &cols(), dir.path()).expect("read");
        assert_eq!(ds.rows, 4);
        assert_eq!(
            ds.columns[0],
            ColumnData::Integer(vec![Some(1), Some(2), Some(3), Some(4)])
        );
        let keys: Vec<_> = (0..4).map(|i| ds.columns[1].key(i)).collect();
        assert_eq!(
            keys,
            ["CA", "TX", "NY", "CA"]
                .map(|s| Some(s.to_string()))
                .to_vec()
        );
    }

    #[test]
    fn a_missing_file_and_a_bad_cell_name_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let gone = dir.path().join("gone.csv");
        let err = read("p", &cols(), &gone).expect_err("missing");
        assert!(err.to_string().contains("gone.csv"), "{err}");
        std::fs::write(dir.path().join("x.csv"), "age,state\nold,CA\n").expect("write");
        let err = read("p", &cols(), dir.path()).expect_err("bad cell");
        assert!(
            err.to_string().contains("x.csv") && err.to_string().contains("line 2"),
            "{err}"
        );
    }
}
