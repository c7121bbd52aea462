//! Scenario tests: the real core, driven by the simulator, keeps every invariant and a tree
//! within one level of the optimum. Each failure message carries the seed to replay it:
//! `treecast-sim --viewers N --seed S --capacity-mix M`.

#![allow(clippy::unwrap_used)] // a panicking test helper is a test failure

use treecast_sim::config::{Churn, CrashSelect, CrashSpec, SessionDist};
use treecast_sim::{Report, Scenario, run};

/// At least a quarter of the viewers can feed four children.
const QUARTER_STRONG: &str = "4:0.25,2:0.35,1:0.2,0:0.2";
const MIXED: &str = "4:0.3,3:0.1,2:0.1,1:0.3,0:0.2";

fn scenario(viewers: u64, seed: u64, mix: &str) -> Scenario {
    Scenario {
        viewers: Some(viewers),
        seed: Some(seed),
        capacity_mix: Some(mix.parse().unwrap()),
        ..Default::default()
    }
}

fn simulate(s: Scenario) -> Report {
    let cfg = s.build().unwrap();
    run(&cfg, &mut |_| {}).unwrap().report
}

fn assert_sound(r: &Report) {
    assert_eq!(
        r.invariant_violations, 0,
        "seed {}, {} viewers, mix {}: {:?}",
        r.seed, r.viewers, r.capacity_mix, r.first_violations
    );
    assert!(r.invariant_checks > 1);
}

fn assert_within_one(r: &Report) {
    let opt = r.optimal_depth.expect("the mix can feed everyone");
    assert!(
        r.max_depth <= opt + 1,
        "seed {}, {} viewers, mix {}: max depth {} but optimum {} (histogram {:?})",
        r.seed,
        r.viewers,
        r.capacity_mix,
        r.max_depth,
        opt,
        r.depth_histogram
    );
}

#[test]
fn a_thousand_viewers_at_once() {
    for seed in 1..=3 {
        let r = simulate(scenario(1_000, seed, QUARTER_STRONG));
        assert_sound(&r);
        assert_within_one(&r);
        assert_eq!(r.viewers_attached, 1_000);
    }
}

#[test]
fn ten_thousand_viewers_at_a_rate() {
    for mix in [QUARTER_STRONG, MIXED] {
        let r = simulate(Scenario {
            join_rate: Some(500.0),
            ..scenario(10_000, 4, mix)
        });
        assert_sound(&r);
        assert_within_one(&r);
    }
}

#[test]
fn a_hundred_thousand_viewers_at_once() {
    let r = simulate(scenario(100_000, 1, QUARTER_STRONG));
    assert_sound(&r);
    assert_within_one(&r);
    assert_eq!(r.viewers_attached, 100_000);
    assert_eq!(r.root_fanout, 4);
}

#[test]
#[ignore = "release only (about 20 s): cargo test --release -p treecast-sim -- --ignored"]
fn a_million_viewers_at_once() {
    let r = simulate(scenario(1_000_000, 1, QUARTER_STRONG));
    assert_sound(&r);
    assert_within_one(&r);
}

#[test]
fn interior_crashes_are_repaired_without_violations() {
    let r = simulate(Scenario {
        crash: vec![
            CrashSpec {
                at: Some(10.0),
                count: 40,
                select: CrashSelect::Interior,
                depth: None,
                nodes: Vec::new(),
            },
            CrashSpec {
                at: Some(20.0),
                count: 1,
                select: CrashSelect::Depth,
                depth: Some(1),
                nodes: Vec::new(),
            },
        ],
        ..scenario(5_000, 5, QUARTER_STRONG)
    });
    assert_sound(&r);
    assert_eq!(r.crashes, 41);
    assert!(r.repairs >= 40, "every crash orphaned someone: {r:?}");
    assert_eq!(r.viewers_attached, 5_000 - 41, "every orphan re-attached");
    assert!(r.repair_ms.max >= 300.0, "crash repairs include detection");
    // After the crashes and a promotion round the tree is back within one of the optimum.
    assert_within_one(&r);
}

fn churn(viewers: u64, seed: u64) -> Scenario {
    Scenario {
        join_rate: Some(200.0),
        duration: Some(viewers as f64 / 200.0 + 240.0),
        churn: Some(Churn {
            mean_session: 600.0,
            distribution: SessionDist::Exponential,
            rejoin: true,
        }),
        ..scenario(viewers, seed, QUARTER_STRONG)
    }
}

#[test]
fn churn_keeps_every_invariant() {
    for dist in [SessionDist::Exponential, SessionDist::Pareto] {
        let mut s = churn(3_000, 6);
        // Short sessions: Pareto's shortest is half the mean.
        s.churn = s.churn.map(|c| Churn {
            distribution: dist,
            mean_session: 120.0,
            ..c
        });
        let r = simulate(s);
        assert_sound(&r);
        assert!(
            r.leaves > 500,
            "{dist:?}: churn happened ({} leaves)",
            r.leaves
        );
        assert_eq!(r.viewers_detached, 0);
    }
}

/// Depth within one of the optimum "also after churn": 10-minute sessions, every leaver
/// replaced, measured at the end while churn goes on. Holds since successors make room for
/// their siblings (`plan_shed`) and nodes move up to free slots (`plan_move`).
#[test]
#[ignore = "release only (about 2 s there): cargo test --release -p treecast-sim -- --ignored"]
fn depth_within_one_of_optimum_after_churn() {
    for (viewers, seed) in [(1_000, 1), (10_000, 2)] {
        let r = simulate(churn(viewers, seed));
        assert_sound(&r);
        assert_within_one(&r);
    }
}

/// Arrivals much faster than sessions end, so the whole audience churns at once: 100,000
/// viewers in 20 s, then about 170 leaves a second. Promotion rounds used to try a swap
/// before a move, and a swap from deep down only trades depths: the tree ended at 13 against
/// an optimum of 9 (histogram tail 1959, 416, 79, 8 at depths 10 to 13). Now the move to a
/// free slot higher up comes first, as in the agent. Replay: `treecast-sim --viewers 100000
/// --seed 2 --join-rate 5000 --duration 260 --mean-session 600 --rejoin`.
#[test]
#[ignore = "release only (about 4 s there): cargo test --release -p treecast-sim -- --ignored"]
fn depth_within_one_of_optimum_under_heavy_churn() {
    let r = simulate(Scenario {
        join_rate: Some(5_000.0),
        duration: Some(260.0),
        ..churn(100_000, 2)
    });
    assert_sound(&r);
    assert!(r.leaves > 30_000, "churn happened ({} leaves)", r.leaves);
    assert_within_one(&r);
}

#[test]
fn the_same_seed_gives_the_same_report() {
    let s = Scenario {
        crash: vec![CrashSpec {
            at: Some(30.0),
            count: 5,
            select: CrashSelect::Random,
            depth: None,
            nodes: Vec::new(),
        }],
        jitter_ms: Some(10.0),
        ..churn(2_000, 9)
    };
    let json = |s: Scenario| {
        let mut v = serde_json::to_value(simulate(s)).unwrap();
        v.as_object_mut().unwrap().remove("elapsed_ms");
        v
    };
    let a = json(s.clone());
    assert_eq!(a, json(s.clone()));
    let other = json(Scenario {
        seed: Some(10),
        ..s
    });
    assert_ne!(a, other, "another seed gives another run");
}

#[test]
fn the_shipped_scenarios_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Scenario::from_file(&path)
                .and_then(Scenario::build)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 3, "ship at least three example scenarios");
}

#[test]
fn the_weak_uplinks_scenario_runs_clean() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/weak-uplinks.toml");
    let r = simulate(Scenario::from_file(&path).unwrap());
    assert_sound(&r);
}
