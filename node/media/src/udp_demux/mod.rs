//! Which peer connection an incoming datagram on a shared UDP port belongs to: the pure half of
//! the single-port mode (`--udp-port`, docs/operating.md). The socket, the queues and the
//! webrtc runtime around it live in `treecast-node` (`udp_mux`).
//!
//! Routing, in order (the shape of Pion's `UDPMux` and RFC 8445 section 7.2.2):
//! 1. A STUN request with USERNAME goes to the connection whose local ufrag is the part before
//!    the colon; an unknown ufrag is dropped.
//! 2. A STUN response goes to the connection that sent the request with that transaction id,
//!    so concurrent checks and STUN-server queries of many connections never cross.
//! 3. Anything else (DTLS, SRTP, SRTCP, indications) goes to the connection that owns the
//!    source address; an unknown source is dropped.
//!
//! An address is owned by learning, and learning trusts only what our own ICE agents do:
//! sending a STUN response (the agent answers only a check that passed MESSAGE-INTEGRITY) or
//! any non-STUN datagram (DTLS and SRTP go only to a pair ICE selected) claims the destination
//! for the sender, taking it from a previous owner (a reconnect from the same remote port).
//! Sending a check does not: its candidates come from the remote's SDP, and a hostile peer
//! could list another connection's address there. A routed request may claim an address no
//! one owns yet, so the peer's DTLS is not dropped while our answer is still on its way.
//! Nothing an unauthenticated datagram does can move an owned address or reach a second
//! connection. Two live connections to the same remote address and port are ambiguous for
//! DTLS and SRTP (nothing in them names the connection); the latest to send owns it.
//!
//! Every table is bounded: ufrags and addresses per connection, pending transactions overall.

pub mod stun;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;

/// Ufrags kept per connection: the current one and those of earlier ICE restarts.
pub const MAX_UFRAGS: usize = 4;
/// Remote addresses one connection may own (a peer's host, reflexive and relayed candidates).
/// The oldest is forgotten first.
pub const MAX_ADDRS: usize = 16;
/// Outstanding STUN transactions remembered for routing responses, all connections together.
/// ICE paces checks (RFC 8445 section 14.2: one every 50 ms per agent by default), so this
/// covers seconds of checks for every connection a node has; the oldest is forgotten first.
pub const MAX_TRANSACTIONS: usize = 1024;

/// One peer connection sharing the port. Ids only grow, so a larger id is a newer connection.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

impl std::fmt::Debug for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To this connection.
    Conn(ConnId),
    /// Nowhere, for this reason.
    Drop(Dropped),
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// A STUN request for a ufrag no connection has.
    UnknownUfrag,
    /// Not a STUN request, from an address no connection owns.
    UnknownSource,
}

#[derive(Debug, Default)]
struct Conn {
    ufrags: VecDeque<String>,
    addrs: VecDeque<SocketAddr>,
}

/// The routing tables of one shared port.
#[derive(Debug, Default)]
pub struct Demux {
    conns: BTreeMap<ConnId, Conn>,
    ufrags: HashMap<String, ConnId>,
    addrs: HashMap<SocketAddr, ConnId>,
    transactions: HashMap<[u8; 12], ConnId>,
    /// Insertion order of `transactions`, for forgetting the oldest; may hold entries already
    /// answered (skipped when popped).
    transaction_order: VecDeque<([u8; 12], ConnId)>,
}

impl Demux {
    /// Empty tables.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts routing for `conn` (it owns nothing yet).
    pub fn add(&mut self, conn: ConnId) {
        self.conns.entry(conn).or_default();
    }

    /// `conn`'s local ICE ufrag (from its local description): checks naming it go there.
    /// A ufrag already held by another connection stays with it (ufrags are random; a clash
    /// is a bug or an attack, and the first holder keeps working).
    pub fn set_ufrag(&mut self, conn: ConnId, ufrag: &str) {
        let Some(entry) = self.conns.get_mut(&conn) else {
            return;
        };
        if self.ufrags.contains_key(ufrag) {
            return;
        }
        self.ufrags.insert(ufrag.to_owned(), conn);
        entry.ufrags.push_back(ufrag.to_owned());
        if entry.ufrags.len() > MAX_UFRAGS
            && let Some(old) = entry.ufrags.pop_front()
        {
            self.ufrags.remove(&old);
        }
    }

    /// Stops routing for `conn` and forgets everything it held.
    pub fn remove(&mut self, conn: ConnId) {
        let Some(entry) = self.conns.remove(&conn) else {
            return;
        };
        for ufrag in entry.ufrags {
            self.ufrags.remove(&ufrag);
        }
        for addr in entry.addrs {
            if self.addrs.get(&addr) == Some(&conn) {
                self.addrs.remove(&addr);
            }
        }
        self.transactions.retain(|_, c| *c != conn);
        self.transaction_order.retain(|(_, c)| *c != conn);
    }

    /// Records that `conn` sends `datagram` to `to` (see the module docs for what it learns).
    pub fn on_send(&mut self, conn: ConnId, to: SocketAddr, datagram: &[u8]) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        match stun::parse(datagram) {
            Some(h) if h.class == stun::Class::Request => {
                self.transactions.insert(h.transaction, conn);
                self.transaction_order.push_back((h.transaction, conn));
                while self.transaction_order.len() > MAX_TRANSACTIONS {
                    if let Some((t, c)) = self.transaction_order.pop_front()
                        && self.transactions.get(&t) == Some(&c)
                    {
                        self.transactions.remove(&t);
                    }
                }
            }
            Some(h) if h.class == stun::Class::Indication => {}
            // A response (to an authenticated check) or DTLS/SRTP: the agent chose `to`.
            _ => self.claim(conn, to, true),
        }
    }

    /// The connection `datagram` from `from` belongs to.
    pub fn route(&mut self, from: SocketAddr, datagram: &[u8]) -> Route {
        let header = stun::parse(datagram);
        if let Some(h) = header {
            match (h.class, h.username) {
                (stun::Class::Request, Some(username)) => {
                    let ufrag = stun::local_ufrag(username);
                    let conn = std::str::from_utf8(ufrag)
                        .ok()
                        .and_then(|u| self.ufrags.get(u))
                        .copied();
                    return match conn {
                        Some(conn) => {
                            self.claim(conn, from, false);
                            Route::Conn(conn)
                        }
                        None => Route::Drop(Dropped::UnknownUfrag),
                    };
                }
                (stun::Class::Success | stun::Class::Error, _) => {
                    if let Some(conn) = self.transactions.remove(&h.transaction) {
                        return Route::Conn(conn);
                    }
                }
                _ => {}
            }
        }
        match self.addrs.get(&from) {
            Some(conn) => Route::Conn(*conn),
            None => Route::Drop(Dropped::UnknownSource),
        }
    }

    /// The connection that owns `addr`, if any.
    pub fn owner(&self, addr: SocketAddr) -> Option<ConnId> {
        self.addrs.get(&addr).copied()
    }

    /// How many entries the tables hold: (connections, ufrags, addresses, transactions).
    pub fn sizes(&self) -> (usize, usize, usize, usize) {
        (
            self.conns.len(),
            self.ufrags.len(),
            self.addrs.len(),
            self.transactions.len(),
        )
    }

    /// `conn` owns `addr` from now on; `take` moves it from another owner, else only an
    /// address no one owns is claimed.
    fn claim(&mut self, conn: ConnId, addr: SocketAddr, take: bool) {
        match self.addrs.get(&addr) {
            Some(owner) if *owner == conn => return,
            Some(_) if !take => return,
            _ => {}
        }
        let Some(entry) = self.conns.get_mut(&conn) else {
            return;
        };
        self.addrs.insert(addr, conn);
        entry.addrs.push_back(addr);
        // The list may still hold addresses taken since by another connection; they count
        // towards the bound and are skipped when forgotten.
        while entry.addrs.len() > MAX_ADDRS {
            if let Some(old) = entry.addrs.pop_front()
                && self.addrs.get(&old) == Some(&conn)
            {
                self.addrs.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests;
