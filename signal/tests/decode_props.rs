//! The decoder of browser input never panics and never accepts what it then cannot encode
//! back: arbitrary text, and fixtures with random bytes changed, cut or inserted.
//! (A cargo-fuzz target would need axum and tokio in the fuzz build; this runs in `cargo test`.)

use proptest::prelude::*;
use treecast_signal::protocol::{ClientMessage, MAX_MESSAGE_BYTES};

fn fixtures() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .expect("fixtures")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("client."))
        .map(|e| std::fs::read_to_string(e.path()).expect("read"))
        .collect();
    out.sort();
    out
}

fn check(text: &str) {
    if let Ok(m) = ClientMessage::decode(text) {
        let again = serde_json::to_string(&m).expect("encodes");
        assert_eq!(
            ClientMessage::decode(&again).ok(),
            Some(m),
            "stable round trip"
        );
        assert!(text.len() <= MAX_MESSAGE_BYTES);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        check(&text);
    }

    #[test]
    fn mutated_fixtures_never_panic(
        which in 0usize..64,
        edits in prop::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let all = fixtures();
        let mut bytes = all[which % all.len()].clone().into_bytes();
        for (pos, byte, op) in edits {
            let at = usize::from(pos) % (bytes.len() + 1);
            match op {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ => bytes.truncate(at),
            }
        }
        check(&String::from_utf8_lossy(&bytes));
    }
}
