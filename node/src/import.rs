//! CSV import: typed columns as the owner declared them, all or nothing.
//!
//! The header must name exactly the declared columns (any order). Every cell is parsed to its
//! column's type; an empty cell or `NULL` is null (refused in a column declared `not_null`). The first bad cell refuses the whole file
//! with its line number, so a partial dataset is never stored.

use prism_common::schema::{ColumnData, ColumnSpec, ColumnType, Dataset, DatasetSchema};

/// Why an import was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ImportError {
    /// The dataset name is not acceptable.
    #[error(
        "invalid dataset name {0:?}: use a lowercase letter then lowercase letters, digits or '_' (at most 63)"
    )]
    BadName(String),
    /// The declared columns are inconsistent.
    #[error("invalid column declaration: {0}")]
    BadSchema(String),
    /// The header does not match the declaration.
    #[error("csv header: {0}")]
    Header(String),
    /// A row could not be parsed.
    #[error("csv line {line}: {message}; nothing was imported")]
    Row {
        /// 1-based line number in the file (the header is line 1).
        line: u64,
        /// What was wrong.
        message: String,
    },
    /// The file has no data rows.
    #[error("csv has no data rows; nothing was imported")]
    Empty,
}

fn check_schema(columns: &[ColumnSpec]) -> Result<(), ImportError> {
    if columns.is_empty() {
        return Err(ImportError::BadSchema("declare at least one column".into()));
    }
    prism_common::schema::check_privacy_unit(columns).map_err(ImportError::BadSchema)?;
    let mut seen = std::collections::HashSet::new();
    for c in columns {
        if !crate::store::valid_dataset_name(&c.name) {
            return Err(ImportError::BadSchema(format!(
                "column name {:?}: use a lowercase letter then lowercase letters, digits or '_'",
                c.name
            )));
        }
        if !seen.insert(c.name.as_str()) {
            return Err(ImportError::BadSchema(format!(
                "column {} is declared twice",
                c.name
            )));
        }
        if let Some(b) = c.bounds {
            if !c.ty.is_numeric() {
                return Err(ImportError::BadSchema(format!(
                    "column {}: bounds only apply to integer or float columns",
                    c.name
                )));
            }
            if !(b.min.is_finite() && b.max.is_finite() && b.min <= b.max) {
                return Err(ImportError::BadSchema(format!(
                    "column {}: bounds must be finite with min ≤ max (got {} .. {})",
                    c.name, b.min, b.max
                )));
            }
        }
    }
    Ok(())
}

fn is_null(cell: &str) -> bool {
    cell.is_empty() || cell.eq_ignore_ascii_case("null")
}

/// Checks a dataset name and its declared columns (imports and sources alike).
pub fn check_declaration(name: &str, columns: &[ColumnSpec]) -> Result<(), ImportError> {
    if !crate::store::valid_dataset_name(name) {
        return Err(ImportError::BadName(name.into()));
    }
    check_schema(columns)
}

/// Parses CSV text into a dataset with the declared columns.
pub fn parse_csv(
    name: &str,
    columns: Vec<ColumnSpec>,
    csv_text: &str,
) -> Result<Dataset, ImportError> {
    check_declaration(name, &columns)?;
    let mut reader = reader(csv_text.as_bytes());
    let mut rows = Rows::new(columns, &mut reader)?;
    let mut record = csv::StringRecord::new();
    while rows.read(&mut reader, &mut record)? {}
    if rows.rows == 0 {
        return Err(ImportError::Empty);
    }
    let (data, n) = rows.take();
    Ok(Dataset {
        schema: DatasetSchema {
            name: name.into(),
            columns: rows.columns,
        },
        columns: data,
        rows: n,
    })
}

/// A CSV reader as every import reads: a header, cells trimmed.
pub(crate) fn reader<R: std::io::Read>(input: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(input)
}

/// The rows of a CSV file as they are parsed into typed columns: the header resolved against
/// the declaration once, then each record checked and appended. [`Rows::take`] hands the
/// rows parsed so far over (a columnar import writes them out a chunk at a time).
pub(crate) struct Rows {
    /// The declared columns.
    pub(crate) columns: Vec<ColumnSpec>,
    /// Position of each declared column in the file.
    positions: Vec<usize>,
    width: usize,
    data: Vec<ColumnData>,
    dicts: Vec<Interner>,
    /// Rows parsed since the last [`Rows::take`].
    pub(crate) rows: usize,
    /// Rows parsed in all.
    pub(crate) total: u64,
}

impl Rows {
    /// Reads and checks the header.
    pub(crate) fn new<R: std::io::Read>(
        columns: Vec<ColumnSpec>,
        reader: &mut csv::Reader<R>,
    ) -> Result<Self, ImportError> {
        let header = reader
            .headers()
            .map_err(|e| ImportError::Header(e.to_string()))?
            .clone();
        let header: Vec<String> = header.iter().map(|h| h.to_ascii_lowercase()).collect();
        let mut positions = Vec::with_capacity(columns.len());
        for c in &columns {
            let p = header.iter().position(|h| *h == c.name).ok_or_else(|| {
                ImportError::Header(format!(
                    "declared column {} is missing (header: {})",
                    c.name,
                    header.join(",")
                ))
            })?;
            positions.push(p);
        }
        if let Some(extra) = header
            .iter()
            .find(|h| !columns.iter().any(|c| &c.name == *h))
        {
            return Err(ImportError::Header(format!(
                "column {extra} is in the file but not declared; declare it or remove it"
            )));
        }
        Ok(Rows {
            data: columns.iter().map(|c| empty_column(c.ty)).collect(),
            dicts: vec![Interner::default(); columns.len()],
            columns,
            positions,
            width: header.len(),
            rows: 0,
            total: 0,
        })
    }

    /// The rows parsed since the last call, and their number; the dictionaries start again.
    pub(crate) fn take(&mut self) -> (Vec<ColumnData>, usize) {
        let fresh = self.columns.iter().map(|c| empty_column(c.ty)).collect();
        self.dicts.iter_mut().for_each(|d| *d = Interner::default());
        let n = std::mem::take(&mut self.rows);
        (std::mem::replace(&mut self.data, fresh), n)
    }

    /// Reads, checks and appends the next record; `false` at the end of the file.
    pub(crate) fn read<R: std::io::Read>(
        &mut self,
        reader: &mut csv::Reader<R>,
        record: &mut csv::StringRecord,
    ) -> Result<bool, ImportError> {
        let more = reader.read_record(record).map_err(|e| ImportError::Row {
            line: e.position().map_or(0, |p| p.line()),
            message: e.to_string(),
        })?;
        if !more {
            return Ok(false);
        }
        let line = record.position().map_or(self.total + 2, |p| p.line());
        let bad = |message: String| ImportError::Row { line, message };
        if record.len() != self.width {
            return Err(bad(format!(
                "expected {} fields, found {}",
                self.width,
                record.len()
            )));
        }
        for (ci, (spec, &pos)) in self.columns.iter().zip(&self.positions).enumerate() {
            let cell = record.get(pos).unwrap_or("");
            let null = is_null(cell);
            if null && (spec.not_null || spec.privacy_unit.is_some()) {
                return Err(bad(format!(
                    "column {} is declared not_null (or is the privacy unit) but the cell is empty or NULL",
                    spec.name
                )));
            }
            let type_err = || {
                bad(format!(
                    "column {}: {cell:?} is not {}",
                    spec.name,
                    article(spec.ty)
                ))
            };
            match &mut self.data[ci] {
                ColumnData::Integer(v) => v.push(if null {
                    None
                } else {
                    Some(cell.parse::<i64>().map_err(|_| type_err())?)
                }),
                ColumnData::Float(v) => {
                    let x = if null {
                        None
                    } else {
                        Some(
                            cell.parse::<f64>()
                                .ok()
                                .filter(|x| x.is_finite())
                                .ok_or_else(type_err)?,
                        )
                    };
                    v.push(x)
                }
                ColumnData::Boolean(v) => v.push(if null {
                    None
                } else {
                    Some(match cell.to_ascii_lowercase().as_str() {
                        "true" | "t" | "1" | "yes" => true,
                        "false" | "f" | "0" | "no" => false,
                        _ => return Err(type_err()),
                    })
                }),
                ColumnData::Text { dict, codes } => codes.push(if null {
                    None
                } else {
                    Some(self.dicts[ci].intern(dict, cell))
                }),
            }
        }
        self.rows += 1;
        self.total += 1;
        Ok(true)
    }
}

/// A declared column with no rows yet.
pub(crate) fn empty_column(ty: ColumnType) -> ColumnData {
    match ty {
        ColumnType::Integer => ColumnData::Integer(Vec::new()),
        ColumnType::Float => ColumnData::Float(Vec::new()),
        ColumnType::Text => ColumnData::Text {
            dict: Vec::new(),
            codes: Vec::new(),
        },
        ColumnType::Boolean => ColumnData::Boolean(Vec::new()),
    }
}

/// The index of a text column's dictionary: each distinct value gets the next code.
#[derive(Clone, Default)]
pub(crate) struct Interner(std::collections::HashMap<String, u32>);

impl Interner {
    /// The code of `value` in `dict`, appending it when it is new.
    pub(crate) fn intern(&mut self, dict: &mut Vec<String>, value: &str) -> u32 {
        if let Some(&c) = self.0.get(value) {
            return c;
        }
        let c = dict.len() as u32;
        dict.push(value.to_string());
        self.0.insert(value.to_string(), c);
        c
    }
}

fn article(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Integer => "an integer",
        ColumnType::Float => "a number",
        ColumnType::Text => "text",
        ColumnType::Boolean => "a boolean (true/false)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_common::schema::Bounds;

    fn cols() -> Vec<ColumnSpec> {
        vec![
            ColumnSpec {
                name: "age".into(),
                ty: ColumnType::Integer,
                bounds: Some(Bounds {
                    min: 0.0,
                    max: 120.0,
                }),
                public_keys: None,
                not_null: false,
                privacy_unit: None,
            },
            ColumnSpec {
                name: "state".into(),
                ty: ColumnType::Text,
                bounds: None,
                public_keys: None,
                not_null: false,
                privacy_unit: None,
            },
            ColumnSpec {
                name: "cost".into(),
                ty: ColumnType::Float,
                bounds: None,
                public_keys: None,
                not_null: false,
                privacy_unit: None,
            },
            ColumnSpec {
                name: "smoker".into(),
                ty: ColumnType::Boolean,
                bounds: None,
                public_keys: None,
                not_null: false,
                privacy_unit: None,
            },
        ]
    }

    #[test]
    fn parses_typed_columns_with_nulls() {
        let ds = parse_csv(
            "p",
            cols(),
            "state,age,cost,smoker\nCA,34,10.5,true\nNY,,NULL,false\nCA,70,3,\n",
        )
        .expect("ok");
        assert_eq!(ds.rows, 3);
        assert_eq!(
            ds.columns[0],
            ColumnData::Integer(vec![Some(34), None, Some(70)])
        );
        assert_eq!(
            ds.columns[1],
            ColumnData::Text {
                dict: vec!["CA".into(), "NY".into()],
                codes: vec![Some(0), Some(1), Some(0)]
            }
        );
        assert_eq!(
            ds.columns[2],
            ColumnData::Float(vec![Some(10.5), None, Some(3.0)])
        );
        assert_eq!(
            ds.columns[3],
            ColumnData::Boolean(vec![Some(true), Some(false), None])
        );
    }

    #[test]
    fn a_bad_row_refuses_the_whole_file_and_names_the_line() {
        let err = parse_csv(
            "p",
            cols(),
            "age,state,cost,smoker\n1,CA,1,true\n2,NY,x,false\n",
        )
        .expect_err("bad");
        assert_eq!(
            err,
            ImportError::Row {
                line: 3,
                message: "column cost: \"x\" is not a number".into()
            }
        );
        let err = parse_csv("p", cols(), "age,state,cost,smoker\n1,CA,1\n").expect_err("short");
        assert!(matches!(err, ImportError::Row { line: 2, .. }), "{err}");
        let mut strict = cols();
        strict[0].not_null = true;
        let err = parse_csv("p", strict, "age,state,cost,smoker\n1,CA,1,t\n,NY,2,f\n")
            .expect_err("null in a not_null column");
        assert!(matches!(err, ImportError::Row { line: 3, .. }), "{err}");
        assert!(err.to_string().contains("not_null"), "{err}");
    }

    #[test]
    fn header_and_names_are_checked() {
        assert!(matches!(
            parse_csv("p", cols(), "age,state,cost\n1,CA,1\n"),
            Err(ImportError::Header(_))
        ));
        assert!(matches!(
            parse_csv("p", cols(), "age,state,cost,smoker,ssn\n1,CA,1,t,9\n"),
            Err(ImportError::Header(_))
        ));
        assert!(matches!(
            parse_csv("Bad Name", cols(), "age\n1\n"),
            Err(ImportError::BadName(_))
        ));
        assert_eq!(
            parse_csv("p", cols(), "age,state,cost,smoker\n"),
            Err(ImportError::Empty)
        );
    }
}
