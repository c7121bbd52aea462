//! Runs examples/home-relay/netns-demo.sh (two network namespaces, a rate-capped link, the
//! README's relay command and relay.toml) against this build. It needs root and `ip netns`;
//! without them it says so and passes (CI runs as root).

use std::process::Command;

#[test]
fn the_home_relay_guide_works_between_two_namespaces() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n");
    let netns = Command::new("ip").args(["netns", "list"]).output();
    let tools = ["tc", "curl", "jq", "python3"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !matches!(root, Ok(true)) || !netns.is_ok_and(|o| o.status.success()) || !tools {
        eprintln!("skipped: needs root, `ip netns`, tc, curl, jq and python3");
        return;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/home-relay/netns-demo.sh"
    );
    let out = Command::new("bash")
        .arg(script)
        .env("TREECAST", env!("CARGO_BIN_EXE_treecast"))
        .output()
        .expect("run netns-demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("PASS"),
        "netns-demo.sh failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
