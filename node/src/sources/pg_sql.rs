//! The SQL the node sends a PostgreSQL source: pure text building, no I/O.
//!
//! Identifiers (the table, the declared columns) come from the owner's registration and are
//! always double-quoted; every constant of the analyst's WHERE is a bind parameter (`$n`),
//! never text in the statement. Each statement is an aggregate: the rows stay in the database.
//!
//! The WHERE keeps the semantics of [`prism_common::eval`] (SQL three-valued logic; numbers
//! compared as float8, booleans as 0 / 1; ordering comparisons on text are false), and the
//! clamped sums are those of the DP engine (values rounded to the column's fixed-point unit,
//! clamped to the declared bounds in that unit, nulls skipped).

use prism_common::dp::{Measure, Pushdown};
use prism_common::plan::{CmpOp, Literal, Predicate};
use prism_common::schema::{ColumnType, DatasetSchema};

/// A bind parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// A float8 constant.
    Float(f64),
    /// A text constant.
    Text(String),
}

/// A statement and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// SQL text with `$n` placeholders.
    pub sql: String,
    /// The values of `$1`, `$2`, …
    pub params: Vec<Param>,
}

/// `"name"`, with embedded quotes doubled.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// A table reference `schema.table` or `table`, each part quoted.
pub fn table_ref(table: &str) -> String {
    match table.split_once('.') {
        Some((schema, name)) => format!("{}.{}", quote(schema), quote(name)),
        None => quote(table),
    }
}

/// The `(schema, table)` parts of a table reference (`None`: the search path's schema).
pub fn table_parts(table: &str) -> (Option<&str>, &str) {
    match table.split_once('.') {
        Some((schema, name)) => (Some(schema), name),
        None => (None, table),
    }
}

fn sql_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Integer => "int8",
        ColumnType::Float => "float8",
        ColumnType::Text => "text",
        ColumnType::Boolean => "bool",
    }
}

struct Builder<'a> {
    schema: &'a DatasetSchema,
    params: Vec<Param>,
}

impl Builder<'_> {
    fn column(&self, name: &str) -> Result<(String, ColumnType), String> {
        let spec = self
            .schema
            .column(name)
            .ok_or_else(|| format!("unknown column {name}"))?;
        Ok((quote(&spec.name), spec.ty))
    }

    fn param(&mut self, p: Param) -> String {
        let ty = match p {
            Param::Float(_) => "float8",
            Param::Text(_) => "text",
        };
        self.params.push(p);
        format!("${}::{ty}", self.params.len())
    }

    /// The column as the comparison operand, and the constant as a parameter.
    fn operands(&mut self, column: &str, lit: &Literal) -> Result<(String, String), String> {
        let (col, ty) = self.column(column)?;
        let mismatch = || format!("column {column}: cannot compare a {ty} column with {lit:?}");
        Ok(match (ty, lit) {
            (ColumnType::Text, Literal::Text(s)) => {
                (format!("{col}::text"), self.param(Param::Text(s.clone())))
            }
            (ColumnType::Boolean, Literal::Bool(b)) => (
                format!("({col}::int)::float8"),
                self.param(Param::Float(if *b { 1.0 } else { 0.0 })),
            ),
            (ColumnType::Integer | ColumnType::Float, Literal::Int(i)) => (
                format!("{col}::float8"),
                self.param(Param::Float(*i as f64)),
            ),
            (ColumnType::Integer | ColumnType::Float, Literal::Float(f)) => {
                (format!("{col}::float8"), self.param(Param::Float(*f)))
            }
            _ => return Err(mismatch()),
        })
    }

    /// Unknown on a null row, else `value` (what the engine does for ordering on text).
    fn constant(&self, column: &str, value: bool) -> Result<String, String> {
        let (col, _) = self.column(column)?;
        Ok(format!(
            "(CASE WHEN {col} IS NULL THEN NULL::bool ELSE {value} END)"
        ))
    }

    fn predicate(&mut self, p: &Predicate) -> Result<String, String> {
        Ok(match p {
            Predicate::Compare { column, op, value } => {
                let text = self.column(column)?.1 == ColumnType::Text;
                if text && !matches!(op, CmpOp::Eq | CmpOp::NotEq) {
                    return self.constant(column, false);
                }
                let (col, val) = self.operands(column, value)?;
                let op = match op {
                    CmpOp::Eq => "=",
                    CmpOp::NotEq => "<>",
                    CmpOp::Lt => "<",
                    CmpOp::LtEq => "<=",
                    CmpOp::Gt => ">",
                    CmpOp::GtEq => ">=",
                };
                format!("({col} {op} {val})")
            }
            Predicate::In {
                column,
                values,
                negated,
            } => {
                if values.is_empty() {
                    return self.constant(column, *negated);
                }
                let mut col = String::new();
                let mut vals = Vec::with_capacity(values.len());
                for v in values {
                    let (c, p) = self.operands(column, v)?;
                    col = c;
                    vals.push(p);
                }
                let not = if *negated { "NOT " } else { "" };
                format!("({col} {not}IN ({}))", vals.join(", "))
            }
            Predicate::Between {
                column,
                low,
                high,
                negated,
            } => {
                if self.column(column)?.1 == ColumnType::Text {
                    return self.constant(column, *negated);
                }
                let (col, lo) = self.operands(column, low)?;
                let (_, hi) = self.operands(column, high)?;
                let not = if *negated { "NOT " } else { "" };
                format!("({col} {not}BETWEEN {lo} AND {hi})")
            }
            Predicate::IsNull { column, negated } => {
                let (col, _) = self.column(column)?;
                let not = if *negated { "NOT " } else { "" };
                format!("({col} IS {not}NULL)")
            }
            Predicate::And(a, b) => format!("({} AND {})", self.predicate(a)?, self.predicate(b)?),
            Predicate::Or(a, b) => format!("({} OR {})", self.predicate(a)?, self.predicate(b)?),
            Predicate::Not(a) => format!("(NOT {})", self.predicate(a)?),
        })
    }

    fn measure(&self, m: &Measure) -> Result<String, String> {
        Ok(match m {
            Measure::Rows => "count(*)::text".to_string(),
            Measure::NonNull { column } => format!("count({})::text", self.column(column)?.0),
            Measure::ClampedSum {
                column,
                ty,
                unit,
                lo,
                hi,
                center,
            } => {
                let (col, _) = self.column(column)?;
                // Rust's `(x * unit).round()` (half away from zero) on the float8 product,
                // which is the same IEEE product the engine computes in memory.
                let units = match ty {
                    ColumnType::Integer if *unit == 1 => format!("{col}::int8"),
                    ColumnType::Integer | ColumnType::Float => format!(
                        "(sign({col}::float8 * {unit}) * floor(abs({col}::float8 * {unit}) + 0.5))"
                    ),
                    _ => return Err(format!("column {column} is not numeric")),
                };
                // CASE: GREATEST / LEAST skip nulls, so a null would become a bound.
                format!(
                    "coalesce(sum(CASE WHEN {col} IS NULL THEN NULL \
                     ELSE LEAST(GREATEST({units}, {lo}), {hi})::int8 - ({center}) END), 0)::text"
                )
            }
        })
    }
}

/// The one aggregate statement of a pushed-down query: group keys first (cast to the declared
/// types), then one text-encoded exact value per measure.
pub fn aggregate(
    table: &str,
    schema: &DatasetSchema,
    filter: Option<&Predicate>,
    push: &Pushdown,
) -> Result<Statement, String> {
    let mut b = Builder {
        schema,
        params: Vec::new(),
    };
    let mut select = Vec::new();
    for k in &push.group_by {
        let (col, ty) = b.column(k)?;
        select.push(format!("{col}::{}", sql_type(ty)));
    }
    for m in &push.measures {
        select.push(b.measure(m)?);
    }
    let filter = filter.map(|p| b.predicate(p)).transpose()?;
    let mut sql = format!("SELECT {} FROM ", select.join(", "));
    match &push.unit {
        None => {
            sql.push_str(&table_ref(table));
            if let Some(w) = filter {
                sql.push_str(" WHERE ");
                sql.push_str(&w);
            }
        }
        Some(u) => {
            // Contribution bounding inside the database: of each unit's selected rows, those
            // of its first `max_groups` groups in key order, at most `max_rows` of them. The
            // window functions look at one unit's rows only (PARTITION BY the unit).
            let unit = b.column(&u.column)?.0;
            let order = if push.group_by.is_empty() {
                String::new()
            } else {
                let keys = push
                    .group_by
                    .iter()
                    .map(|k| b.column(k).map(|c| c.0))
                    .collect::<Result<Vec<_>, _>>()?;
                format!(" ORDER BY {}", keys.join(", "))
            };
            let mut inner = format!(
                "SELECT *, dense_rank() OVER (PARTITION BY {unit}{order}) AS \"prism_group_rank\", \
                 row_number() OVER (PARTITION BY {unit}{order}) AS \"prism_row_rank\" FROM {} \
                 WHERE {unit} IS NOT NULL",
                table_ref(table)
            );
            if let Some(w) = filter {
                inner.push_str(" AND ");
                inner.push_str(&w);
            }
            sql.push_str(&format!(
                "({inner}) AS \"prism_bounded\" WHERE \"prism_group_rank\" <= {} AND \
                 \"prism_row_rank\" <= {}",
                u.max_groups, u.max_rows
            ));
        }
    }
    if !push.group_by.is_empty() {
        let by: Vec<String> = (1..=push.group_by.len()).map(|i| i.to_string()).collect();
        sql.push_str(" GROUP BY ");
        sql.push_str(&by.join(", "));
    }
    Ok(Statement {
        sql,
        params: b.params,
    })
}

/// The row count and, per `not_null` column, its number of nulls: what registration and
/// refresh read.
pub fn census(table: &str, schema: &DatasetSchema) -> Statement {
    let mut select = vec!["count(*)::text".to_string()];
    for c in schema.columns.iter().filter(|c| c.not_null) {
        select.push(format!("(count(*) - count({}))::text", quote(&c.name)));
    }
    Statement {
        sql: format!("SELECT {} FROM {}", select.join(", "), table_ref(table)),
        params: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_common::schema::{Bounds, ColumnSpec};

    fn schema() -> DatasetSchema {
        let col = |name: &str, ty, bounds| ColumnSpec {
            name: name.into(),
            ty,
            bounds,
            public_keys: None,
            not_null: false,
            privacy_unit: None,
        };
        DatasetSchema {
            name: "p".into(),
            columns: vec![
                col(
                    "age",
                    ColumnType::Integer,
                    Some(Bounds {
                        min: 0.0,
                        max: 120.0,
                    }),
                ),
                col("state", ColumnType::Text, None),
                col("cost", ColumnType::Float, None),
            ],
        }
    }

    #[test]
    fn constants_are_parameters_and_identifiers_are_quoted() {
        let push = Pushdown {
            unit: None,
            group_by: vec!["state".into()],
            measures: vec![
                Measure::Rows,
                Measure::ClampedSum {
                    column: "age".into(),
                    ty: ColumnType::Integer,
                    unit: 1,
                    lo: 0,
                    hi: 120,
                    center: 60,
                },
                Measure::NonNull {
                    column: "age".into(),
                },
            ],
        };
        let evil = "x'); DROP TABLE p; --".to_string();
        let filter = Predicate::And(
            Box::new(Predicate::Compare {
                column: "state".into(),
                op: CmpOp::Eq,
                value: Literal::Text(evil.clone()),
            }),
            Box::new(Predicate::Between {
                column: "age".into(),
                low: Literal::Int(18),
                high: Literal::Float(65.5),
                negated: false,
            }),
        );
        let st = aggregate("public.pat\"ients", &schema(), Some(&filter), &push).expect("sql");
        assert_eq!(
            st.sql,
            "SELECT \"state\"::text, count(*)::text, coalesce(sum(CASE WHEN \"age\" IS NULL THEN \
             NULL ELSE LEAST(GREATEST(\"age\"::int8, 0), 120)::int8 - (60) END), 0)::text, \
             count(\"age\")::text FROM \"public\".\"pat\"\"ients\" WHERE ((\"state\"::text = \
             $1::text) AND (\"age\"::float8 BETWEEN $2::float8 AND $3::float8)) GROUP BY 1"
        );
        assert_eq!(
            st.params,
            vec![Param::Text(evil), Param::Float(18.0), Param::Float(65.5)]
        );
    }

    #[test]
    fn a_privacy_unit_is_bounded_by_window_functions_over_each_unit() {
        let push = Pushdown {
            unit: Some(prism_common::dp::UnitBound {
                column: "state".into(),
                max_rows: 3,
                max_groups: 2,
            }),
            group_by: vec!["cost".into()],
            measures: vec![Measure::Rows],
        };
        let filter = Predicate::IsNull {
            column: "age".into(),
            negated: true,
        };
        let st = aggregate("p", &schema(), Some(&filter), &push).expect("sql");
        assert_eq!(
            st.sql,
            "SELECT \"cost\"::float8, count(*)::text FROM (SELECT *, dense_rank() OVER \
             (PARTITION BY \"state\" ORDER BY \"cost\") AS \"prism_group_rank\", row_number() \
             OVER (PARTITION BY \"state\" ORDER BY \"cost\") AS \"prism_row_rank\" FROM \"p\" \
             WHERE \"state\" IS NOT NULL AND (\"age\" IS NOT NULL)) AS \"prism_bounded\" WHERE \
             \"prism_group_rank\" <= 2 AND \"prism_row_rank\" <= 3 GROUP BY 1"
        );
    }

    #[test]
    fn a_type_mismatch_or_an_unknown_column_is_refused() {
        let push = Pushdown {
            unit: None,
            group_by: vec![],
            measures: vec![Measure::Rows],
        };
        let bad = Predicate::Compare {
            column: "age".into(),
            op: CmpOp::Eq,
            value: Literal::Text("1".into()),
        };
        assert!(aggregate("p", &schema(), Some(&bad), &push).is_err());
        let unknown = Predicate::IsNull {
            column: "ssn".into(),
            negated: false,
        };
        assert!(aggregate("p", &schema(), Some(&unknown), &push).is_err());
    }
}
