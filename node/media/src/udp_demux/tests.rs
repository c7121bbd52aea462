use super::stun::tests::message;
use super::*;
use proptest::prelude::*;

const USERNAME: u16 = 0x0006;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], port))
}

fn check(ufrag: &str, transaction: u8) -> Vec<u8> {
    let username = format!("{ufrag}:remote");
    message(
        0x0001,
        [transaction; 12],
        &[(USERNAME, username.as_bytes())],
    )
}

fn success(transaction: u8) -> Vec<u8> {
    message(0x0101, [transaction; 12], &[])
}

/// A DTLS handshake record (RFC 7983: first byte 20..=63).
const DTLS: &[u8] = &[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// An SRTP packet (first byte 128..=191).
const SRTP: &[u8] = &[0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 9, 9];

/// Two connections, "a" and "b", as a node has them after their local descriptions.
fn two() -> (Demux, ConnId, ConnId) {
    let mut d = Demux::new();
    let (a, b) = (ConnId(1), ConnId(2));
    d.add(a);
    d.add(b);
    d.set_ufrag(a, "ufragA");
    d.set_ufrag(b, "ufragB");
    (d, a, b)
}

#[test]
fn checks_go_by_ufrag_then_the_answer_teaches_the_address() {
    let (mut d, a, b) = two();
    assert_eq!(
        d.route(addr(1000), SRTP),
        Route::Drop(Dropped::UnknownSource)
    );
    assert_eq!(d.route(addr(1000), &check("ufragA", 1)), Route::Conn(a));
    assert_eq!(d.route(addr(2000), &check("ufragB", 2)), Route::Conn(b));
    assert_eq!(
        d.route(addr(3000), &check("nobody", 3)),
        Route::Drop(Dropped::UnknownUfrag)
    );
    // The checks claimed their unowned sources, so DTLS that overtakes our answer gets through.
    assert_eq!(d.route(addr(1000), DTLS), Route::Conn(a));
    assert_eq!(d.route(addr(2000), SRTP), Route::Conn(b));
    assert_eq!(
        d.route(addr(3000), SRTP),
        Route::Drop(Dropped::UnknownSource)
    );
}

#[test]
fn a_check_with_a_known_ufrag_cannot_move_an_owned_address() {
    let (mut d, a, b) = two();
    d.on_send(a, addr(1000), DTLS);
    // A forged check naming b's ufrag from a's peer: b's agent gets it (and will reject its
    // integrity), but a keeps the address.
    assert_eq!(d.route(addr(1000), &check("ufragB", 9)), Route::Conn(b));
    assert_eq!(d.owner(addr(1000)), Some(a));
    assert_eq!(d.route(addr(1000), SRTP), Route::Conn(a));
}

#[test]
fn responses_follow_their_transaction_not_the_address() {
    let (mut d, a, b) = two();
    // Both query the same STUN server (or check the same remote): the answers must not cross.
    let server = addr(3478);
    d.on_send(a, server, &check("remote", 10));
    d.on_send(b, server, &check("remote", 11));
    assert_eq!(d.owner(server), None, "a check teaches no address");
    assert_eq!(d.route(server, &success(11)), Route::Conn(b));
    assert_eq!(d.route(server, &success(10)), Route::Conn(a));
    // Answered once: a replay has no transaction left and the server owns no route.
    assert_eq!(
        d.route(server, &success(10)),
        Route::Drop(Dropped::UnknownSource)
    );
}

#[test]
fn a_newer_sender_takes_the_address_over() {
    let (mut d, a, b) = two();
    d.on_send(a, addr(1000), DTLS);
    d.on_send(b, addr(1000), &success(5)); // b answered an authenticated check from there
    assert_eq!(d.route(addr(1000), SRTP), Route::Conn(b));
    d.remove(b);
    // a's claim was taken; it is not silently restored, a must send again.
    assert_eq!(
        d.route(addr(1000), SRTP),
        Route::Drop(Dropped::UnknownSource)
    );
    d.on_send(a, addr(1000), SRTP);
    assert_eq!(d.route(addr(1000), SRTP), Route::Conn(a));
}

#[test]
fn removal_releases_everything() {
    let (mut d, a, b) = two();
    d.on_send(a, addr(1000), DTLS);
    d.on_send(a, addr(3478), &check("x", 1));
    d.on_send(b, addr(2000), DTLS);
    d.remove(a);
    assert_eq!(
        d.route(addr(1000), DTLS),
        Route::Drop(Dropped::UnknownSource)
    );
    assert_eq!(
        d.route(addr(5), &check("ufragA", 2)),
        Route::Drop(Dropped::UnknownUfrag)
    );
    assert_eq!(d.route(addr(2000), DTLS), Route::Conn(b));
    d.remove(b);
    assert_eq!(d.sizes(), (0, 0, 0, 0));
    // Sends and ufrags of a removed connection change nothing.
    d.on_send(a, addr(1000), DTLS);
    d.set_ufrag(a, "again");
    assert_eq!(d.sizes(), (0, 0, 0, 0));
}

#[test]
fn tables_stay_bounded() {
    let (mut d, a, _) = two();
    for port in 0..1000 {
        d.on_send(a, addr(port), DTLS);
    }
    for i in 0..10 {
        d.set_ufrag(a, &format!("restart{i}"));
    }
    for t in 0..5000u32 {
        let mut id = [0u8; 12];
        id[..4].copy_from_slice(&t.to_be_bytes());
        d.on_send(a, addr(1), &message(0x0001, id, &[]));
    }
    let (_, ufrags, addrs, transactions) = d.sizes();
    assert_eq!(addrs, MAX_ADDRS);
    assert_eq!(ufrags, MAX_UFRAGS + 1, "a's newest four and b's one");
    assert_eq!(transactions, MAX_TRANSACTIONS);
    // The newest are the ones kept.
    assert_eq!(d.route(addr(999), SRTP), Route::Conn(a));
    assert_eq!(d.route(addr(0), SRTP), Route::Drop(Dropped::UnknownSource));
    assert_eq!(d.route(addr(7), &check("restart9", 1)), Route::Conn(a));
    assert_eq!(
        d.route(addr(7), &check("ufragA", 1)),
        Route::Drop(Dropped::UnknownUfrag)
    );
}

#[derive(Debug, Clone)]
enum Op {
    Add,
    Remove(u8),
    Ufrag(u8, u8),
    Send(u8, u8, Kind),
    /// A datagram from the network.
    Recv(u8, Kind),
    /// Arbitrary bytes from the network.
    Garbage(u8, Vec<u8>),
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Check(u8, u8),
    Success(u8),
    Dtls,
}

fn datagram(kind: Kind) -> Vec<u8> {
    match kind {
        Kind::Check(ufrag, t) => check(&format!("u{ufrag}"), t),
        Kind::Success(t) => success(t),
        Kind::Dtls => DTLS.to_vec(),
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (0..6u8, 0..8u8).prop_map(|(u, t)| Kind::Check(u, t)),
        (0..8u8).prop_map(Kind::Success),
        Just(Kind::Dtls),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Add),
        (0..8u8).prop_map(Op::Remove),
        (0..8u8, 0..6u8).prop_map(|(c, u)| Op::Ufrag(c, u)),
        (0..8u8, 0..6u8, kind()).prop_map(|(c, a, k)| Op::Send(c, a, k)),
        (0..6u8, kind()).prop_map(|(a, k)| Op::Recv(a, k)),
        (0..6u8, proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(a, b)| Op::Garbage(a, b)),
    ]
}

proptest! {
    /// Over any sequence of connections coming and going, sends, checks and garbage: routes
    /// only reach live connections; garbage never reaches a connection that does not own its
    /// source and never moves an address; a check moves no owned address; the tables stay
    /// bounded; and once every connection is removed nothing is left.
    #[test]
    fn demux_invariants(ops in proptest::collection::vec(op(), 1..200)) {
        let mut d = Demux::new();
        let mut next = 0u64;
        let mut live: Vec<ConnId> = Vec::new();
        let pick = |live: &[ConnId], i: u8| live.get(usize::from(i) % live.len().max(1)).copied();
        for op in ops {
            match op {
                Op::Add => {
                    next += 1;
                    d.add(ConnId(next));
                    live.push(ConnId(next));
                }
                Op::Remove(i) => {
                    if let Some(c) = pick(&live, i) {
                        d.remove(c);
                        live.retain(|l| *l != c);
                    }
                }
                Op::Ufrag(i, u) => {
                    if let Some(c) = pick(&live, i) {
                        d.set_ufrag(c, &format!("u{u}"));
                    }
                }
                Op::Send(i, a, k) => {
                    if let Some(c) = pick(&live, i) {
                        d.on_send(c, addr(u16::from(a)), &datagram(k));
                    }
                }
                Op::Recv(a, k) => {
                    let from = addr(u16::from(a));
                    let before = d.owner(from);
                    let route = d.route(from, &datagram(k));
                    if let Route::Conn(c) = route {
                        prop_assert!(live.contains(&c), "{route:?} to a removed connection");
                    }
                    if before.is_some() {
                        prop_assert_eq!(d.owner(from), before, "a received datagram moved an owned address");
                    }
                }
                Op::Garbage(a, bytes) => {
                    let from = addr(u16::from(a));
                    let before = d.owner(from);
                    let route = d.route(from, &bytes);
                    if stun::parse(&bytes).is_none() {
                        prop_assert_eq!(route, before.map_or(Route::Drop(Dropped::UnknownSource), Route::Conn));
                    }
                    if before.is_some() {
                        prop_assert_eq!(d.owner(from), before);
                    }
                }
            }
            let (conns, ufrags, addrs, transactions) = d.sizes();
            prop_assert_eq!(conns, live.len());
            prop_assert!(ufrags <= conns * MAX_UFRAGS);
            prop_assert!(addrs <= conns * MAX_ADDRS);
            prop_assert!(transactions <= MAX_TRANSACTIONS);
        }
        for c in live {
            d.remove(c);
        }
        prop_assert_eq!(d.sizes(), (0, 0, 0, 0));
    }
}
