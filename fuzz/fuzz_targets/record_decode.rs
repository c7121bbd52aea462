//! Gossip records arrive from any peer: decoding must never panic, and whatever decodes must
//! encode back to the very same bytes (the encoding is canonical) and merge without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use treecast_tree::{NodeRecord, StreamId, Time, View};

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = NodeRecord::decode(data) {
        assert_eq!(rec.encode(), data, "record encoding is not canonical");
        let mut view = View::new(rec.stream.clone());
        let _ = view.merge(&rec, Time::ZERO);
        let _ = view.check_invariants();
        let _ = view.depth_of(rec.node.id);
        let mut other = View::new(StreamId::new("other").expect("valid name"));
        assert!(other.merge(&rec, Time::ZERO).is_err() || rec.stream.as_str() == "other");
    }
});
