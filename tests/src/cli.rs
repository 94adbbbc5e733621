//! The organization and row-count options of `prism-sim serve` / `demo`: `--orgs 10` or
//! `--orgs bank-a,bank-b`, and `--rows 5000` or `--rows 2000,hospital-a=5000`.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use prism_common::identity::OrgId;

/// The most organizations `--orgs N` starts.
pub const MAX_ORGS: usize = 200;

/// `N` organizations named `hospital-a`, `hospital-b`, … (`hospital-001`, … beyond 26).
pub fn numbered_orgs(n: usize) -> Vec<String> {
    if n <= 26 {
        (0..n)
            .map(|i| format!("hospital-{}", (b'a' + i as u8) as char))
            .collect()
    } else {
        (1..=n).map(|i| format!("hospital-{i:03}")).collect()
    }
}

/// Parses `--orgs`: a count, or a comma-separated list of organization ids.
pub fn parse_orgs(s: &str) -> anyhow::Result<Vec<String>> {
    let s = s.trim();
    if let Ok(n) = s.parse::<usize>() {
        if n == 0 || n > MAX_ORGS {
            bail!("--orgs {n}: give between 1 and {MAX_ORGS} organizations");
        }
        return Ok(numbered_orgs(n));
    }
    let mut orgs = Vec::new();
    for name in s.split(',').map(str::trim) {
        OrgId::new(name).with_context(|| {
            format!("--orgs: {name:?} is not an organization id (lower-case letters, digits, '-')")
        })?;
        if orgs.iter().any(|o| o == name) {
            bail!("--orgs: {name} is named twice");
        }
        orgs.push(name.to_string());
    }
    Ok(orgs)
}

/// Row counts: the default for every organization, and the organizations named apart.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    /// Rows of every organization not named.
    pub default: usize,
    /// Rows of named organizations.
    pub per_org: BTreeMap<String, usize>,
}

/// Parses `--rows` against the organizations: `5000`, `hospital-a=5000,hospital-b=200`, or
/// both (`1000,hospital-a=5000`).
pub fn parse_rows(s: &str, orgs: &[String], default: usize) -> anyhow::Result<Rows> {
    let mut rows = Rows {
        default,
        per_org: BTreeMap::new(),
    };
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let count = |v: &str| {
            v.trim()
                .parse::<usize>()
                .with_context(|| format!("--rows: {v:?} is not a row count"))
        };
        match item.split_once('=') {
            None => rows.default = count(item)?,
            Some((org, n)) => {
                let org = org.trim();
                if !orgs.iter().any(|o| o == org) {
                    bail!(
                        "--rows: {org} is not one of the organizations ({})",
                        orgs.join(", ")
                    );
                }
                rows.per_org.insert(org.to_string(), count(n)?);
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orgs_by_count_or_by_name() {
        assert_eq!(
            parse_orgs("3").expect("parses"),
            ["hospital-a", "hospital-b", "hospital-c"]
        );
        let many = parse_orgs("30").expect("parses");
        assert_eq!((many.len(), many[0].as_str()), (30, "hospital-001"));
        assert_eq!(
            parse_orgs("bank-a, bank-b").expect("parses"),
            ["bank-a", "bank-b"]
        );
        assert!(parse_orgs("0").is_err());
        assert!(parse_orgs("Bank A").is_err());
        assert!(parse_orgs("a,a").is_err());
    }

    #[test]
    fn rows_default_and_per_org() {
        let orgs = parse_orgs("2").expect("parses");
        let r = parse_rows("500,hospital-b=20", &orgs, 10_000).expect("parses");
        assert_eq!(r.default, 500);
        assert_eq!(r.per_org.get("hospital-b"), Some(&20));
        assert_eq!(parse_rows("", &orgs, 7).expect("parses").default, 7);
        let e = parse_rows("hospital-z=5", &orgs, 1)
            .expect_err("refused")
            .to_string();
        assert!(e.contains("hospital-z"), "{e}");
        assert!(parse_rows("many", &orgs, 1).is_err());
    }
}
