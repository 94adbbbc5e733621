//! The binary links the system OpenSSL (OpenDP's sampler draws its randomness from it), so the
//! distribution's security updates reach it; `.cargo/config.toml` sets `OPENSSL_NO_VENDOR`.

use std::process::Command;

#[test]
fn prism_node_links_the_system_openssl() {
    if option_env!("OPENSSL_NO_VENDOR") == Some("0") {
        eprintln!("skipped: built with OPENSSL_NO_VENDOR=0 (vendored OpenSSL on purpose)");
        return;
    }
    let Ok(out) = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_prism-node"))
        .output()
    else {
        eprintln!("skipped: no ldd on this machine");
        return;
    };
    let libs = String::from_utf8_lossy(&out.stdout);
    assert!(
        libs.contains("libssl.so") && libs.contains("libcrypto.so"),
        "prism-node does not link the system OpenSSL:\n{libs}"
    );
}
