use super::*;
use crate::plan::{AggFunc, Aggregate, Output, Predicate};
use crate::schema::Bounds;
use crate::schema::{ColumnSpec, ColumnType};

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
    let sql = "SELECT state, AVG(age), COUNT(*) FROM patients GROUP BY state HAVING COUNT(*) >= 25";
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
    let p = plan("SELECT COUNT(*) AS State, state, COUNT(*) AS COUNT FROM patients GROUP BY state");
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
    let p = plan("SELECT State, smoker, COUNT(*) FROM patients GROUP BY STATE, smoker, state, id");
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
        requester: None,
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
