//! `prism-coordinator certs ...`: writes a federation's certificates to a directory.
//!
//! Layout: `ca.pem`, `ca.key.pem`, `coordinator.pem`, `coordinator.key.pem`, and per
//! organization `<org>.pem`, `<org>.key.pem`. Keys are written with mode 0600.

use std::path::Path;

use anyhow::Context;
use prism_common::certs::{FederationCa, PemPair};
use prism_common::identity::OrgId;

fn write(path: &Path, contents: &str, secret: bool) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = secret;
    Ok(())
}

fn write_pair(dir: &Path, stem: &str, pair: &PemPair) -> anyhow::Result<()> {
    write(&dir.join(format!("{stem}.pem")), &pair.cert_pem, false)?;
    write(&dir.join(format!("{stem}.key.pem")), &pair.key_pem, true)
}

/// Creates a CA, the coordinator's certificate and one per organization in `dir`.
pub fn init(dir: &Path, orgs: &[OrgId], days: i64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if dir.join("ca.pem").exists() {
        anyhow::bail!(
            "{} already holds a CA; use `certs issue` to add organizations",
            dir.display()
        );
    }
    let ca = FederationCa::generate("prism", days)?;
    write_pair(dir, "ca", &ca.pem)?;
    write_pair(dir, "coordinator", &ca.issue_coordinator(days)?)?;
    for org in orgs {
        write_pair(dir, org.as_str(), &ca.issue_org(org, days)?)?;
    }
    Ok(())
}

/// Issues certificates for more organizations with an existing CA in `dir`.
pub fn issue(dir: &Path, orgs: &[OrgId], days: i64) -> anyhow::Result<()> {
    let ca = load_ca(dir)?;
    for org in orgs {
        write_pair(dir, org.as_str(), &ca.issue_org(org, days)?)?;
    }
    Ok(())
}

/// Writes `crl.pem` revoking the given organizations' current certificates.
pub fn revoke(dir: &Path, orgs: &[OrgId], days: i64) -> anyhow::Result<()> {
    let ca = load_ca(dir)?;
    let mut serials = Vec::new();
    for org in orgs {
        let pem = std::fs::read_to_string(dir.join(format!("{org}.pem")))
            .with_context(|| format!("reading {org}.pem"))?;
        serials.push(
            prism_common::certs::serial_hex(&pem)
                .with_context(|| format!("{org}.pem has no readable serial"))?,
        );
    }
    let number = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
    write(
        &dir.join("crl.pem"),
        &ca.crl(&serials, number, days)?,
        false,
    )
}

fn load_ca(dir: &Path) -> anyhow::Result<FederationCa> {
    let cert = std::fs::read_to_string(dir.join("ca.pem")).context("reading ca.pem")?;
    let key = std::fs::read_to_string(dir.join("ca.key.pem")).context("reading ca.key.pem")?;
    Ok(FederationCa::from_pem(&cert, &key)?)
}
