//! The command line: clear errors for bad input, and every output format.

#![allow(clippy::unwrap_used)] // a panicking test helper is a test failure

use std::process::Command;

use clap::Parser;
use treecast_sim::cli::Cli;

fn parse_error(args: &[&str]) -> String {
    let mut all = vec!["treecast-sim"];
    all.extend_from_slice(args);
    match Cli::try_parse_from(all) {
        Err(e) => e.to_string(),
        Ok(cli) => match cli.scenario().and_then(|s| s.build()) {
            Err(e) => e.to_string(),
            Ok(cfg) => panic!("{args:?} was accepted: {cfg:?}"),
        },
    }
}

#[test]
fn bad_flags_give_clear_messages() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--viewers", "many"],
            "invalid value 'many' for '--viewers <N>'",
        ),
        (
            &["--capacity-mix", "4:0.5,2:0.4"],
            "fractions add up to 0.9, not 1",
        ),
        (&["--capacity-mix", "7:1"], "capacity 7 is above 4"),
        (&["--capacity-mix", "4-1"], "`4-1` is not CAPACITY:FRACTION"),
        (
            &["--join-rate", "0"],
            "invalid join_rate: 0 must be a positive number",
        ),
        (
            &["--root-capacity", "0"],
            "root_capacity: 0 is not in 1..=4",
        ),
        (&["--relay-only", "1.5"], "1.5 is not a fraction"),
        (&["--rejoin"], "give --mean-session"),
        (&["--crash-at", "10"], "--crash-at needs --crash"),
        (&["--crash-node", "1"], "node 1 is the broadcaster"),
        (
            &["--check", "sometimes"],
            "`sometimes` is not one of auto, every, end",
        ),
        (
            &["--format", "xml"],
            "invalid value 'xml' for '--format <FORMAT>'",
        ),
        (
            &["--scenario", "/nonexistent.toml"],
            "cannot read scenario /nonexistent.toml",
        ),
        (
            &["--jitter-ms", "50"],
            "jitter 50 ms exceeds the latency 40 ms",
        ),
    ];
    for (args, want) in cases {
        let got = parse_error(args);
        assert!(got.contains(want), "{args:?}: {got:?} lacks {want:?}");
    }
}

fn sim(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_treecast-sim"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn json_has_the_promised_fields() {
    let out = sim(&["--viewers", "300", "--seed", "1", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for key in [
        "viewers",
        "max_depth",
        "optimal_depth",
        "p95_depth",
        "invariant_violations",
        "elapsed_ms",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {out}");
    }
    assert_eq!(v["viewers"], 300);
    assert_eq!(v["invariant_violations"], 0);
}

#[test]
fn table_dot_and_svg() {
    let table = sim(&["--viewers", "50", "--mean-session", "20", "--rejoin"]);
    assert!(
        table.contains("depth") && table.contains("0 violations"),
        "{table}"
    );

    let dot = sim(&["--viewers", "20", "--format", "dot"]);
    assert!(dot.starts_with("digraph treecast {"));
    assert_eq!(
        dot.matches(" -> ").count(),
        20,
        "one edge per viewer: {dot}"
    );

    let dir = std::env::temp_dir().join(format!("treecast-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("tree.svg");
    sim(&["--viewers", "2000", "--svg", svg.to_str().unwrap()]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    assert!(text.contains("below"), "deep levels are summarised");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn scenario_files_and_flags_combine() {
    let dir = std::env::temp_dir().join(format!("treecast-sim-toml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("s.toml");
    std::fs::write(&file, "viewers = 40\nseed = 5\n").unwrap();
    let out = sim(&[
        "--scenario",
        file.to_str().unwrap(),
        "--viewers",
        "60",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["viewers"].as_u64(), v["seed"].as_u64()),
        (Some(60), Some(5))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
