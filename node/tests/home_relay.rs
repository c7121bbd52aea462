//! Runs the home-relay proofs in examples/home-relay against this build: netns-demo.sh (two
//! network namespaces, a rate-capped link, the README's relay command and relay.toml) and
//! nat-demo.sh (--udp-port and --nat-ip behind a real nftables NAT). They need root, `ip
//! netns` and a few tools; without them a test says so and passes (CI runs as root).

use std::process::Command;

fn has(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `examples/home-relay/SCRIPT` if root and `tools` are there; asserts it passes.
fn run_script(script: &str, tools: &[&str]) {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n");
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !root || !netns || !tools.iter().all(|t| has(t)) {
        eprintln!("skipped {script}: needs root, `ip netns` and {tools:?}");
        return;
    }
    let path = format!(
        "{}/../examples/home-relay/{script}",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new("bash")
        .arg(&path)
        .env("TREECAST", env!("CARGO_BIN_EXE_treecast"))
        .output()
        .expect("run the script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("PASS"),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_home_relay_guide_works_between_two_namespaces() {
    run_script("netns-demo.sh", &["tc", "curl", "jq", "python3"]);
}

#[test]
fn nat_ip_lets_natted_viewers_reach_a_relay_behind_port_forwarding() {
    run_script("nat-demo.sh", &["nft", "curl", "jq", "python3"]);
}
