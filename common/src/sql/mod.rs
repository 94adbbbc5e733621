//! SQL → plan: parses the SQL subset Prism accepts and turns it into a validated [`Plan`].
//!
//! Only one plain `SELECT` over one dataset is accepted: aggregates (`COUNT`, `SUM`, `AVG`,
//! `MIN`, `MAX`, and `SUM(col * k)`), GROUP BY on plain columns, a WHERE made of column-vs-literal
//! predicates, and `HAVING COUNT(*) >= k`. Everything else is refused with a [`SqlError`] that
//! names the construct and says what is accepted instead.

use std::fmt::Display;

use sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName,
    ObjectNamePart, Select, SelectFlavor, SetExpr, Statement, TableFactor, UnaryOperator, Value,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::plan::{CmpOp, Literal, Plan};
use crate::schema::DatasetSchema;

mod resolve;

use resolve::Ctx;

/// Errors from planning SQL. Messages are lowercase, name the offending construct, and say what
/// is accepted instead.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum SqlError {
    /// The text is not valid SQL, or is empty.
    #[error("sql parse error: {0}")]
    Parse(String),
    /// A valid SQL construct outside the accepted subset.
    #[error("{construct} is not supported{}; {hint}", in_clause(.clause))]
    Unsupported {
        /// The refused construct, e.g. `order by` or `like`.
        construct: String,
        /// The clause it appeared in (`select`, `where`, ...), or empty for the whole query.
        clause: &'static str,
        /// What is accepted instead.
        hint: String,
    },
    /// FROM (or a column qualifier) names a table that is not the dataset being queried.
    #[error("unknown table {table}; this query can only read {dataset}")]
    UnknownTable {
        /// The table as written.
        table: String,
        /// The dataset's name.
        dataset: String,
    },
    /// A column the dataset does not have.
    #[error("unknown column {column} in {dataset}; its columns are {}", .columns.join(", "))]
    UnknownColumn {
        /// The column as written.
        column: String,
        /// The dataset's name.
        dataset: String,
        /// The dataset's columns.
        columns: Vec<String>,
    },
    /// A function, operator or literal applied to a column of the wrong type.
    #[error("{construct}: {reason}")]
    Type {
        /// The offending expression, e.g. `sum(diagnosis)`.
        construct: String,
        /// Why it does not type-check and what would.
        reason: String,
    },
    /// The query is longer or deeper than the planner accepts (see [`MAX_QUERY_TOKENS`],
    /// [`MAX_FILTER_DEPTH`]).
    #[error("query too complex: {what}; {hint}")]
    TooComplex {
        /// Which limit, and by how much.
        what: String,
        /// What to do instead.
        hint: &'static str,
    },
}

impl SqlError {
    /// A stable machine-readable code for the error kind.
    pub fn code(&self) -> &'static str {
        match self {
            SqlError::Parse(_) => "sql_parse_error",
            SqlError::Unsupported { .. } => "sql_unsupported",
            SqlError::UnknownTable { .. } => "unknown_table",
            SqlError::UnknownColumn { .. } => "unknown_column",
            SqlError::Type { .. } => "sql_type_error",
            SqlError::TooComplex { .. } => "query_too_complex",
        }
    }
}

type Result<T> = std::result::Result<T, SqlError>;

fn in_clause(clause: &str) -> String {
    if clause.is_empty() {
        String::new()
    } else {
        format!(" in {clause}")
    }
}

fn unsupported(construct: impl Into<String>, clause: &'static str, hint: &str) -> SqlError {
    SqlError::Unsupported {
        construct: construct.into(),
        clause,
        hint: hint.to_string(),
    }
}

fn type_error(construct: impl Into<String>, reason: impl Into<String>) -> SqlError {
    SqlError::Type {
        construct: construct.into(),
        reason: reason.into(),
    }
}

/// Renders SQL for a message: lower case, except inside single-quoted literals.
fn sql(text: &impl Display) -> String {
    let mut quoted = false;
    let mut out = String::new();
    for c in text.to_string().chars() {
        if quoted {
            out.push(c)
        } else {
            out.extend(c.to_lowercase())
        }
        quoted ^= c == '\'';
    }
    out
}

const ONE_SELECT: &str = "send one plain select over one dataset";
const ONE_TABLE: &str = "query one dataset at a time, e.g. from patients";
const AGG_HINT: &str = "use count(*), count(col), sum(col), sum(col * k), avg, min or max";
const WHERE_HINT: &str = "compare a column with a literal, e.g. age >= 18 or state in ('ca', 'ny')";
const HAVING_HINT: &str = "only having count(*) >= k or count(*) > k is accepted";
const NO_ROWS: &str = "raw rows are never returned; select aggregates such as count(*)";
const SIMPLER: &str =
    "merge comparisons on one column into in (...) or between, or split the query into several";

/// At most this many operators, keywords and names (every token but literals, commas and
/// whitespace) in one query. Checked on the tokens, before anything is parsed: a flat chain
/// (`a AND b AND ...`, `x + 1 + 1 ...`) parses into a tree as deep as it is long, and every
/// walk over that tree (drop, display, planning) recurses; this bounds all of them.
pub const MAX_QUERY_TOKENS: usize = 512;

/// At most this many nested or chained AND / OR / NOT levels in WHERE. Every walk over a plan's
/// predicate (evaluation, HE encoding, DP checks, JSON on the wire and in the stores) recurses
/// once per level; a plan this deep still encodes in well under serde_json's nesting limit of
/// 128, so whatever the planner accepts can also be sent and stored.
pub const MAX_FILTER_DEPTH: usize = 32;

/// The table named in FROM, as written, without checking anything else (the coordinator uses it
/// to find the dataset before it has a schema).
pub fn table_name(sql: &str) -> Result<String> {
    Ok(from_table(&*parse_select(sql)?)?.0)
}

/// Parses and validates `sql` against `schema`, returning the normalized plan.
pub fn plan_query(sql: &str, schema: &DatasetSchema) -> Result<Plan> {
    let select = parse_select(sql)?;
    check_select_extras(&select)?;
    let (table, alias) = from_table(&select)?;
    if !table.eq_ignore_ascii_case(&schema.name) {
        return Err(SqlError::UnknownTable {
            table,
            dataset: schema.name.clone(),
        });
    }
    let ctx = Ctx {
        schema,
        qualifiers: [Some(table), alias].into_iter().flatten().collect(),
    };
    let group_by = ctx.group_by(&select.group_by)?;
    let outputs = ctx.outputs(&select.projection, &group_by)?;
    let filter = select
        .selection
        .as_ref()
        .map(|e| ctx.predicate(e, 0))
        .transpose()?;
    let having_min_count = match &select.having {
        Some(_) if group_by.is_empty() => {
            return Err(unsupported(
                "having without group by",
                "",
                "add a group by, or drop having",
            ));
        }
        Some(e) => Some(having(e)?),
        None => None,
    };
    Ok(Plan {
        dataset: schema.name.clone(),
        outputs,
        filter,
        group_by,
        having_min_count,
    })
}

/// Refuses a query with more than [`MAX_QUERY_TOKENS`] operators, keywords and names.
fn check_length(text: &str) -> Result<()> {
    let tokens = Tokenizer::new(&GenericDialect {}, text)
        .tokenize()
        .map_err(|e| SqlError::Parse(sql(&e)))?;
    let counted = tokens
        .iter()
        .filter(|t| {
            !matches!(
                t,
                Token::Whitespace(_)
                    | Token::Comma
                    | Token::EOF
                    | Token::Number(..)
                    | Token::SingleQuotedString(_)
                    | Token::DoubleQuotedString(_)
                    | Token::NationalStringLiteral(_)
                    | Token::EscapedStringLiteral(_)
                    | Token::HexStringLiteral(_)
            )
        })
        .count();
    if counted > MAX_QUERY_TOKENS {
        return Err(SqlError::TooComplex {
            what: format!(
                "{counted} operators, keywords and names, more than the {MAX_QUERY_TOKENS} accepted"
            ),
            hint: SIMPLER,
        });
    }
    Ok(())
}

/// Parses exactly one statement and returns its SELECT, refusing everything around it.
fn parse_select(text: &str) -> Result<Box<Select>> {
    check_length(text)?;
    let mut statements = Parser::parse_sql(&GenericDialect {}, text).map_err(|e| match e {
        ParserError::TokenizerError(s) | ParserError::ParserError(s) => SqlError::Parse(sql(&s)),
        ParserError::RecursionLimitExceeded => SqlError::TooComplex {
            what: "parentheses, function calls or unary operators nested more deeply than the \
                   parser accepts"
                .to_string(),
            hint: "remove redundant parentheses and repeated signs or nots",
        },
    })?;
    let statement = match statements.len() {
        0 => return Err(SqlError::Parse(format!("empty query; {ONE_SELECT}"))),
        1 => statements.remove(0),
        n => return Err(unsupported(format!("{n} statements"), "", ONE_SELECT)),
    };
    let kind = |s: &Statement| {
        let text = s.to_string();
        format!(
            "{} statement",
            sql(&text.split_whitespace().next().unwrap_or("unknown"))
        )
    };
    let Statement::Query(q) = statement else {
        return Err(unsupported(kind(&statement), "", ONE_SELECT));
    };
    let refused = [
        (q.with.is_some(), "with (common table expressions)"),
        (q.order_by.is_some(), "order by"),
        (q.limit_clause.is_some(), "limit / offset"),
        (q.fetch.is_some(), "fetch"),
        (!q.locks.is_empty(), "for update / for share"),
        (q.for_clause.is_some(), "for xml / for json"),
        (q.settings.is_some(), "settings"),
        (q.format_clause.is_some(), "format"),
        (!q.pipe_operators.is_empty(), "pipe operators"),
    ];
    if let Some((_, construct)) = refused.iter().find(|(bad, _)| *bad) {
        return Err(unsupported(*construct, "", ONE_SELECT));
    }
    match *q.body {
        SetExpr::Select(select) => Ok(select),
        SetExpr::SetOperation { op, .. } => Err(unsupported(sql(&op), "", ONE_SELECT)),
        SetExpr::Query(_) => Err(unsupported("parenthesized subquery", "", ONE_SELECT)),
        SetExpr::Values(_) => Err(unsupported("values", "", ONE_SELECT)),
        SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) => {
            Err(unsupported(kind(&s), "", ONE_SELECT))
        }
        SetExpr::Table(_) => Err(unsupported("table statement", "", ONE_SELECT)),
    }
}

/// Refuses the SELECT modifiers outside the subset (DISTINCT, TOP, INTO, QUALIFY, ...).
fn check_select_extras(s: &Select) -> Result<()> {
    let refused = [
        (
            s.distinct.is_some(),
            "distinct",
            "group by the column and count(*) instead",
        ),
        (s.top.is_some(), "top", ONE_SELECT),
        (s.exclude.is_some(), "exclude", ONE_SELECT),
        (s.into.is_some(), "select into", ONE_SELECT),
        (!s.lateral_views.is_empty(), "lateral view", ONE_SELECT),
        (s.prewhere.is_some(), "prewhere", "use where"),
        (!s.cluster_by.is_empty(), "cluster by", ONE_SELECT),
        (!s.distribute_by.is_empty(), "distribute by", ONE_SELECT),
        (!s.sort_by.is_empty(), "sort by", ONE_SELECT),
        (
            !s.named_window.is_empty(),
            "window",
            "aggregate over groups with group by",
        ),
        (s.qualify.is_some(), "qualify", ONE_SELECT),
        (
            s.value_table_mode.is_some(),
            "select as struct / value",
            ONE_SELECT,
        ),
        (s.connect_by.is_some(), "connect by", ONE_SELECT),
        (
            s.flavor != SelectFlavor::Standard,
            "from-first select",
            "write select ... from ...",
        ),
    ];
    match refused.iter().find(|(bad, _, _)| *bad) {
        Some((_, construct, hint)) => Err(unsupported(*construct, "", hint)),
        None => Ok(()),
    }
}

/// The single table of FROM and its alias, as written.
fn from_table(select: &Select) -> Result<(String, Option<String>)> {
    let table = match select.from.as_slice() {
        [] => return Err(unsupported("select without from", "", ONE_TABLE)),
        [t] if t.joins.is_empty() => &t.relation,
        [_] => return Err(unsupported("join", "from", ONE_TABLE)),
        _ => return Err(unsupported("multiple tables", "from", ONE_TABLE)),
    };
    #[rustfmt::skip]
    let TableFactor::Table {
        name, alias, args, with_hints, version, with_ordinality, partitions, json_path, sample,
        index_hints,
    } = table
    else {
        let construct = match table {
            TableFactor::Derived { .. } => "subquery".to_string(),
            other => format!("table expression {}", sql(other)),
        };
        return Err(unsupported(construct, "from", ONE_TABLE));
    };
    if args.is_some() {
        return Err(unsupported(
            format!("table function {}", sql(name)),
            "from",
            ONE_TABLE,
        ));
    }
    if !with_hints.is_empty()
        || version.is_some()
        || *with_ordinality
        || !partitions.is_empty()
        || json_path.is_some()
        || sample.is_some()
        || !index_hints.is_empty()
    {
        return Err(unsupported(
            format!("table modifiers on {}", sql(name)),
            "from",
            ONE_TABLE,
        ));
    }
    let Some(table) = single_ident(name) else {
        let construct = format!("qualified table name {}", sql(name));
        return Err(unsupported(construct, "from", ONE_TABLE));
    };
    match alias {
        Some(a) if !a.columns.is_empty() => Err(unsupported(
            format!("column aliases in {}", sql(a)),
            "from",
            ONE_TABLE,
        )),
        Some(a) => Ok((table, Some(a.name.value.clone()))),
        None => Ok((table, None)),
    }
}

/// The name of a one-part object name (`patients`, `count`), as written.
fn single_ident(name: &ObjectName) -> Option<String> {
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(ident)] => Some(ident.value.clone()),
        _ => None,
    }
}

/// Strips redundant parentheses.
fn unnest(mut e: &Expr) -> &Expr {
    while let Expr::Nested(inner) = e {
        e = inner;
    }
    e
}

/// A short name for an expression in refusal messages.
fn describe(e: &Expr) -> String {
    match unnest(e) {
        Expr::Function(f) => format!("function {}", sql(&f.name)),
        Expr::Subquery(_) | Expr::InSubquery { .. } | Expr::Exists { .. } => "subquery".into(),
        Expr::Like { .. } => "like".into(),
        Expr::ILike { .. } => "ilike".into(),
        Expr::SimilarTo { .. } => "similar to".into(),
        Expr::RLike { .. } => "regexp / rlike".into(),
        Expr::Case { .. } => "case".into(),
        Expr::Cast { .. } => "cast".into(),
        Expr::BinaryOp { op, .. } => format!("operator {}", sql(op)),
        Expr::Value(_) => format!("constant {}", sql(e)),
        other => format!("expression {}", sql(other)),
    }
}

/// A number literal: an integer if it has no fraction or exponent, else a float.
fn number(text: &str) -> Result<Literal> {
    if let Ok(i) = text.parse::<i64>() {
        Ok(Literal::Int(i))
    } else if text.contains(['.', 'e', 'E'])
        && let Ok(f) = text.parse::<f64>()
    {
        if !f.is_finite() {
            return Err(type_error(
                sql(&text),
                "number literal out of range; numbers must fit a 64-bit float (at most about 1.7e308)",
            ));
        }
        Ok(Literal::Float(f))
    } else {
        Err(type_error(
            text,
            "integer literal out of range; integers are 64-bit",
        ))
    }
}

/// A literal constant (numbers, optionally negated; 'text'; true / false); `Ok(None)` if `e` is
/// not a literal at all.
fn literal(e: &Expr, clause: &'static str) -> Result<Option<Literal>> {
    match unnest(e) {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => number(&n.to_string()).map(Some),
            Value::SingleQuotedString(s) => Ok(Some(Literal::Text(s.clone()))),
            Value::Boolean(b) => Ok(Some(Literal::Bool(*b))),
            Value::Null => Err(unsupported(
                "null literal",
                clause,
                "use is null or is not null",
            )),
            other => {
                let hint = "use numbers, 'single-quoted text', true or false";
                Err(unsupported(format!("literal {}", sql(other)), clause, hint))
            }
        },
        Expr::UnaryOp {
            op: op @ (UnaryOperator::Minus | UnaryOperator::Plus),
            expr,
        } => {
            let minus = *op == UnaryOperator::Minus;
            if let Expr::Value(v) = unnest(expr)
                && let Value::Number(n, _) = &v.value
            {
                return number(&format!("{}{n}", if minus { "-" } else { "" })).map(Some);
            }
            match literal(expr, clause)? {
                Some(Literal::Int(i)) if minus => match i.checked_neg() {
                    Some(i) => Ok(Some(Literal::Int(i))),
                    None => Err(type_error(sql(e), "integer literal out of range")),
                },
                Some(Literal::Float(f)) if minus => Ok(Some(Literal::Float(-f))),
                Some(l @ (Literal::Int(_) | Literal::Float(_))) => Ok(Some(l)),
                Some(_) => Err(type_error(sql(e), "unary minus and plus need a number")),
                None => Ok(None),
            }
        }
        _ => Ok(None),
    }
}

fn cmp_op(op: &BinaryOperator) -> Option<CmpOp> {
    Some(match op {
        BinaryOperator::Eq => CmpOp::Eq,
        BinaryOperator::NotEq => CmpOp::NotEq,
        BinaryOperator::Lt => CmpOp::Lt,
        BinaryOperator::LtEq => CmpOp::LtEq,
        BinaryOperator::Gt => CmpOp::Gt,
        BinaryOperator::GtEq => CmpOp::GtEq,
        _ => return None,
    })
}

/// `a op b` ⇔ `b flip(op) a`.
fn flip(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::LtEq => CmpOp::GtEq,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::GtEq => CmpOp::LtEq,
        eq => eq,
    }
}

/// Whether `e` is exactly `COUNT(*)`.
fn is_count_star(e: &Expr) -> bool {
    let Expr::Function(f) = unnest(e) else {
        return false;
    };
    let FunctionArguments::List(list) = &f.args else {
        return false;
    };
    single_ident(&f.name).is_some_and(|n| n.eq_ignore_ascii_case("count"))
        && f.over.is_none()
        && f.filter.is_none()
        && f.within_group.is_empty()
        && matches!(f.parameters, FunctionArguments::None)
        && list.duplicate_treatment.is_none()
        && list.clauses.is_empty()
        && matches!(
            list.args.as_slice(),
            [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)]
        )
}

/// `HAVING COUNT(*) >= k` (or `> k`, or flipped) → the minimum group count.
fn having(e: &Expr) -> Result<u64> {
    let construct = format!("having {}", sql(e));
    let refuse = || unsupported(construct.clone(), "", HAVING_HINT);
    let Expr::BinaryOp { left, op, right } = unnest(e) else {
        return Err(refuse());
    };
    let op = cmp_op(op).ok_or_else(refuse)?;
    let (k, op) = match (is_count_star(left), is_count_star(right)) {
        (true, false) => (right, op),
        (false, true) => (left, flip(op)),
        _ => return Err(refuse()),
    };
    let k = match literal(k, "having")? {
        Some(Literal::Int(k)) if k >= 0 => k.unsigned_abs(),
        Some(_) => {
            let reason = "the minimum count must be a non-negative integer";
            return Err(type_error(construct.clone(), reason));
        }
        None => return Err(refuse()),
    };
    match op {
        CmpOp::GtEq => Ok(k),
        CmpOp::Gt => k
            .checked_add(1)
            .ok_or_else(|| type_error(construct.clone(), "too large")),
        _ => Err(refuse()),
    }
}

#[cfg(test)]
mod tests;
