use std::path::{Path, PathBuf};

use super::*;

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

#[test]
fn shipped_scenarios_parse() {
    for f in ["demo.toml", "ten-party.toml", "banks/bank-consortium.toml"] {
        let s = Scenario::load(&shipped().join(f)).unwrap_or_else(|e| panic!("{f}: {e:#}"));
        assert!(!s.steps.is_empty(), "{f}");
    }
    let demo = Scenario::parse(DEMO, &shipped()).expect("embedded demo");
    assert_eq!(demo.organizations.len(), 3);
    let ten = Scenario::load(&shipped().join("ten-party.toml")).expect("ten");
    assert_eq!(ten.organizations.len(), 10);
    assert!(ten.steps.iter().any(|s| !s.kill.is_empty()));
    let banks = Scenario::load(&shipped().join("banks/bank-consortium.toml")).expect("banks");
    assert!(
        banks
            .organizations
            .iter()
            .all(|o| o.datasets[0].csv.is_some())
    );
}

/// A minimal valid scenario with `extra` appended to its only step.
fn with_step(extra: &str) -> String {
    format!(
        "name = \"t\"\n[[organization]]\nid = \"a\"\n[[organization.dataset]]\nrows = 10\n\
         [[organization]]\nid = \"b\"\n[[organization.dataset]]\nrows = 10\n[[step]]\n{extra}\n"
    )
}

fn error(text: &str) -> String {
    format!(
        "{:#}",
        Scenario::parse(text, Path::new(".")).expect_err(text)
    )
}

#[test]
fn a_minimal_scenario_parses() {
    let s = Scenario::parse(
        &with_step(
            "kind = \"query\"\nbackend = \"dp_sandbox\"\ndataset = \"a.patients\"\nsql = \"SELECT COUNT(*) FROM patients\"",
        ),
        Path::new("."),
    )
    .expect("valid");
    assert_eq!(s.steps[0].expect.status, ExpectStatus::Completed);
    assert_eq!(s.seed, 7);
}

#[test]
fn mistakes_are_refused_with_what_is_wrong() {
    let cases = [
        (
            "kind = \"query\"\nbakend = \"dp_sandbox\"",
            "unknown field `bakend`",
        ),
        ("kind = \"dance\"", "unknown variant `dance`"),
        (
            "kind = \"query\"\nbackend = \"dp_sandbox\"\ndataset = \"c.patients\"\nsql = \"SELECT COUNT(*) FROM patients\"",
            "dataset \"c.patients\" is not declared",
        ),
        (
            "kind = \"query\"\nbackend = \"mpc_backend\"\ndataset = \"a.patients\"\nsql = \"SELECT COUNT(*) FROM patients\"",
            "room step",
        ),
        (
            "kind = \"room\"\nsql = \"SELECT COUNT(*) FROM patients\"\nkill = [\"z\"]",
            "z is not a participant",
        ),
        (
            "kind = \"room\"\nsql = \"SELECT COUNT(*) FROM patients\"\nexpect = { status = \"refused\" }",
            "needs the error `code`",
        ),
        (
            "kind = \"room\"\nsql = \"SELECT COUNT(*) FROM patients\"\nexpect = { code = \"x\" }",
            "goes with status = \"refused\"",
        ),
        (
            "kind = \"budget\"\ndataset = \"a.patients\"",
            "needs `epsilon`",
        ),
        (
            "kind = \"stop\"\norganization = \"a\"\nsql = \"x\"",
            "`sql` does not apply",
        ),
        ("kind = \"start\"", "needs `organization`"),
    ];
    for (step, want) in cases {
        let e = error(&with_step(step));
        assert!(e.contains(want), "{step}: {e}");
    }
    let e = error(
        "name = \"t\"\n[[organization]]\nid = \"a\"\n[[organization.dataset]]\ncsv = \"x.csv\"\n[[step]]\nkind = \"stop\"\norganization = \"a\"\n",
    );
    assert!(e.contains("a csv needs a schema file"), "{e}");
    let e = error(
        "name = \"t\"\n[[organization]]\nid = \"A b\"\n[[step]]\nkind = \"stop\"\norganization = \"a\"\n",
    );
    assert!(e.contains("lower-case"), "{e}");
    let e = error(
        "name = \"t\"\n[[organization]]\nid = \"a\"\npolicy = { max_epsilon = 1 }\n[[step]]\nkind = \"stop\"\norganization = \"a\"\n",
    );
    assert!(e.contains("max_epsilon"), "{e}");
}
