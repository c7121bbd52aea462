//! RTCP arrives from any child: splitting and parsing compound packets must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use treecast_media::rtcp::{Compound, RtcpPacket};

fuzz_target!(|data: &[u8]| {
    for packet in Compound::new(data) {
        match packet {
            Ok(RtcpPacket::Nack(n)) => {
                let _ = n.seqs().count();
            }
            Ok(RtcpPacket::Fir(f)) => {
                let _ = f.entries().count();
            }
            Ok(RtcpPacket::ReceiverReport(r)) => {
                let _ = r.blocks.count();
            }
            Ok(RtcpPacket::SenderReport(s)) => {
                let _ = s.blocks.count();
            }
            _ => {}
        }
    }
});
