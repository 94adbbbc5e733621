//! Whether this machine can run the multi-host fault suite (`tests/tests/e2e/hosts.rs`): it
//! needs root and iproute2, allowed to create network namespaces and a bridge (probed by
//! creating and removing one of each). Where it cannot, the build sets
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
    // Not only present: allowed (a container without CAP_SYS_ADMIN / CAP_NET_ADMIN is root
    // and has `ip`, yet may create neither a namespace nor a bridge).
    let ip = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let probe = format!("prism-probe-{}", std::process::id());
    let bridge = format!("bprobe{}", std::process::id() % 100_000);
    let iproute = root
        && ip(&["netns", "add", &probe])
        && ip(&["netns", "del", &probe])
        && ip(&["link", "add", &bridge, "type", "bridge"])
        && ip(&["link", "del", &bridge]);
    if !iproute {
        let _ = ip(&["netns", "del", &probe]);
        let _ = ip(&["link", "del", &bridge]);
        println!("cargo::rustc-cfg=prism_no_netns");
        println!(
            "cargo::warning=the multi-host fault suite needs root and iproute2 (ip netns): \
             its tests are ignored in this build"
        );
    }
}
