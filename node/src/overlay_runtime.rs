//! The overlay's own runtime: libp2p (gossip, the DHT, direct messages) runs on threads of a
//! lower scheduling priority than the media path.
//!
//! A relay's first duty is the stream. Overlay work comes in bursts (a repair makes every node
//! receive, verify and merge a wave of records; new connections mean noise handshakes), and
//! on a small machine such a burst used to delay RTP forwarding by hundreds of milliseconds:
//! in `treecast swarm --nodes 200`, killing three relays made the whole tree stall for 350 ms
//! while every node verified the repairs' records. On threads niced to [`NICENESS`] the
//! overlay gets the CPU the media path leaves; when both want it, the kernel gives the media
//! path about nine tenths of it. The overlay is never starved: it runs whenever media is idle,
//! which at a few hundred packets a second is most of the time.
//!
//! One runtime per process, shared by every overlay the process runs (the swarm harness runs
//! hundreds). Where lowering the priority is not allowed, the threads run at the normal one.

use std::sync::OnceLock;

use thread_priority::{ThreadPriority, ThreadPriorityValue, set_current_thread_priority};

/// Niceness of the overlay threads (`nice` 10: CFS weight 110 against 1024 for normal ones).
pub const NICENESS: i32 = 10;

/// `thread-priority`'s cross-platform value for [`NICENESS`] on Linux (0..=99 maps to
/// nice 19..=-20).
const PRIORITY: u8 = 22;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// The overlay runtime, started on first use; `None` if no thread could be started.
pub fn handle() -> Option<tokio::runtime::Handle> {
    if let Some(rt) = RUNTIME.get() {
        return Some(rt.handle().clone());
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("treecast-overlay")
        .on_thread_start(lower_priority)
        .enable_all()
        .build()
        .map_err(|e| tracing::warn!(error = %e, "no overlay runtime"))
        .ok()?;
    // Another thread may have won the race: use whichever was stored.
    Some(RUNTIME.get_or_init(|| rt).handle().clone())
}

fn lower_priority() {
    let result = ThreadPriorityValue::try_from(PRIORITY)
        .map_err(|e| e.to_string())
        .and_then(|v| {
            set_current_thread_priority(ThreadPriority::Crossplatform(v))
                .map_err(|e| format!("{e:?}"))
        });
    if let Err(e) = result {
        tracing::debug!(error = %e, "overlay threads keep the normal priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The overlay threads really run at the lower priority (read back from /proc).
    #[test]
    fn overlay_threads_run_niced() {
        let Some(rt) = handle() else {
            panic!("no overlay runtime");
        };
        let nice = rt.block_on(async {
            tokio::spawn(async {
                let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
                // Field 19 is the nice value; field 3 is the first after the command's ')'.
                let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
                rest.split_whitespace()
                    .nth(16)
                    .and_then(|f| f.parse::<i32>().ok())
            })
            .await
            .ok()
            .flatten()
        });
        assert_eq!(nice, Some(NICENESS));
    }
}
