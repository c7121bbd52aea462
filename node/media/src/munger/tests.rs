use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn config(gap: TimestampGap) -> MungerConfig {
    MungerConfig {
        clock_rate: 90_000,
        frame_interval: 3000,
        gap,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn fwd(sequence: u16, timestamp: u32) -> Munged {
    Munged::Forward {
        sequence,
        timestamp,
    }
}

#[test]
fn waits_for_the_first_keyframe_then_keeps_the_source_numbers() {
    let mut m = Munger::new(config(TimestampGap::WallClock));
    assert_eq!(
        m.process(10, 100, false, ms(0)),
        Munged::Drop(DropReason::WaitingForKeyframe)
    );
    assert!(m.is_waiting_for_keyframe());
    assert_eq!(m.process(11, 100, true, ms(1)), fwd(11, 100));
    assert_eq!(m.process(12, 3100, false, ms(2)), fwd(12, 3100));
    assert!(!m.is_waiting_for_keyframe());
}

#[test]
fn reordered_and_duplicate_packets_map_consistently() {
    let mut m = Munger::new(config(TimestampGap::WallClock));
    let _ = m.process(100, 0, true, ms(0));
    assert_eq!(m.process(103, 3000, false, ms(1)), fwd(103, 3000));
    assert_eq!(m.process(101, 0, false, ms(2)), fwd(101, 0));
    assert_eq!(m.process(101, 0, false, ms(3)), fwd(101, 0));
    assert_eq!(m.process(103, 3000, false, ms(4)), fwd(103, 3000));
    assert_eq!(m.process(102, 0, false, ms(5)), fwd(102, 0));
    assert_eq!(m.process(104, 3000, false, ms(6)), fwd(104, 3000));
}

#[test]
fn sequence_and_timestamp_wrap() {
    let mut m = Munger::new(config(TimestampGap::WallClock));
    let _ = m.process(65534, u32::MAX - 10, true, ms(0));
    assert_eq!(
        m.process(65535, u32::MAX - 10, false, ms(1)),
        fwd(65535, u32::MAX - 10)
    );
    assert_eq!(m.process(0, 2989, false, ms(2)), fwd(0, 2989));
    assert_eq!(m.process(1, 2989, false, ms(3)), fwd(1, 2989));
    // A late packet from before the wrap still maps.
    assert_eq!(
        m.process(65535, u32::MAX - 10, false, ms(4)),
        fwd(65535, u32::MAX - 10)
    );
}

#[test]
fn switch_continues_after_the_last_packet() {
    let mut m = Munger::new(config(TimestampGap::WallClock));
    let _ = m.process(500, 9000, true, ms(0));
    let _ = m.process(501, 12000, false, ms(33));
    m.switch_source();
    // The new source: unrelated numbers; its delta frames before the keyframe are dropped.
    assert_eq!(
        m.process(7, 777_000, false, ms(50)),
        Munged::Drop(DropReason::WaitingForKeyframe)
    );
    // Keyframe 100 ms after the last forwarded packet: 9000 ticks at 90 kHz.
    assert_eq!(m.process(8, 780_000, true, ms(133)), fwd(502, 21000));
    assert_eq!(m.process(9, 780_000, false, ms(134)), fwd(503, 21000));
    assert_eq!(m.process(11, 783_000, false, ms(160)), fwd(505, 24000));
    // Older than the keyframe: would collide with the old source's 501.
    assert_eq!(
        m.process(7, 777_000, false, ms(161)),
        Munged::Drop(DropReason::BeforeSourceStart)
    );
}

#[test]
fn switch_with_frame_interval_gap_uses_the_observed_interval() {
    let mut m = Munger::new(config(TimestampGap::FrameInterval));
    let _ = m.process(1, 0, true, ms(0));
    let _ = m.process(2, 1500, false, ms(16)); // 60 fps
    assert_eq!(m.frame_interval(), 1500);
    m.switch_source();
    assert_eq!(m.process(40_000, 5, true, ms(900)), fwd(3, 3000));
    // The jump across the switch is not taken as a frame interval.
    assert_eq!(m.frame_interval(), 1500);
}

#[test]
fn wall_clock_gap_is_at_least_one_frame() {
    let mut m = Munger::new(config(TimestampGap::WallClock));
    let _ = m.process(1, 0, true, ms(10));
    m.switch_source();
    assert_eq!(m.process(50, 50, true, ms(10)), fwd(2, 3000));
}

#[test]
fn incoming_seq_translates_nacks() {
    let mut m = Munger::new(config(TimestampGap::WallClock));
    assert_eq!(m.incoming_seq(5), None);
    let _ = m.process(65000, 0, true, ms(0));
    m.switch_source();
    let _ = m.process(10, 0, true, ms(40)); // out 65001
    let _ = m.process(12, 0, false, ms(41)); // out 65003
    assert_eq!(m.incoming_seq(65002), Some(11));
    assert_eq!(m.incoming_seq(65001), Some(10));
    // 65000 belonged to the previous source.
    assert_eq!(m.incoming_seq(65000), None);
    m.switch_source();
    assert_eq!(m.incoming_seq(65002), None);
}

#[test]
fn resync_closes_the_gap_and_keeps_timestamps() {
    let mut m = Munger::new(config(TimestampGap::WallClock));
    let _ = m.process(10, 1000, true, ms(0));
    let _ = m.process(11, 4000, false, ms(33));
    m.resync();
    assert!(m.is_waiting_for_keyframe());
    assert_eq!(
        m.process(12, 7000, false, ms(66)),
        Munged::Drop(DropReason::WaitingForKeyframe)
    );
    // Same source, timestamps untouched; sequence continues without a gap.
    assert_eq!(m.process(20, 31000, true, ms(300)), fwd(12, 31000));
    assert_eq!(m.process(21, 34000, false, ms(333)), fwd(13, 34000));
}

#[test]
fn resync_before_any_packet_is_harmless() {
    let mut m = Munger::new(config(TimestampGap::WallClock));
    m.resync();
    assert_eq!(m.process(3, 30, true, ms(0)), fwd(3, 30));
}

#[test]
fn a_large_jump_is_a_restart() {
    let mut m = Munger::new(config(TimestampGap::WallClock));
    let _ = m.process(100, 1000, true, ms(0));
    let _ = m.process(101, 4000, false, ms(33));
    // Same SSRC, numbering restarted far behind: wait for its keyframe, then continue
    // (timestamp: 66 ms of wall clock later, 5940 ticks).
    assert_eq!(
        m.process(40_000, 5, false, ms(66)),
        Munged::Drop(DropReason::WaitingForKeyframe)
    );
    assert_eq!(m.process(40_001, 5, true, ms(99)), fwd(102, 9940));
    // Far ahead: the same.
    assert_eq!(m.process(50_000, 3005, true, ms(132)), fwd(103, 12940));
    // Within MAX_JUMP: an ordinary loss gap, kept.
    assert_eq!(m.process(51_000, 6005, false, ms(165)), fwd(1103, 15940));
}

/// One upstream source in a generated scenario.
#[derive(Debug, Clone)]
struct SourceSpec {
    first_seq: u16,
    first_ts: u32,
    packets: usize,
    keyframe_every: usize,
    /// Per packet: lose it, duplicate it, swap it with the next.
    faults: Vec<(bool, bool, bool)>,
    /// Wall-clock pause before this source starts, in ms.
    pause_ms: u64,
}

fn source_spec(faulty: bool) -> impl Strategy<Value = SourceSpec> {
    let fault = if faulty {
        (
            prop::bool::weighted(0.05),
            prop::bool::weighted(0.05),
            prop::bool::weighted(0.1),
        )
            .boxed()
    } else {
        Just((false, false, false)).boxed()
    };
    (
        any::<u16>(),
        any::<u32>(),
        1usize..300,
        1usize..60,
        prop::collection::vec(fault, 300),
        0u64..2000,
    )
        .prop_map(
            |(first_seq, first_ts, packets, keyframe_every, faults, pause_ms)| SourceSpec {
                first_seq,
                first_ts,
                packets,
                keyframe_every,
                faults,
                pause_ms,
            },
        )
}

/// One packet as fed: (source index, position in the source's stream, seq, ts, keyframe).
type Fed = (usize, usize, u16, u32, bool);

/// Arrival order of one source's packets after loss, duplication and adjacent swaps.
fn arrivals(index: usize, spec: &SourceSpec) -> Vec<Fed> {
    let mut out: Vec<Fed> = Vec::new();
    for j in 0..spec.packets {
        let (lost, dup, _) = spec.faults[j];
        if lost {
            continue;
        }
        // Three packets per frame, 30 fps at 90 kHz.
        let packet = (
            index,
            j,
            spec.first_seq.wrapping_add(j as u16),
            spec.first_ts.wrapping_add((j / 3) as u32 * 3000),
            j % spec.keyframe_every == 0,
        );
        out.push(packet);
        if dup {
            out.push(packet);
        }
    }
    for k in 0..out.len().saturating_sub(1) {
        if spec.faults[out[k].1].2 {
            out.swap(k, k + 1);
        }
    }
    out
}

/// Runs the scenario and returns every forwarded packet with its outgoing numbers.
fn run(specs: &[SourceSpec]) -> Vec<(Fed, u16, u32)> {
    let mut m = Munger::new(config(TimestampGap::WallClock));
    let mut now = Duration::ZERO;
    let mut forwarded = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        if i > 0 {
            m.switch_source();
        }
        now += ms(spec.pause_ms);
        for fed in arrivals(i, spec) {
            now += ms(10);
            if let Munged::Forward {
                sequence,
                timestamp,
            } = m.process(fed.2, fed.3, fed.4, now)
            {
                forwarded.push((fed, sequence, timestamp));
            }
        }
    }
    forwarded
}

proptest! {
    /// Within a source every packet maps by one offset; each source starts at a keyframe, right
    /// after the newest packet of the previous one, and never maps anything from before it.
    #[test]
    fn continuity_across_switches(specs in prop::collection::vec(source_spec(true), 1..5)) {
        let forwarded = run(&specs);
        let mut newest: Option<(usize, u16, u32)> = None; // (position, out seq, out ts)
        for i in 0..specs.len() {
            let segment: Vec<_> = forwarded.iter().filter(|(fed, ..)| fed.0 == i).collect();
            let Some(&&(first, first_seq, first_ts)) = segment.first() else { continue };
            prop_assert!(first.4, "a source starts at a keyframe");
            if let Some((_, seq, ts)) = newest {
                prop_assert_eq!(first_seq, seq.wrapping_add(1), "sequence continues");
                let step = first_ts.wrapping_sub(ts) as i32;
                prop_assert!(step >= 3000, "timestamp moves forward by at least a frame: {}", step);
            }
            let seq_offset = first_seq.wrapping_sub(first.2);
            let ts_offset = first_ts.wrapping_sub(first.3);
            newest = None;
            for &&(fed, seq, ts) in &segment {
                prop_assert!(fed.1 >= first.1, "nothing from before the source's start");
                prop_assert_eq!(seq, fed.2.wrapping_add(seq_offset));
                prop_assert_eq!(ts, fed.3.wrapping_add(ts_offset));
                if newest.is_none_or(|(pos, ..)| fed.1 > pos) {
                    newest = Some((fed.1, seq, ts));
                }
            }
        }
    }

    /// Without loss, duplicates or reordering, the outgoing sequence has no gap at all.
    #[test]
    fn clean_sources_give_a_gapless_sequence(specs in prop::collection::vec(source_spec(false), 1..5)) {
        let forwarded = run(&specs);
        for pair in forwarded.windows(2) {
            prop_assert_eq!(pair[1].1, pair[0].1.wrapping_add(1));
            prop_assert!(pair[1].2.wrapping_sub(pair[0].2) as i32 >= 0, "timestamps never go back");
        }
    }
}
