//! Dataset schemas and in-memory column data: what a node stores and what the catalog shows.
//!
//! The catalog (name, columns, types, row count) is public within the federation; column data
//! never leaves the node that imported it.

use serde::{Deserialize, Serialize};

/// The type of a dataset column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// Signed 64-bit integers.
    Integer,
    /// 64-bit floating point numbers.
    Float,
    /// Text, stored dictionary-encoded.
    Text,
    /// true / false.
    Boolean,
}

impl ColumnType {
    /// Whether SUM / AVG / MIN / MAX make sense on this type.
    pub fn is_numeric(self) -> bool {
        matches!(self, ColumnType::Integer | ColumnType::Float)
    }
}

impl std::fmt::Display for ColumnType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ColumnType::Integer => "integer",
            ColumnType::Float => "float",
            ColumnType::Text => "text",
            ColumnType::Boolean => "boolean",
        })
    }
}

/// Owner-declared bounds of a numeric column. DP clamps every value into them; HE sizes its
/// integer types from them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    /// Smallest value a row may contribute.
    pub min: f64,
    /// Largest value a row may contribute.
    pub max: f64,
}

/// One column as the owner declared it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Column name, as used in SQL (lower case).
    pub name: String,
    /// Declared type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Declared bounds (numeric columns); needed for SUM / AVG / MIN / MAX under DP and HE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounds: Option<Bounds>,
    /// Declared public key domain for GROUP BY: when set, these keys are released without a
    /// noisy threshold (text / boolean / integer columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_keys: Option<Vec<String>>,
    /// Declared `NOT NULL`: import refuses a null cell in this column. DP then knows, without
    /// looking at the data, that the column's non-null count is the dataset's public row count
    /// (or the noisy `COUNT(*)` of a group), so SUM and AVG need no noisy count of their own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_null: bool,
    /// Declares this column the dataset's privacy unit (e.g. `patient_id`): DP releases protect
    /// everything one unit contributes, after bounding each unit's contribution. At most one
    /// column per dataset; its values must not be null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy_unit: Option<ContributionBounds>,
}

/// How much one privacy unit may contribute to a DP release; rows beyond the bounds are left
/// out of the aggregation (each unit keeps its first rows in dataset order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContributionBounds {
    /// Most rows of one unit a release uses (>= 1).
    pub max_rows: u32,
    /// Most GROUP BY groups one unit contributes to (>= 1).
    #[serde(default = "one")]
    pub max_groups: u32,
}

fn one() -> u32 {
    1
}

/// Checks the privacy-unit declarations of a dataset's columns: at most one, on an integer,
/// text or boolean column, with bounds of at least 1.
pub fn check_privacy_unit(columns: &[ColumnSpec]) -> Result<(), String> {
    let units: Vec<&ColumnSpec> = columns
        .iter()
        .filter(|c| c.privacy_unit.is_some())
        .collect();
    if units.len() > 1 {
        let names: Vec<&str> = units.iter().map(|c| c.name.as_str()).collect();
        return Err(format!(
            "columns {} all declare privacy_unit; a dataset has at most one privacy-unit column",
            names.join(", ")
        ));
    }
    if let Some(c) = units.first() {
        if c.ty == ColumnType::Float {
            return Err(format!(
                "column {}: a privacy unit identifies a person or entity; use an integer or text column",
                c.name
            ));
        }
        if let Some(b) = c
            .privacy_unit
            .filter(|b| b.max_rows == 0 || b.max_groups == 0)
        {
            return Err(format!(
                "column {}: privacy_unit bounds must be at least 1 (got max_rows {}, max_groups {})",
                c.name, b.max_rows, b.max_groups
            ));
        }
    }
    Ok(())
}

/// A dataset's schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetSchema {
    /// Dataset name: the SQL table name.
    pub name: String,
    /// Columns in CSV order.
    pub columns: Vec<ColumnSpec>,
}

impl DatasetSchema {
    /// Looks a column up by name (case-insensitive).
    pub fn column(&self, name: &str) -> Option<&ColumnSpec> {
        self.columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// The privacy-unit column, if the owner declared one: (schema index, bounds).
    pub fn privacy_unit(&self) -> Option<(usize, ContributionBounds)> {
        self.columns
            .iter()
            .enumerate()
            .find_map(|(i, c)| c.privacy_unit.map(|b| (i, b)))
    }

    /// Index of a column by name (case-insensitive).
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }
}

/// The values of one column. Nulls are `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ColumnData {
    /// Integer values.
    Integer(Vec<Option<i64>>),
    /// Float values.
    Float(Vec<Option<f64>>),
    /// Dictionary-encoded text: `codes[i]` indexes `dict`.
    Text {
        /// Distinct values, in first-seen order.
        dict: Vec<String>,
        /// One code per row.
        codes: Vec<Option<u32>>,
    },
    /// Boolean values.
    Boolean(Vec<Option<bool>>),
}

impl ColumnData {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            ColumnData::Integer(v) => v.len(),
            ColumnData::Float(v) => v.len(),
            ColumnData::Text { codes, .. } => codes.len(),
            ColumnData::Boolean(v) => v.len(),
        }
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether row `i` is null.
    pub fn is_null(&self, i: usize) -> bool {
        match self {
            ColumnData::Integer(v) => v[i].is_none(),
            ColumnData::Float(v) => v[i].is_none(),
            ColumnData::Text { codes, .. } => codes[i].is_none(),
            ColumnData::Boolean(v) => v[i].is_none(),
        }
    }

    /// Row `i` as a number (integers and floats; booleans as 0/1), `None` for null or text.
    pub fn number(&self, i: usize) -> Option<f64> {
        match self {
            ColumnData::Integer(v) => v[i].map(|x| x as f64),
            ColumnData::Float(v) => v[i],
            ColumnData::Boolean(v) => v[i].map(|b| if b { 1.0 } else { 0.0 }),
            ColumnData::Text { .. } => None,
        }
    }

    /// Row `i` as a group key string, `None` for null.
    pub fn key(&self, i: usize) -> Option<String> {
        match self {
            ColumnData::Integer(v) => v[i].map(|x| x.to_string()),
            ColumnData::Float(v) => v[i].map(|x| x.to_string()),
            ColumnData::Text { dict, codes } => codes[i].map(|c| dict[c as usize].clone()),
            ColumnData::Boolean(v) => v[i].map(|b| b.to_string()),
        }
    }
}

/// A dataset held by a node: schema plus column data (same length in every column).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// Declared schema.
    pub schema: DatasetSchema,
    /// Column data, in schema order.
    pub columns: Vec<ColumnData>,
    /// Number of rows.
    pub rows: usize,
}

impl Dataset {
    /// The data of a column by name.
    pub fn column(&self, name: &str) -> Option<(&ColumnSpec, &ColumnData)> {
        let i = self.schema.column_index(name)?;
        Some((&self.schema.columns[i], &self.columns[i]))
    }
}

/// What the coordinator's catalog holds about a dataset: never rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// Dataset name, unique within its organization.
    pub name: String,
    /// Declared columns (types, bounds, public key domains).
    pub columns: Vec<ColumnSpec>,
    /// Number of rows.
    pub row_count: u64,
    /// How each backend's answers may leave the holding node (its owner's decision).
    #[serde(default)]
    pub release: crate::release::ReleaseModes,
    /// The dataset's privacy budget, when its owner publishes it (`publish_budget` in the
    /// node policy, on by default); `None` when the owner keeps it private.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<PublishedBudget>,
}

/// A dataset's privacy budget as its node publishes it to the catalog: what an analyst needs
/// to know before asking, in ε and δ.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct PublishedBudget {
    /// Total ε the owner allows.
    pub total_epsilon: f64,
    /// Total δ the owner allows.
    pub total_delta: f64,
    /// ε charged by released answers.
    pub spent_epsilon: f64,
    /// δ charged by released answers.
    pub spent_delta: f64,
    /// ε still available (total − spent − held by runs in flight).
    pub remaining_epsilon: f64,
    /// δ still available.
    pub remaining_delta: f64,
}
