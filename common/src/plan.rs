//! The query model: a validated, normalized plan for the SQL subset Prism accepts.
//!
//! `sql::plan_query` turns SQL text into a [`Plan`]; backends execute plans, never SQL.

use serde::{Deserialize, Serialize};

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AggFunc {
    /// `COUNT(*)` (column `None`) or `COUNT(col)` (non-null values).
    Count,
    /// `SUM(col)`.
    Sum,
    /// `AVG(col)`.
    Avg,
    /// `MIN(col)`.
    Min,
    /// `MAX(col)`.
    Max,
}

/// One aggregate of the SELECT list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// The function.
    pub func: AggFunc,
    /// The column; `None` only for `COUNT(*)`.
    pub column: Option<String>,
    /// A constant multiplier, `SUM(col * k)` (HE weighted sums); `None` for plain aggregates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    /// The output column name: the SQL alias, or e.g. `count`, `sum_age`, `avg_age`.
    pub alias: String,
}

/// A literal constant in a predicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Literal {
    /// Boolean.
    Bool(bool),
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// Text.
    Text(String),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<>` or `!=`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
}

/// A WHERE predicate over one row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Predicate {
    /// `col op literal`
    Compare {
        /// Column name.
        column: String,
        /// Operator.
        op: CmpOp,
        /// Constant.
        value: Literal,
    },
    /// `col [NOT] IN (v, ...)`
    In {
        /// Column name.
        column: String,
        /// Constants.
        values: Vec<Literal>,
        /// `NOT IN`.
        negated: bool,
    },
    /// `col [NOT] BETWEEN low AND high` (inclusive)
    Between {
        /// Column name.
        column: String,
        /// Lower bound.
        low: Literal,
        /// Upper bound.
        high: Literal,
        /// `NOT BETWEEN`.
        negated: bool,
    },
    /// `col IS [NOT] NULL`
    IsNull {
        /// Column name.
        column: String,
        /// `IS NOT NULL`.
        negated: bool,
    },
    /// `a AND b`
    And(Box<Predicate>, Box<Predicate>),
    /// `a OR b`
    Or(Box<Predicate>, Box<Predicate>),
    /// `NOT a`
    Not(Box<Predicate>),
}

impl Predicate {
    /// The columns the predicate reads, each once, in first-mention order.
    pub fn columns(&self) -> Vec<&str> {
        fn walk<'a>(p: &'a Predicate, out: &mut Vec<&'a str>) {
            match p {
                Predicate::Compare { column, .. }
                | Predicate::In { column, .. }
                | Predicate::Between { column, .. }
                | Predicate::IsNull { column, .. } => {
                    if !out.iter().any(|c| c.eq_ignore_ascii_case(column)) {
                        out.push(column);
                    }
                }
                Predicate::And(a, b) | Predicate::Or(a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
                Predicate::Not(a) => walk(a, out),
            }
        }
        let mut out = Vec::new();
        walk(self, &mut out);
        out
    }
}

/// One output column of the SELECT list, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// A GROUP BY key column.
    Key(String),
    /// An aggregate.
    Aggregate(Aggregate),
}

/// A validated query plan over one dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Dataset (table) name.
    pub dataset: String,
    /// SELECT list in order.
    pub outputs: Vec<Output>,
    /// WHERE, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Predicate>,
    /// GROUP BY columns, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_by: Vec<String>,
    /// `HAVING COUNT(*) >= k`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub having_min_count: Option<u64>,
}

impl Plan {
    /// The aggregates of the SELECT list, in order.
    pub fn aggregates(&self) -> impl Iterator<Item = &Aggregate> {
        self.outputs.iter().filter_map(|o| match o {
            Output::Aggregate(a) => Some(a),
            Output::Key(_) => None,
        })
    }

    /// Output column names, in order.
    pub fn column_names(&self) -> Vec<String> {
        self.outputs
            .iter()
            .map(|o| match o {
                Output::Key(k) => k.clone(),
                Output::Aggregate(a) => a.alias.clone(),
            })
            .collect()
    }
}

/// A tabular answer: column names and rows of JSON values (numbers, strings, null).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, each as long as `columns`.
    pub rows: Vec<Vec<serde_json::Value>>,
}
