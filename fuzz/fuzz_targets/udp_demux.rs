//! Any datagram from anyone reaches a shared UDP port (`--udp-port`): routing it, among
//! connections that come and go and send, must never panic, and a route only ever names a
//! live connection.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use treecast_media::udp_demux::{ConnId, Demux, Route};

fuzz_target!(|data: &[u8]| {
    let mut demux = Demux::new();
    let mut live: Vec<ConnId> = Vec::new();
    let mut next = 0u64;
    // Records: [op, arg, len, bytes...].
    let mut rest = data;
    while let [op, arg, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, after) = tail.split_at(n);
        rest = after;
        let addr = SocketAddr::from(([192, 0, 2, 1], u16::from(*arg % 8)));
        let pick = live.get(usize::from(*arg) % live.len().max(1)).copied();
        match op % 5 {
            0 => {
                next += 1;
                demux.add(ConnId(next));
                live.push(ConnId(next));
            }
            1 => {
                if let Some(c) = pick {
                    demux.remove(c);
                    live.retain(|l| *l != c);
                }
            }
            2 => {
                if let (Some(c), Ok(u)) = (pick, std::str::from_utf8(bytes)) {
                    demux.set_ufrag(c, u);
                }
            }
            3 => {
                if let Some(c) = pick {
                    demux.on_send(c, addr, bytes);
                }
            }
            _ => {
                if let Route::Conn(c) = demux.route(addr, bytes) {
                    assert!(live.contains(&c), "routed to a removed connection");
                }
            }
        }
    }
});
