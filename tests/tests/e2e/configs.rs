//! Every sample TOML shipped in `compose/` and `docs/` parses as what it is meant to be, so the
//! samples cannot go stale when a config struct changes.
//!
//! The kind comes from the file name: `coordinator*.toml` is a [`CoordinatorConfig`],
//! `*.schema.toml` is the column file of `prism-node import --schema`, anything else is a
//! [`NodeConfig`]. A file must parse as its kind and as no other.

use std::path::{Path, PathBuf};

use prism_common::schema::ColumnSpec;
use prism_coordinator::CoordinatorConfig;
use prism_node::NodeConfig;

/// The file `prism-node import --schema` reads (node/src/main.rs `SchemaFile`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaFile {
    columns: Vec<ColumnSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Coordinator,
    Node,
    Schema,
}

fn kind_of(path: &Path) -> Kind {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.starts_with("coordinator") {
        Kind::Coordinator
    } else if name.ends_with(".schema.toml") {
        Kind::Schema
    } else {
        Kind::Node
    }
}

fn parses_as(text: &str, kind: Kind) -> Result<(), String> {
    let r = match kind {
        Kind::Coordinator => toml::from_str::<CoordinatorConfig>(text).map(|_| ()),
        Kind::Node => toml::from_str::<NodeConfig>(text).map(|_| ()),
        Kind::Schema => {
            let f = toml::from_str::<SchemaFile>(text).map_err(|e| e.to_string())?;
            return if f.columns.is_empty() {
                Err("no [[columns]]".into())
            } else {
                Ok(())
            };
        }
    };
    r.map_err(|e| e.to_string())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            toml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
}

fn samples() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["compose", "docs"] {
        toml_files(&root().join(dir), &mut files);
    }
    files.sort();
    files
}

#[test]
fn every_sample_parses_as_exactly_its_kind() {
    let files = samples();
    assert!(
        files.len() >= 5,
        "expected the compose and docs samples, found {files:?}"
    );
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read sample");
        let kind = kind_of(path);
        if let Err(e) = parses_as(&text, kind) {
            panic!("{} does not parse as a {kind:?} file: {e}", path.display());
        }
        for other in [Kind::Coordinator, Kind::Node, Kind::Schema] {
            if other != kind {
                assert!(
                    parses_as(&text, other).is_err(),
                    "{} ({kind:?}) also parses as {other:?}",
                    path.display()
                );
            }
        }
    }
}

fn node(path: &Path) -> NodeConfig {
    NodeConfig::from_file(path).expect("node config")
}

#[test]
fn node_samples_keep_the_admin_api_on_loopback_and_use_their_own_certificate() {
    for path in samples().iter().filter(|p| kind_of(p) == Kind::Node) {
        let cfg = node(path);
        assert!(
            cfg.admin_listen.ip().is_loopback(),
            "{}: admin_listen {} is not loopback",
            path.display(),
            cfg.admin_listen
        );
        let cert = cfg.tls.cert.to_string_lossy().into_owned();
        assert!(
            cert.ends_with(&format!("/{}.pem", cfg.org)),
            "{}: certificate {cert} is not {}'s",
            path.display(),
            cfg.org
        );
        assert!(
            cfg.admin_token.is_none(),
            "{}: samples keep the admin token in a file, not in the config",
            path.display()
        );
    }
}

#[test]
fn compose_federation_is_consistent() {
    let dir = root().join("compose");
    let coord =
        CoordinatorConfig::from_file(&dir.join("coordinator.toml")).expect("coordinator.toml");
    let compose = std::fs::read_to_string(dir.join("docker-compose.yml")).expect("compose file");
    let orgs: Vec<String> = coord.organizations.iter().map(|o| o.to_string()).collect();
    assert!(
        compose.contains(&format!("--orgs {}", orgs.join(","))),
        "the certs step must issue certificates for exactly {orgs:?}"
    );
    for org in &orgs {
        let path = dir.join(format!("{org}.toml"));
        let cfg = node(&path);
        assert_eq!(cfg.org.as_str(), org, "{}", path.display());
        assert_eq!(
            cfg.coordinator_addr.port(),
            coord.quic_listen.port(),
            "{org} dials the coordinator's QUIC port"
        );
        assert!(
            compose.contains(&format!("./{org}.toml:/etc/prism/node.toml:ro")),
            "docker-compose.yml mounts {org}.toml"
        );
        // Names, not fixed addresses: each resolves to a compose service by Docker's DNS.
        let service = |host: &str| compose.contains(&format!("\n  {host}:\n"));
        assert!(
            service(cfg.coordinator_addr.host()) && cfg.coordinator_addr.host() == "coordinator",
            "{org} dials {}, which is not the coordinator's service",
            cfg.coordinator_addr
        );
        let advertise = cfg.peer_advertise.as_ref().expect("peer_advertise");
        assert!(
            advertise.host() == org.as_str() && service(advertise.host()),
            "{org} advertises {advertise}, not its own service"
        );
        assert_eq!(advertise.port(), cfg.peer_listen.port());
    }
    assert!(compose.contains("./coordinator.toml:/etc/prism/coordinator.toml:ro"));
}

#[test]
fn sample_schema_describes_the_synthetic_patients() {
    let path = root().join("docs/samples/patients.schema.toml");
    let text = std::fs::read_to_string(&path).expect("schema sample");
    let schema: SchemaFile = toml::from_str(&text).expect("schema parses");
    assert_eq!(schema.columns, prism_tests::data::patient_columns());
}

/// A CRL exists only after the first revocation; a sample that sets `crl` would stop a first
/// start on a missing file.
#[test]
fn no_sample_enables_a_crl_before_there_is_one() {
    for path in samples() {
        let text = std::fs::read_to_string(&path).expect("read sample");
        let crl = match kind_of(&path) {
            Kind::Coordinator => {
                toml::from_str::<CoordinatorConfig>(&text)
                    .expect("parse")
                    .tls
                    .crl
            }
            Kind::Node => toml::from_str::<NodeConfig>(&text).expect("parse").tls.crl,
            Kind::Schema => continue,
        };
        assert!(
            crl.is_none(),
            "{} sets crl = {crl:?}; leave it commented until `certs revoke` wrote one",
            path.display()
        );
    }
}

/// The image's build context must not carry private keys (development keys included).
#[test]
fn the_image_build_context_leaves_keys_out() {
    let ignore = std::fs::read_to_string(root().join("compose/Dockerfile.dockerignore"))
        .expect("dockerignore");
    let lines: Vec<&str> = ignore.lines().map(str::trim).collect();
    for pattern in ["certs/dev/", "**/*.key.pem", "**/*.redb"] {
        assert!(
            lines.contains(&pattern),
            "Dockerfile.dockerignore must exclude {pattern}"
        );
    }
}
