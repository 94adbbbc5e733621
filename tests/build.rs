//! Whether this machine can run the multi-host fault suite (`tests/tests/e2e/hosts.rs`): it
//! needs root and iproute2 to create network namespaces. Where it cannot, the build sets
//! `prism_no_netns` and the suite's tests are marked ignored (counted as skipped, with the
//! reason), never passed.

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(prism_no_netns)");
    println!("cargo::rerun-if-changed=build.rs");
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let iproute = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !(root && iproute) {
        println!("cargo::rustc-cfg=prism_no_netns");
        println!(
            "cargo::warning=the multi-host fault suite needs root and iproute2 (ip netns): \
             its tests are ignored in this build"
        );
    }
}
