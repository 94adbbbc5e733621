//! Name resolution and type checking of a parsed SELECT against the dataset's schema: columns,
//! aggregates, the WHERE predicate and GROUP BY keys become the plan's typed parts.

use sqlparser::ast::{
    BinaryOperator, DuplicateTreatment, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArguments, GroupByExpr, SelectItem, UnaryOperator,
};

use super::*;
use crate::plan::{AggFunc, Aggregate, CmpOp, Literal, Output, Predicate};
use crate::schema::{ColumnSpec, ColumnType, DatasetSchema};

/// Name resolution and type checking against the dataset.
pub(super) struct Ctx<'a> {
    pub(super) schema: &'a DatasetSchema,
    /// Names a column may be qualified with: the table name and its alias.
    pub(super) qualifiers: Vec<String>,
}

impl<'a> Ctx<'a> {
    /// Resolves a column reference; `Ok(None)` if `e` is not a column reference at all.
    pub(super) fn column(&self, e: &Expr) -> Result<Option<&'a ColumnSpec>> {
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
    pub(super) fn group_by(&self, g: &GroupByExpr) -> Result<Vec<String>> {
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
    pub(super) fn outputs(&self, items: &[SelectItem], group_by: &[String]) -> Result<Vec<Output>> {
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
    pub(super) fn key(
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
    pub(super) fn aggregate(&self, f: &Function) -> Result<Aggregate> {
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
    pub(super) fn where_refusal(&self, e: &Expr) -> SqlError {
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
    pub(super) fn where_column(&self, e: &Expr) -> Result<&'a ColumnSpec> {
        self.column(e)?.ok_or_else(|| self.where_refusal(e))
    }

    /// A literal operand of a WHERE predicate `whole`, type-checked against `col`.
    pub(super) fn where_literal(
        &self,
        col: &ColumnSpec,
        e: &Expr,
        whole: &Expr,
    ) -> Result<Literal> {
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
    pub(super) fn predicate(&self, e: &Expr, depth: usize) -> Result<Predicate> {
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
