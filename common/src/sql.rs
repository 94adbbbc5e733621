//! SQL → plan: parses the SQL subset Prism accepts and turns it into a validated [`Plan`].
//!
//! Only one plain `SELECT` over one dataset is accepted: aggregates (`COUNT`, `SUM`, `AVG`,
//! `MIN`, `MAX`, and `SUM(col * k)`), GROUP BY on plain columns, a WHERE made of column-vs-literal
//! predicates, and `HAVING COUNT(*) >= k`. Everything else is refused with a [`SqlError`] that
//! names the construct and says what is accepted instead.

use std::fmt::Display;

use sqlparser::ast::{
    BinaryOperator, DuplicateTreatment, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArguments, GroupByExpr, ObjectName, ObjectNamePart, Select, SelectFlavor, SelectItem,
    SetExpr, Statement, TableFactor, UnaryOperator, Value,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::plan::{AggFunc, Aggregate, CmpOp, Literal, Output, Plan, Predicate};
use crate::schema::{ColumnSpec, ColumnType, DatasetSchema};

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

/// Name resolution and type checking against the dataset.
struct Ctx<'a> {
    schema: &'a DatasetSchema,
    /// Names a column may be qualified with: the table name and its alias.
    qualifiers: Vec<String>,
}

impl<'a> Ctx<'a> {
    /// Resolves a column reference; `Ok(None)` if `e` is not a column reference at all.
    fn column(&self, e: &Expr) -> Result<Option<&'a ColumnSpec>> {
        let name = match unnest(e) {
            Expr::Identifier(ident) => ident,
            Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [q, c]
                    if self
                        .qualifiers
                        .iter()
                        .any(|t| t.eq_ignore_ascii_case(&q.value)) =>
                {
                    c
                }
                [q, _] => {
                    let (table, dataset) = (q.value.clone(), self.schema.name.clone());
                    return Err(SqlError::UnknownTable { table, dataset });
                }
                _ => {
                    let hint = "write column or table.column";
                    return Err(unsupported(format!("qualified name {}", sql(e)), "", hint));
                }
            },
            _ => return Ok(None),
        };
        match self.schema.column(&name.value) {
            Some(spec) => Ok(Some(spec)),
            None => Err(SqlError::UnknownColumn {
                column: name.value.clone(),
                dataset: self.schema.name.clone(),
                columns: self.schema.columns.iter().map(|c| c.name.clone()).collect(),
            }),
        }
    }

    /// The GROUP BY columns, deduplicated, in order.
    fn group_by(&self, g: &GroupByExpr) -> Result<Vec<String>> {
        let hint = "group by plain column names, e.g. group by state";
        let exprs = match g {
            GroupByExpr::All(_) => return Err(unsupported("group by all", "", hint)),
            GroupByExpr::Expressions(_, modifiers) if !modifiers.is_empty() => {
                return Err(unsupported(
                    "group by modifiers (rollup, cube, totals)",
                    "",
                    hint,
                ));
            }
            GroupByExpr::Expressions(exprs, _) => exprs,
        };
        let mut keys: Vec<String> = Vec::new();
        for e in exprs {
            let Some(col) = self.column(e)? else {
                let construct = match unnest(e) {
                    Expr::Value(_) => format!("positional reference {}", sql(e)),
                    other => describe(other),
                };
                return Err(unsupported(construct, "group by", hint));
            };
            if col.ty == ColumnType::Float {
                let reason = format!(
                    "{}; group by needs an integer, text or boolean column",
                    is_a(col)
                );
                return Err(type_error(format!("group by {}", col.name), reason));
            }
            if !keys.contains(&col.name) {
                keys.push(col.name.clone());
            }
        }
        Ok(keys)
    }

    /// The SELECT list: group keys and aggregates, with unique output names.
    fn outputs(&self, items: &[SelectItem], group_by: &[String]) -> Result<Vec<Output>> {
        let mut outputs = Vec::new();
        for item in items {
            let (e, alias) = match item {
                SelectItem::UnnamedExpr(e) => (e, None),
                SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
                SelectItem::Wildcard(_) => return Err(unsupported("select *", "", NO_ROWS)),
                SelectItem::QualifiedWildcard(kind, _) => {
                    return Err(unsupported(format!("select {}", sql(kind)), "", NO_ROWS));
                }
            };
            if let Some(col) = self.column(e)? {
                outputs.push(self.key(col, alias.is_some(), group_by, &outputs)?);
                continue;
            }
            let Expr::Function(f) = unnest(e) else {
                return Err(unsupported(describe(e), "select", AGG_HINT));
            };
            let mut agg = self.aggregate(f)?;
            agg.alias = alias.unwrap_or(agg.alias);
            outputs.push(Output::Aggregate(agg));
        }
        if !outputs.iter().any(|o| matches!(o, Output::Aggregate(_))) {
            let hint = "add an aggregate such as count(*)";
            return Err(unsupported("a select list without aggregates", "", hint));
        }
        // Keys keep their names; colliding aggregate names get `_2`, `_3`, ...
        let mut taken: Vec<String> = group_by.iter().map(|k| k.to_lowercase()).collect();
        for out in &mut outputs {
            if let Output::Aggregate(a) = out {
                let base = a.alias.clone();
                for n in 2.. {
                    if !taken.contains(&a.alias.to_lowercase()) {
                        break;
                    }
                    a.alias = format!("{base}_{n}");
                }
                taken.push(a.alias.to_lowercase());
            }
        }
        Ok(outputs)
    }

    /// A bare column of the SELECT list: allowed only as a GROUP BY key.
    fn key(
        &self,
        col: &ColumnSpec,
        aliased: bool,
        group_by: &[String],
        outputs: &[Output],
    ) -> Result<Output> {
        let name = &col.name;
        let refuse = |construct: String, hint: &str| Err(unsupported(construct, "select", hint));
        if group_by.is_empty() {
            let hint = format!(
                "raw rows are never returned; aggregate it, e.g. count({name}), or group by {name}"
            );
            return refuse(format!("bare column {name}"), &hint);
        }
        if !group_by.contains(name) {
            let hint = format!("{name} is not in group by; add it there or aggregate it");
            return refuse(format!("bare column {name}"), &hint);
        }
        let key = Output::Key(name.clone());
        if aliased {
            return refuse(
                format!("alias on {name}"),
                "select group by columns under their own name",
            );
        }
        if outputs.contains(&key) {
            return refuse(
                format!("{name} selected twice"),
                "select each group by column once",
            );
        }
        Ok(key)
    }

    /// One aggregate call of the SELECT list, with its default alias.
    fn aggregate(&self, f: &Function) -> Result<Aggregate> {
        let name = sql(&f.name);
        let func = match name.as_str() {
            "count" => AggFunc::Count,
            "sum" => AggFunc::Sum,
            "avg" => AggFunc::Avg,
            "min" => AggFunc::Min,
            "max" => AggFunc::Max,
            _ => return Err(unsupported(format!("function {name}"), "select", AGG_HINT)),
        };
        let refuse = |construct: String, hint: &str| Err(unsupported(construct, "select", hint));
        if f.over.is_some() {
            let hint = "aggregate over groups with group by instead";
            return refuse(format!("window function {name}(...) over"), hint);
        }
        if f.filter.is_some() {
            return refuse(
                format!("{name}(...) filter"),
                "move the condition into where",
            );
        }
        if !f.within_group.is_empty() || f.null_treatment.is_some() {
            return refuse(format!("modifiers on {name}"), AGG_HINT);
        }
        let list = match (&f.parameters, &f.args) {
            (FunctionArguments::None, FunctionArguments::List(list)) => list,
            _ => return refuse(sql(f), AGG_HINT),
        };
        if list.duplicate_treatment == Some(DuplicateTreatment::Distinct) {
            let hint = "distinct aggregates are not accepted; use group by and count(*)";
            return refuse(format!("{name}(distinct ...)"), hint);
        }
        let arg = match list.args.as_slice() {
            [FunctionArg::Unnamed(arg)] if list.clauses.is_empty() => arg,
            _ => return refuse(sql(f), AGG_HINT),
        };
        let agg = |column: Option<&ColumnSpec>, weight, alias| {
            let column = column.map(|c| c.name.clone());
            Ok(Aggregate {
                func,
                column,
                weight,
                alias,
            })
        };
        let e = match arg {
            FunctionArgExpr::Wildcard if func == AggFunc::Count => {
                return agg(None, None, "count".to_string());
            }
            FunctionArgExpr::Expr(e) => e,
            _ => return refuse(format!("{name}({})", sql(arg)), AGG_HINT),
        };
        if let Some(col) = self.column(e)? {
            check_numeric(func, &name, col)?;
            return agg(Some(col), None, format!("{name}_{}", col.name));
        }
        if func == AggFunc::Sum
            && let Expr::BinaryOp {
                left,
                op: BinaryOperator::Multiply,
                right,
            } = unnest(e)
        {
            let (col, k) = match (self.column(left)?, self.column(right)?) {
                (Some(col), None) => (col, right),
                (None, Some(col)) => (col, left),
                _ => return refuse(format!("sum({})", sql(e)), AGG_HINT),
            };
            let Some(Literal::Int(k)) = literal(k, "select")? else {
                let hint = "the weight k in sum(col * k) must be an integer literal";
                return refuse(format!("sum({})", sql(e)), hint);
            };
            check_numeric(func, &name, col)?;
            return agg(Some(col), Some(k), format!("sum_{}_x{k}", col.name));
        }
        refuse(format!("expression {} inside {name}", sql(e)), AGG_HINT)
    }

    /// The refusal for a WHERE expression outside the subset.
    fn where_refusal(&self, e: &Expr) -> SqlError {
        let hint = match unnest(e) {
            Expr::Like { .. }
            | Expr::ILike { .. }
            | Expr::SimilarTo { .. }
            | Expr::RLike { .. } => "use = or in with the exact values",
            Expr::Subquery(_) | Expr::InSubquery { .. } | Expr::Exists { .. } => {
                "filter with literal values instead"
            }
            _ => WHERE_HINT,
        };
        unsupported(describe(e), "where", hint)
    }

    /// A column operand of a WHERE predicate.
    fn where_column(&self, e: &Expr) -> Result<&'a ColumnSpec> {
        self.column(e)?.ok_or_else(|| self.where_refusal(e))
    }

    /// A literal operand of a WHERE predicate `whole`, type-checked against `col`.
    fn where_literal(&self, col: &ColumnSpec, e: &Expr, whole: &Expr) -> Result<Literal> {
        if self.column(e)?.is_some() {
            let hint = "compare a column with a literal value";
            return Err(unsupported("column-to-column comparison", "where", hint));
        }
        let lit = literal(e, "where")?.ok_or_else(|| self.where_refusal(e))?;
        let (ok, wanted) = match col.ty {
            ColumnType::Integer | ColumnType::Float => (
                matches!(lit, Literal::Int(_) | Literal::Float(_)),
                "a number",
            ),
            ColumnType::Text => (
                matches!(lit, Literal::Text(_)),
                "a 'single-quoted' text value",
            ),
            ColumnType::Boolean => (matches!(lit, Literal::Bool(_)), "true or false"),
        };
        if ok {
            return Ok(lit);
        }
        let reason = format!("{}; compare it with {wanted}", is_a(col));
        Err(type_error(sql(whole), reason))
    }

    /// A WHERE condition `depth` AND / OR / NOT levels down.
    fn predicate(&self, e: &Expr, depth: usize) -> Result<Predicate> {
        let deeper = || {
            if depth < MAX_FILTER_DEPTH {
                Ok(depth + 1)
            } else {
                Err(SqlError::TooComplex {
                    what: format!(
                        "where chains or nests and / or / not more than {MAX_FILTER_DEPTH} levels deep"
                    ),
                    hint: SIMPLER,
                })
            }
        };
        // Ordering comparisons and BETWEEN only make sense on numbers.
        let ordered = |col: &ColumnSpec| {
            if col.ty.is_numeric() {
                return Ok(());
            }
            let reason = format!("{}; it only accepts =, <>, in and is null", is_a(col));
            Err(type_error(sql(e), reason))
        };
        match e {
            Expr::Nested(inner) => self.predicate(inner, depth),
            Expr::BinaryOp {
                left,
                op: op @ (BinaryOperator::And | BinaryOperator::Or),
                right,
            } => {
                let depth = deeper()?;
                let (l, r) = (
                    Box::new(self.predicate(left, depth)?),
                    Box::new(self.predicate(right, depth)?),
                );
                Ok(if *op == BinaryOperator::And {
                    Predicate::And(l, r)
                } else {
                    Predicate::Or(l, r)
                })
            }
            Expr::BinaryOp { left, op, right } => {
                let Some(op) = cmp_op(op) else {
                    return Err(self.where_refusal(e));
                };
                let (col, other, op) = match (self.column(left)?, self.column(right)?) {
                    (Some(col), _) => (col, right, op),
                    (None, Some(col)) => (col, left, flip(op)),
                    (None, None) if literal(left, "where")?.is_none() => {
                        return Err(self.where_refusal(left));
                    }
                    (None, None) if literal(right, "where")?.is_none() => {
                        return Err(self.where_refusal(right));
                    }
                    (None, None) => {
                        let hint = "compare a column with a literal value";
                        return Err(unsupported("comparison without a column", "where", hint));
                    }
                };
                let value = self.where_literal(col, other, e)?;
                if !matches!(op, CmpOp::Eq | CmpOp::NotEq) {
                    ordered(col)?;
                }
                Ok(Predicate::Compare {
                    column: col.name.clone(),
                    op,
                    value,
                })
            }
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => Ok(Predicate::Not(Box::new(self.predicate(expr, deeper()?)?))),
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                let col = self.where_column(expr)?;
                let values = list.iter().map(|v| self.where_literal(col, v, e));
                let values = values.collect::<Result<_>>()?;
                Ok(Predicate::In {
                    column: col.name.clone(),
                    values,
                    negated: *negated,
                })
            }
            Expr::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let col = self.where_column(expr)?;
                ordered(col)?;
                let (low, high) = (
                    self.where_literal(col, low, e)?,
                    self.where_literal(col, high, e)?,
                );
                Ok(Predicate::Between {
                    column: col.name.clone(),
                    low,
                    high,
                    negated: *negated,
                })
            }
            Expr::IsNull(x) | Expr::IsNotNull(x) => Ok(Predicate::IsNull {
                column: self.where_column(x)?.name.clone(),
                negated: matches!(e, Expr::IsNotNull(_)),
            }),
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => {
                let name = &self.where_column(e)?.name;
                let hint = format!("compare it with a literal, e.g. {name} = true");
                Err(unsupported(format!("bare column {name}"), "where", &hint))
            }
            other => Err(self.where_refusal(other)),
        }
    }
}

/// SUM / AVG / MIN / MAX need a numeric column; COUNT takes any.
fn check_numeric(func: AggFunc, name: &str, col: &ColumnSpec) -> Result<()> {
    if func == AggFunc::Count || col.ty.is_numeric() {
        return Ok(());
    }
    let reason = format!(
        "{}; sum, avg, min and max need an integer or float column",
        is_a(col)
    );
    Err(type_error(format!("{name}({})", col.name), reason))
}

/// `age is an integer column`, `state is a text column`, ...
fn is_a(col: &ColumnSpec) -> String {
    let article = if col.ty == ColumnType::Integer {
        "an"
    } else {
        "a"
    };
    format!("{} is {article} {} column", col.name, col.ty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Bounds;

    fn schema() -> DatasetSchema {
        let col = |name: &str, ty, bounds: Option<(f64, f64)>| ColumnSpec {
            name: name.to_string(),
            ty,
            bounds: bounds.map(|(min, max)| Bounds { min, max }),
            public_keys: None,
            not_null: false,
            privacy_unit: None,
        };
        let columns = vec![
            col("id", ColumnType::Integer, Some((0.0, 1e6))),
            col("age", ColumnType::Integer, Some((0.0, 120.0))),
            col("diagnosis", ColumnType::Text, None),
            col("treatment_cost", ColumnType::Float, Some((0.0, 100_000.0))),
            col("state", ColumnType::Text, None),
            col("smoker", ColumnType::Boolean, None),
        ];
        DatasetSchema {
            name: "patients".to_string(),
            columns,
        }
    }

    fn plan(sql: &str) -> Plan {
        plan_query(sql, &schema()).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn agg(func: AggFunc, column: Option<&str>, weight: Option<i64>, alias: &str) -> Output {
        let (column, alias) = (column.map(str::to_string), alias.to_string());
        Output::Aggregate(Aggregate {
            func,
            column,
            weight,
            alias,
        })
    }

    fn key(k: &str) -> Output {
        Output::Key(k.to_string())
    }

    fn names(p: &Plan) -> String {
        p.column_names().join(",")
    }

    #[test]
    fn showcase_query() {
        let sql =
            "SELECT state, AVG(age), COUNT(*) FROM patients GROUP BY state HAVING COUNT(*) >= 25";
        let expected = Plan {
            dataset: "patients".to_string(),
            outputs: vec![
                key("state"),
                agg(AggFunc::Avg, Some("age"), None, "avg_age"),
                agg(AggFunc::Count, None, None, "count"),
            ],
            filter: None,
            group_by: vec!["state".to_string()],
            having_min_count: Some(25),
        };
        assert_eq!(plan(sql), expected);
        assert_eq!(table_name(sql), Ok("patients".to_string()));
    }

    #[test]
    fn aggregates_with_default_aliases() {
        use AggFunc::*;
        let p = plan(
            "select count(*), Count(Diagnosis), COUNT(smoker), count(ALL state), \
             SUM(treatment_cost), sum(age * 3), SUM(2 * Age), sum(age * -2), (sum((age) * 2)), \
             avg(age), MIN(age), max(treatment_cost) from PATIENTS;",
        );
        let expected = vec![
            agg(Count, None, None, "count"),
            agg(Count, Some("diagnosis"), None, "count_diagnosis"),
            agg(Count, Some("smoker"), None, "count_smoker"),
            agg(Count, Some("state"), None, "count_state"),
            agg(Sum, Some("treatment_cost"), None, "sum_treatment_cost"),
            agg(Sum, Some("age"), Some(3), "sum_age_x3"),
            agg(Sum, Some("age"), Some(2), "sum_age_x2"),
            agg(Sum, Some("age"), Some(-2), "sum_age_x-2"),
            agg(Sum, Some("age"), Some(2), "sum_age_x2_2"),
            agg(Avg, Some("age"), None, "avg_age"),
            agg(Min, Some("age"), None, "min_age"),
            agg(Max, Some("treatment_cost"), None, "max_treatment_cost"),
        ];
        assert_eq!(p.outputs, expected);
        assert_eq!(
            (p.dataset.as_str(), p.filter, p.group_by, p.having_min_count),
            ("patients", None, vec![], None)
        );
    }

    #[test]
    fn aliases_and_disambiguation() {
        let p = plan(
            "SELECT COUNT(*) AS n, COUNT(*), count(*), SUM(age) AS n, avg(age) AS \"Mean Age\" FROM patients",
        );
        assert_eq!(names(&p), "n,count,count_2,n_2,Mean Age");
        assert_eq!(p.outputs[3], agg(AggFunc::Sum, Some("age"), None, "n_2"));
        // Keys keep their names; an aggregate named like a key (any case) is renamed.
        let p =
            plan("SELECT COUNT(*) AS State, state, COUNT(*) AS COUNT FROM patients GROUP BY state");
        assert_eq!(names(&p), "State_2,state,COUNT");
        assert_eq!(
            names(&plan(
                "SELECT count(*), count(*) AS count_2, count(*) FROM patients"
            )),
            "count,count_2,count_3"
        );
    }

    #[test]
    fn group_by_and_having() {
        let p =
            plan("SELECT State, smoker, COUNT(*) FROM patients GROUP BY STATE, smoker, state, id");
        assert_eq!(
            p.outputs,
            vec![
                key("state"),
                key("smoker"),
                agg(AggFunc::Count, None, None, "count")
            ]
        );
        assert_eq!(p.group_by, vec!["state", "smoker", "id"]);
        let min_count = |having: &str| {
            plan(&format!(
                "SELECT COUNT(*) FROM patients GROUP BY age HAVING {having}"
            ))
            .having_min_count
        };
        assert_eq!(min_count("count(*) > 9"), Some(10));
        assert_eq!(min_count("5 <= COUNT(*)"), Some(5));
        assert_eq!(min_count("5 < COUNT(*)"), Some(6));
        assert_eq!(min_count("(count(*) >= 0)"), Some(0));
    }

    #[test]
    fn table_alias_and_qualified_columns() {
        let p = plan(
            "SELECT p.state, AVG(patients.age) FROM patients AS p WHERE P.age > 3 GROUP BY p.state",
        );
        assert_eq!(
            p.outputs,
            vec![
                key("state"),
                agg(AggFunc::Avg, Some("age"), None, "avg_age")
            ]
        );
        assert_eq!(p.group_by, vec!["state"]);
        let age = Predicate::Compare {
            column: "age".into(),
            op: CmpOp::Gt,
            value: Literal::Int(3),
        };
        assert_eq!(p.filter, Some(age));
        assert_eq!(
            plan("SELECT COUNT(x.age) FROM Patients x").outputs,
            vec![agg(AggFunc::Count, Some("age"), None, "count_age")]
        );
    }

    /// Accepted WHERE conditions and their predicates, in the plan's JSON form.
    const FILTERS: &str = r#"
        age = 40                    | {"compare":{"column":"age","op":"Eq","value":40}}
        AGE <> 40                   | {"compare":{"column":"age","op":"NotEq","value":40}}
        age != 40                   | {"compare":{"column":"age","op":"NotEq","value":40}}
        age < 40                    | {"compare":{"column":"age","op":"Lt","value":40}}
        age <= 40                   | {"compare":{"column":"age","op":"LtEq","value":40}}
        age > 40                    | {"compare":{"column":"age","op":"Gt","value":40}}
        age >= 40                   | {"compare":{"column":"age","op":"GtEq","value":40}}
        40 < age                    | {"compare":{"column":"age","op":"Gt","value":40}}
        40 >= age                   | {"compare":{"column":"age","op":"LtEq","value":40}}
        40 = age                    | {"compare":{"column":"age","op":"Eq","value":40}}
        age < 2.5                   | {"compare":{"column":"age","op":"Lt","value":2.5}}
        age > +7                    | {"compare":{"column":"age","op":"Gt","value":7}}
        treatment_cost >= -10       | {"compare":{"column":"treatment_cost","op":"GtEq","value":-10}}
        treatment_cost > -(1.5)     | {"compare":{"column":"treatment_cost","op":"Gt","value":-1.5}}
        treatment_cost < 1e3        | {"compare":{"column":"treatment_cost","op":"Lt","value":1000.0}}
        STATE = 'CA'                | {"compare":{"column":"state","op":"Eq","value":"CA"}}
        'NY' <> state               | {"compare":{"column":"state","op":"NotEq","value":"NY"}}
        smoker = TRUE               | {"compare":{"column":"smoker","op":"Eq","value":true}}
        smoker <> false             | {"compare":{"column":"smoker","op":"NotEq","value":false}}
        id = -9223372036854775808   | {"compare":{"column":"id","op":"Eq","value":-9223372036854775808}}
        state IN ('CA', 'NY')       | {"in":{"column":"state","values":["CA","NY"],"negated":false}}
        age NOT IN (1, 2.5, -3)     | {"in":{"column":"age","values":[1,2.5,-3],"negated":true}}
        smoker IN (true)            | {"in":{"column":"smoker","values":[true],"negated":false}}
        age BETWEEN 18 AND 65       | {"between":{"column":"age","low":18,"high":65,"negated":false}}
        treatment_cost NOT BETWEEN 0.5 AND 100 | {"between":{"column":"treatment_cost","low":0.5,"high":100,"negated":true}}
        diagnosis IS NULL           | {"is_null":{"column":"diagnosis","negated":false}}
        smoker IS NOT NULL          | {"is_null":{"column":"smoker","negated":true}}
        NOT (age > 1)               | {"not":{"compare":{"column":"age","op":"Gt","value":1}}}
        age > 1 AND (smoker = true OR NOT state = 'CA') | {"and":[{"compare":{"column":"age","op":"Gt","value":1}},{"or":[{"compare":{"column":"smoker","op":"Eq","value":true}},{"not":{"compare":{"column":"state","op":"Eq","value":"CA"}}}]}]}
        age > 1 OR smoker = true AND state = 'CA' | {"or":[{"compare":{"column":"age","op":"Gt","value":1}},{"and":[{"compare":{"column":"smoker","op":"Eq","value":true}},{"compare":{"column":"state","op":"Eq","value":"CA"}}]}]}
    "#;

    #[test]
    fn where_predicates() {
        for line in FILTERS.lines().filter(|l| !l.trim().is_empty()) {
            let (cond, json) = line
                .rsplit_once(" | ")
                .unwrap_or_else(|| panic!("bad line {line}"));
            let expected: Predicate =
                serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
            let p = plan(&format!(
                "SELECT COUNT(*) FROM patients WHERE {}",
                cond.trim()
            ));
            assert_eq!(p.filter, Some(expected), "{cond}");
        }
    }

    #[test]
    fn table_name_reads_from_only() {
        assert_eq!(
            table_name("SELECT COUNT(*) FROM Patients WHERE x = 1"),
            Ok("Patients".to_string())
        );
        assert_eq!(
            table_name("select nonsense(*) from other AS o"),
            Ok("other".to_string())
        );
        for (sql, code) in [
            ("DELETE FROM patients", "sql_unsupported"),
            ("SELECT 1", "sql_unsupported"),
            ("SELEC", "sql_parse_error"),
        ] {
            assert_eq!(table_name(sql).map_err(|e| e.code()), Err(code), "{sql}");
        }
    }

    /// Refused queries: `code | sql | substrings the message must contain...`.
    const REFUSALS: &str = r#"
        sql_parse_error |  | empty query
        sql_parse_error |  ;  | empty query
        sql_parse_error | SELECT COUNT(* FROM patients | sql parse error: expected: ), found: from
        sql_unsupported | SELECT COUNT(*) FROM patients; SELECT 1 | 2 statements is not supported; send one plain select
        sql_unsupported | INSERT INTO patients VALUES (1) | insert statement is not supported
        sql_unsupported | UPDATE patients SET age = 1 | update statement
        sql_unsupported | DELETE FROM patients | delete statement
        sql_unsupported | DROP TABLE patients | drop statement
        sql_unsupported | CREATE TABLE t (a INT) | create statement
        sql_unsupported | VALUES (1) | values
        sql_unsupported | WITH t AS (SELECT * FROM patients) SELECT COUNT(*) FROM t | with (common table expressions) is not supported
        sql_unsupported | SELECT COUNT(*) FROM patients UNION SELECT COUNT(*) FROM patients | union is not supported
        sql_unsupported | SELECT COUNT(*) FROM patients INTERSECT SELECT COUNT(*) FROM patients | intersect
        sql_unsupported | SELECT COUNT(*) FROM patients EXCEPT SELECT COUNT(*) FROM patients | except
        sql_unsupported | (SELECT COUNT(*) FROM patients) | parenthesized subquery
        sql_unsupported | SELECT COUNT(*) FROM patients ORDER BY 1 | order by is not supported
        sql_unsupported | SELECT COUNT(*) FROM patients LIMIT 5 | limit / offset
        sql_unsupported | SELECT COUNT(*) FROM patients OFFSET 5 | limit / offset
        sql_unsupported | SELECT COUNT(*) FROM patients FETCH FIRST 5 ROWS ONLY | fetch
        sql_unsupported | SELECT DISTINCT state FROM patients | distinct is not supported | group by
        sql_unsupported | SELECT COUNT(*) | select without from
        unknown_table   | SELECT COUNT(*) FROM visits | unknown table visits; this query can only read patients
        sql_unsupported | SELECT COUNT(*) FROM patients, visits | multiple tables is not supported in from
        sql_unsupported | SELECT COUNT(*) FROM patients JOIN v ON patients.id = v.id | join is not supported in from; query one dataset
        sql_unsupported | SELECT COUNT(*) FROM (SELECT * FROM patients) t | subquery is not supported in from
        sql_unsupported | SELECT COUNT(*) FROM public.patients | qualified table name public.patients
        sql_unsupported | SELECT COUNT(*) FROM patients AS p(a, b) | column aliases
        sql_unsupported | SELECT COUNT(*) FROM generate_series(1, 3) | table function generate_series
        unknown_table   | SELECT COUNT(q.age) FROM patients p | unknown table q
        sql_unsupported | SELECT COUNT(a.b.age) FROM patients | qualified name a.b.age
        sql_unsupported | SELECT * FROM patients | select * is not supported | raw rows are never returned
        sql_unsupported | SELECT p.* FROM patients p | select p.*
        sql_unsupported | SELECT age FROM patients | bare column age is not supported in select | raw rows are never returned
        sql_unsupported | SELECT age, COUNT(*) FROM patients | bare column age | raw rows are never returned
        sql_unsupported | SELECT age, COUNT(*) FROM patients GROUP BY state | bare column age | age is not in group by
        sql_unsupported | SELECT state FROM patients GROUP BY state | without aggregates | count(*)
        sql_unsupported | SELECT state AS s, COUNT(*) FROM patients GROUP BY state | alias on state
        sql_unsupported | SELECT state, state, COUNT(*) FROM patients GROUP BY state | state selected twice
        sql_unsupported | SELECT COUNT(DISTINCT state) FROM patients | count(distinct ...)
        sql_unsupported | SELECT MEDIAN(age) FROM patients | function median is not supported in select | count(*)
        sql_unsupported | SELECT pg_catalog.sum(age) FROM patients | function pg_catalog.sum
        sql_unsupported | SELECT COUNT(*) OVER () FROM patients | window function count
        sql_unsupported | SELECT COUNT(*) FILTER (WHERE age > 1) FROM patients | count(...) filter | where
        sql_unsupported | SELECT SUM(*) FROM patients | sum(*)
        sql_unsupported | SELECT AVG(age, id) FROM patients | avg(age, id)
        sql_unsupported | SELECT AVG(age * 2) FROM patients | expression age * 2 inside avg
        sql_unsupported | SELECT SUM(age + 2) FROM patients | inside sum
        sql_unsupported | SELECT SUM(age * id) FROM patients | sum(age * id)
        sql_unsupported | SELECT SUM(age * 1.5) FROM patients | sum(age * 1.5) | integer literal
        sql_unsupported | SELECT COUNT(*) + 1 FROM patients | operator + is not supported in select
        sql_unsupported | SELECT 1, COUNT(*) FROM patients | constant 1
        sql_unsupported | SELECT (SELECT 1), COUNT(*) FROM patients | subquery is not supported in select
        unknown_column  | SELECT COUNT(nope) FROM patients | unknown column nope in patients; its columns are id, age, diagnosis, treatment_cost, state, smoker
        sql_type_error  | SELECT sum(diagnosis) FROM patients | sum(diagnosis): diagnosis is a text column; sum, avg, min and max need an integer or float column
        sql_type_error  | SELECT AVG(smoker) FROM patients | avg(smoker): smoker is a boolean column
        sql_type_error  | SELECT MIN(state) FROM patients | min(state)
        sql_type_error  | SELECT MAX(diagnosis) FROM patients | max(diagnosis)
        sql_type_error  | SELECT SUM(state * 2) FROM patients | sum(state)
        sql_type_error  | SELECT COUNT(*) FROM patients GROUP BY treatment_cost | group by treatment_cost: treatment_cost is a float column
        sql_unsupported | SELECT COUNT(*) FROM patients GROUP BY 1 | positional reference 1 is not supported in group by
        sql_unsupported | SELECT COUNT(*) FROM patients GROUP BY age + 1 | operator + is not supported in group by
        sql_unsupported | SELECT COUNT(*) FROM patients GROUP BY ALL | group by all
        sql_unsupported | SELECT COUNT(*) FROM patients GROUP BY age WITH ROLLUP | rollup
        unknown_column  | SELECT COUNT(*) FROM patients GROUP BY nope | unknown column nope
        sql_unsupported | SELECT COUNT(*) FROM patients HAVING COUNT(*) >= 5 | having without group by
        sql_unsupported | SELECT COUNT(*) FROM patients GROUP BY state HAVING AVG(age) > 30 | having avg(age) > 30 is not supported; only having count(*) >= k
        sql_unsupported | SELECT COUNT(*) FROM patients GROUP BY state HAVING COUNT(*) < 5 | having count(*) < 5
        sql_unsupported | SELECT COUNT(*) FROM patients GROUP BY state HAVING COUNT(*) = 5 | having count(*) = 5
        sql_unsupported | SELECT COUNT(*) FROM patients GROUP BY state HAVING COUNT(age) >= 5 | having count(age) >= 5
        sql_unsupported | SELECT COUNT(*) FROM patients GROUP BY state HAVING COUNT(*) >= 5 AND COUNT(*) >= 6 | only having count(*)
        sql_unsupported | SELECT COUNT(*) FROM patients GROUP BY state HAVING COUNT(*) >= age | having count(*) >= age
        sql_unsupported | SELECT COUNT(*) FROM patients GROUP BY state HAVING state = 'CA' | having state = 'CA'
        sql_type_error  | SELECT COUNT(*) FROM patients GROUP BY state HAVING COUNT(*) >= -1 | non-negative integer
        sql_type_error  | SELECT COUNT(*) FROM patients GROUP BY state HAVING COUNT(*) > 2.5 | non-negative integer
        sql_unsupported | SELECT COUNT(*) FROM patients WHERE diagnosis LIKE 'flu%' | like is not supported in where; use = or in with the exact values
        sql_unsupported | SELECT COUNT(*) FROM patients WHERE diagnosis NOT ILIKE 'Flu%' | ilike is not supported in where
        sql_unsupported | SELECT COUNT(*) FROM patients WHERE diagnosis SIMILAR TO 'f' | similar to is not supported in where
        sql_unsupported | SELECT COUNT(*) FROM patients WHERE age > id | column-to-column comparison is not supported in where
        sql_unsupported | SELECT COUNT(*) FROM patients WHERE state IN (diagnosis) | column-to-column comparison
        sql_unsupported | SELECT COUNT(*) FROM patients WHERE age + 1 > 5 | operator + is not supported in where
        sql_unsupported | SELECT COUNT(*) FROM patients WHERE age > 5 * 2 | operator *
        sql_unsupported | SELECT COUNT(*) FROM patients WHERE age * 2 | operator *
        sql_unsupported | SELECT COUNT(*) FROM patients WHERE 1 = 1 | comparison without a column
        sql_unsupported | SELECT COUNT(*) FROM patients WHERE lower(state) = 'ca' | function lower is not supported in where
        sql_unsupported | SELECT COUNT(*) FROM patients WHERE age IN (SELECT age FROM patients) | subquery is not supported in where
        sql_unsupported | SELECT COUNT(*) FROM patients WHERE EXISTS (SELECT 1 FROM patients) | subquery
        sql_unsupported | SELECT COUNT(*) FROM patients WHERE age > (SELECT 1) | subquery
        sql_unsupported | SELECT COUNT(*) FROM patients WHERE smoker | bare column smoker | smoker = true
        sql_unsupported | SELECT COUNT(*) FROM patients WHERE TRUE | constant true
        sql_unsupported | SELECT COUNT(*) FROM patients WHERE smoker IS TRUE | expression smoker is true is not supported in where
        sql_unsupported | SELECT COUNT(*) FROM patients WHERE age = NULL | null literal is not supported in where; use is null
        sql_unsupported | SELECT COUNT(*) FROM patients WHERE CAST(age AS TEXT) = '5' | cast is not supported in where
        sql_unsupported | SELECT COUNT(*) FROM patients WHERE CASE WHEN age > 1 THEN true END | case
        sql_unsupported | SELECT COUNT(*) FROM patients WHERE age = $1 | literal $1
        unknown_column  | SELECT COUNT(*) FROM patients WHERE state = "CA" | unknown column CA
        unknown_column  | SELECT COUNT(*) FROM patients WHERE nope = 1 | unknown column nope in patients
        sql_type_error  | SELECT COUNT(*) FROM patients WHERE state = 5 | state = 5: state is a text column; compare it with a 'single-quoted' text value
        sql_type_error  | SELECT COUNT(*) FROM patients WHERE state > 'CA' | state > 'CA': state is a text column; it only accepts =, <>, in and is null
        sql_type_error  | SELECT COUNT(*) FROM patients WHERE state BETWEEN 'A' AND 'C' | state between 'A' and 'C': state is a text column
        sql_type_error  | SELECT COUNT(*) FROM patients WHERE state IN ('CA', 3) | state is a text column
        sql_type_error  | SELECT COUNT(*) FROM patients WHERE age = 'forty' | age is an integer column; compare it with a number
        sql_type_error  | SELECT COUNT(*) FROM patients WHERE age BETWEEN 1 AND true | compare it with a number
        sql_type_error  | SELECT COUNT(*) FROM patients WHERE smoker = 1 | smoker is a boolean column; compare it with true or false
        sql_type_error  | SELECT COUNT(*) FROM patients WHERE smoker > false | smoker is a boolean column; it only accepts
        sql_type_error  | SELECT COUNT(*) FROM patients WHERE age > 99999999999999999999 | out of range
        sql_type_error  | SELECT COUNT(*) FROM patients WHERE age > -'x' | need a number
    "#;

    #[test]
    fn refusals_name_the_construct() {
        for line in REFUSALS.lines().filter(|l| !l.trim().is_empty()) {
            let mut fields = line.split(" | ").map(str::trim);
            let (code, sql) = (
                fields.next().unwrap_or_default(),
                fields.next().unwrap_or_default(),
            );
            let e = match plan_query(sql, &schema()) {
                Ok(p) => panic!("{sql}: accepted as {p:?}"),
                Err(e) => e,
            };
            let msg = e.to_string();
            assert_eq!(e.code(), code, "{sql}: {msg}");
            for part in fields {
                assert!(msg.contains(part), "{sql}: {msg:?} lacks {part:?}");
            }
            if !matches!(
                e,
                SqlError::UnknownColumn { .. } | SqlError::UnknownTable { .. }
            ) {
                assert_eq!(msg, super::sql(&msg), "{sql}: message not lower case");
            }
        }
    }

    fn chain(term: &str, sep: &str, n: usize) -> String {
        vec![term; n].join(sep)
    }

    #[test]
    fn long_chains_are_refused_before_anything_recurses() {
        let cases = [
            format!(
                "SELECT COUNT(*) FROM patients WHERE {}",
                chain("age > 1", " AND ", 4000)
            ),
            format!(
                "SELECT COUNT(*) FROM patients WHERE {}",
                chain("age > 1", " OR ", 4000)
            ),
            format!(
                "SELECT COUNT(*) FROM patients WHERE age{} > 5",
                " + 1".repeat(4000)
            ),
            format!("SELECT SUM({}) FROM patients", chain("age", " + ", 4000)),
            format!(
                "SELECT COUNT(*) FROM patients WHERE {}",
                chain("age > 1", " AND ", 1000)
            ),
            format!(
                "SELECT COUNT(*) FROM patients WHERE {}",
                chain("age > 1", " OR ", 3000)
            ),
            format!("SELECT SUM({}) FROM patients", chain("age", " * ", 2000)),
            format!("SELECT {} FROM patients", chain("COUNT(*)", ", ", 1000)),
            // Within the token limit, but deeper than the planner accepts.
            format!(
                "SELECT COUNT(*) FROM patients WHERE {}",
                chain("age > 1", " AND ", 34)
            ),
            format!(
                "SELECT COUNT(*) FROM patients WHERE {}",
                chain("smoker = true", " OR ", 60)
            ),
            format!(
                "SELECT COUNT(*) FROM patients WHERE {}age > 1",
                "NOT ".repeat(40)
            ),
            format!(
                "SELECT COUNT(*) FROM patients WHERE {}age > 1{}",
                "(".repeat(200),
                ")".repeat(200)
            ),
        ];
        for sql in &cases {
            let e = plan_query(sql, &schema()).expect_err("refused");
            assert_eq!(e.code(), "query_too_complex", "{}: {e}", &sql[..60]);
            let msg = e.to_string();
            assert!(msg.starts_with("query too complex: "), "{msg}");
            assert!(
                msg.len() < 300,
                "the message does not echo the query: {msg}"
            );
        }
        let e = plan_query(&cases[0], &schema()).expect_err("refused");
        assert!(e.to_string().contains("more than the 512 accepted"), "{e}");
        let e = plan_query(&cases[8], &schema()).expect_err("refused");
        assert!(e.to_string().contains("more than 32 levels deep"), "{e}");
    }

    /// The deepest filter the planner accepts: 33 terms, 32 levels of AND.
    fn deepest() -> String {
        format!(
            "SELECT COUNT(*) FROM patients WHERE {}",
            chain("age > 1", " AND ", MAX_FILTER_DEPTH + 1)
        )
    }

    /// Whatever the planner accepts can be sent: it decodes within serde_json's nesting limit,
    /// with room to spare for the records and manifests that wrap a plan.
    #[test]
    fn the_deepest_accepted_plan_fits_the_wire() {
        let p = plan(&deepest());
        let json = serde_json::to_string(&p).expect("json");
        let (mut depth, mut max, mut quoted) = (0usize, 0usize, false);
        for c in json.chars() {
            match c {
                '"' => quoted = !quoted,
                '{' | '[' if !quoted => {
                    depth += 1;
                    max = max.max(depth);
                }
                '}' | ']' if !quoted => depth -= 1,
                _ => {}
            }
        }
        assert!(max <= 100, "a plan nests {max} levels of JSON");
        let msg = crate::wire::Request::Execute {
            run_id: "r".into(),
            backend: crate::backend::BackendId::HeBackend,
            dataset: "patients".into(),
            plan: p.clone(),
            params: crate::wire::PrivacyParams {
                epsilon: 0.5,
                delta: 0.0,
            },
        };
        let bytes = serde_json::to_vec(&msg).expect("json");
        let back: crate::wire::Request = crate::wire::decode(&bytes).expect("decodes");
        assert_eq!(back, msg);
    }

    #[test]
    fn non_finite_literals_are_refused() {
        for lit in ["1e999", "-1e999", "1.8e308", "-(1e400)"] {
            let sql = format!("SELECT COUNT(*) FROM patients WHERE age > {lit}");
            let e = plan_query(&sql, &schema()).expect_err("refused");
            assert_eq!(e.code(), "sql_type_error", "{lit}: {e}");
            assert!(e.to_string().contains("out of range"), "{e}");
        }
        let sql = "SELECT COUNT(*) FROM patients WHERE treatment_cost BETWEEN 1e999 AND 2";
        assert!(plan_query(sql, &schema()).is_err());
        // The largest finite floats are fine.
        plan("SELECT COUNT(*) FROM patients WHERE treatment_cost < 1.7e308");
    }

    #[test]
    fn codes_and_messages() {
        let cases = [
            (
                SqlError::Parse("x".into()),
                "sql_parse_error",
                "sql parse error: x",
            ),
            (
                unsupported("order by", "", "sort client-side"),
                "sql_unsupported",
                "order by is not supported; sort client-side",
            ),
            (
                unsupported("like", "where", "use ="),
                "sql_unsupported",
                "like is not supported in where; use =",
            ),
            (
                SqlError::UnknownTable {
                    table: "t".into(),
                    dataset: "d".into(),
                },
                "unknown_table",
                "unknown table t; this query can only read d",
            ),
            (
                SqlError::UnknownColumn {
                    column: "c".into(),
                    dataset: "d".into(),
                    columns: vec!["a".into(), "b".into()],
                },
                "unknown_column",
                "unknown column c in d; its columns are a, b",
            ),
            (type_error("sum(x)", "bad"), "sql_type_error", "sum(x): bad"),
        ];
        for (e, code, msg) in cases {
            assert_eq!((e.code(), e.to_string()), (code, msg.to_string()));
        }
    }
}
