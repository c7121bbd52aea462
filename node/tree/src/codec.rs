//! The compact binary encoding of a [`NodeRecord`] as it travels in gossip.
//!
//! Layout (format 1, integers little-endian), at most [`MAX_RECORD_BYTES`]:
//!
//! ```text
//! 0   2  magic "TC"
//! 2   1  format = 1
//! 3   1  flags: bit0 parent present, bit1 via present, bit2 receiving, bit3 browser,
//!          bit4 refresh interval present
//! 4   1  role (0 broadcaster, 1 relay, 2 viewer)
//! 5   1  reachability (0 public, 1 nat, 2 relay-only)
//! 6   1  capacity (0..=4)
//! 7   1  number of children (0..=4)
//! 8   8  node id
//! 16  8  seq
//! 24  2  depth
//! 26  2  protocol version
//! 28  4  uptime, seconds
//! 32  4  link kbit/s
//! 36  2  link loss, per mille
//! 38  2  link rtt, ms
//! 40  1  stream name length n (1..=64), then n bytes
//! ..  8  parent id, if flagged
//! ..  8  via id, if flagged
//! ..  8  each child id
//! ..  1  refresh interval, tens of seconds (1..), if flagged
//! ```
//!
//! Decoding checks every field and the record rules ([`crate::Node::validate`]); hostile bytes
//! give an error, never a panic.

use crate::id::{MAX_STREAM_ID_LEN, NodeId, StreamId};
use crate::record::{
    Children, LinkStats, MAX_CHILDREN, Node, NodeRecord, Platform, Reachability, RecordError, Role,
};

/// The largest encoded record accepted.
pub const MAX_RECORD_BYTES: usize = 256;
const MAGIC: &[u8; 2] = b"TC";
const FORMAT: u8 = 1;
const FIXED: usize = 41;
const F_PARENT: u8 = 1;
const F_VIA: u8 = 2;
const F_RECEIVING: u8 = 4;
const F_BROWSER: u8 = 8;
const F_REFRESH: u8 = 16;

/// Why bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// More than [`MAX_RECORD_BYTES`].
    #[error("record of {0} bytes is over the 256-byte limit")]
    TooLarge(usize),
    /// Ends before a field.
    #[error("record truncated")]
    Truncated,
    /// Not a treecast record.
    #[error("bad magic")]
    BadMagic,
    /// A format this version does not read.
    #[error("unsupported record format {0}")]
    Format(u8),
    /// A field outside its range.
    #[error("invalid field: {0}")]
    Field(&'static str),
    /// Bytes after the last field.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// Well-formed bytes, but the record breaks a rule.
    #[error("invalid record: {0}")]
    Record(#[from] RecordError),
}

impl NodeRecord {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let n = &self.node;
        let mut out = Vec::with_capacity(FIXED + self.stream.as_str().len() + 8 * 6);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        let mut flags = 0;
        if n.parent.is_some() {
            flags |= F_PARENT;
        }
        if n.via.is_some() {
            flags |= F_VIA;
        }
        if n.receiving {
            flags |= F_RECEIVING;
        }
        if n.platform == Platform::Browser {
            flags |= F_BROWSER;
        }
        if n.refresh_tens != 0 {
            flags |= F_REFRESH;
        }
        out.push(flags);
        out.push(match n.role {
            Role::Broadcaster => 0,
            Role::Relay => 1,
            Role::Viewer => 2,
        });
        out.push(match n.reach {
            Reachability::Public => 0,
            Reachability::Nat => 1,
            Reachability::RelayOnly => 2,
        });
        out.push(n.capacity);
        out.push(n.children.len() as u8);
        out.extend_from_slice(&n.id.0.to_le_bytes());
        out.extend_from_slice(&n.seq.to_le_bytes());
        out.extend_from_slice(&n.depth.to_le_bytes());
        out.extend_from_slice(&n.version.to_le_bytes());
        out.extend_from_slice(&n.uptime_s.to_le_bytes());
        out.extend_from_slice(&n.link.kbps.to_le_bytes());
        out.extend_from_slice(&n.link.loss_permille.to_le_bytes());
        out.extend_from_slice(&n.link.rtt_ms.to_le_bytes());
        let name = self.stream.as_str().as_bytes();
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        for id in n
            .parent
            .iter()
            .chain(n.via.iter())
            .chain(n.children.as_slice())
        {
            out.extend_from_slice(&id.0.to_le_bytes());
        }
        if n.refresh_tens != 0 {
            out.push(n.refresh_tens);
        }
        out
    }

    /// Decodes and validates a record.
    pub fn decode(bytes: &[u8]) -> Result<NodeRecord, DecodeError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let mut r = Reader(bytes);
        if r.take(2)? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let format = r.u8()?;
        if format != FORMAT {
            return Err(DecodeError::Format(format));
        }
        let flags = r.u8()?;
        if flags & !(F_PARENT | F_VIA | F_RECEIVING | F_BROWSER | F_REFRESH) != 0 {
            return Err(DecodeError::Field("flags"));
        }
        let role = match r.u8()? {
            0 => Role::Broadcaster,
            1 => Role::Relay,
            2 => Role::Viewer,
            _ => return Err(DecodeError::Field("role")),
        };
        let reach = match r.u8()? {
            0 => Reachability::Public,
            1 => Reachability::Nat,
            2 => Reachability::RelayOnly,
            _ => return Err(DecodeError::Field("reachability")),
        };
        let capacity = r.u8()?;
        if usize::from(capacity) > MAX_CHILDREN {
            return Err(DecodeError::Field("capacity"));
        }
        let n_children = usize::from(r.u8()?);
        if n_children > MAX_CHILDREN {
            return Err(DecodeError::Field("children"));
        }
        let id = NodeId(r.u64()?);
        let seq = r.u64()?;
        let depth = r.u16()?;
        let version = r.u16()?;
        let uptime_s = r.u32()?;
        let link = LinkStats {
            kbps: r.u32()?,
            loss_permille: r.u16()?,
            rtt_ms: r.u16()?,
        };
        let name_len = usize::from(r.u8()?);
        if name_len == 0 || name_len > MAX_STREAM_ID_LEN {
            return Err(DecodeError::Field("stream"));
        }
        let name =
            std::str::from_utf8(r.take(name_len)?).map_err(|_| DecodeError::Field("stream"))?;
        let stream = StreamId::new(name).map_err(|_| DecodeError::Field("stream"))?;
        let parent = if flags & F_PARENT != 0 {
            Some(NodeId(r.u64()?))
        } else {
            None
        };
        let via = if flags & F_VIA != 0 {
            Some(NodeId(r.u64()?))
        } else {
            None
        };
        let mut children = Children::new();
        let mut last = None;
        for _ in 0..n_children {
            let id = NodeId(r.u64()?);
            // Children travel sorted and unique, so every record has exactly one encoding.
            if last.is_some_and(|l| l >= id) {
                return Err(DecodeError::Field("children not sorted and unique"));
            }
            last = Some(id);
            children.insert(id);
        }
        let refresh_tens = if flags & F_REFRESH != 0 {
            // Zero travels as an absent field: one encoding per record.
            match r.u8()? {
                0 => return Err(DecodeError::Field("refresh")),
                s => s,
            }
        } else {
            0
        };
        if !r.0.is_empty() {
            return Err(DecodeError::Trailing(r.0.len()));
        }
        let node = Node {
            id,
            seq,
            role,
            platform: if flags & F_BROWSER != 0 {
                Platform::Browser
            } else {
                Platform::Native
            },
            reach,
            parent,
            children,
            depth,
            capacity,
            uptime_s,
            version,
            refresh_tens,
            receiving: flags & F_RECEIVING != 0,
            via,
            link,
        };
        node.validate()?;
        Ok(NodeRecord { stream, node })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> NodeRecord {
        let mut node = Node::new(NodeId(42), Role::Relay, 3);
        node.seq = 99;
        node.parent = Some(NodeId(7));
        node.depth = 2;
        node.children = Children::from_ids([NodeId(5), NodeId(6)]).unwrap();
        node.via = Some(NodeId(1000));
        node.receiving = true;
        node.platform = Platform::Browser;
        node.reach = Reachability::Nat;
        node.link = LinkStats {
            kbps: 1500,
            loss_permille: 12,
            rtt_ms: 40,
        };
        NodeRecord {
            stream: StreamId::new("demo").unwrap(),
            node,
        }
    }

    #[test]
    fn round_trip() {
        let rec = sample();
        let bytes = rec.encode();
        assert_eq!(NodeRecord::decode(&bytes), Ok(rec));
    }

    #[test]
    fn a_declared_refresh_round_trips_and_zero_has_one_encoding() {
        let mut rec = sample();
        let plain = rec.encode();
        rec.node.refresh_tens = 120;
        let bytes = rec.encode();
        assert_eq!(bytes.len(), plain.len() + 1);
        assert_eq!(NodeRecord::decode(&bytes), Ok(rec));
        // The flag with a zero interval: zero travels as no field.
        let mut zero = bytes.clone();
        *zero.last_mut().unwrap() = 0;
        assert_eq!(
            NodeRecord::decode(&zero),
            Err(DecodeError::Field("refresh"))
        );
        // The flag without the byte.
        let mut short = plain.clone();
        short[3] |= F_REFRESH;
        assert_eq!(NodeRecord::decode(&short), Err(DecodeError::Truncated));
    }

    #[test]
    fn largest_record_fits_the_cap() {
        let mut rec = sample();
        rec.node.refresh_tens = u8::MAX;
        rec.stream = StreamId::new("s".repeat(64)).unwrap();
        rec.node.children =
            Children::from_ids([NodeId(11), NodeId(12), NodeId(13), NodeId(14)]).unwrap();
        assert!(rec.encode().len() <= MAX_RECORD_BYTES);
    }

    #[test]
    fn hostile_bytes_are_errors() {
        let good = sample().encode();
        assert_eq!(NodeRecord::decode(&[]), Err(DecodeError::Truncated));
        assert_eq!(
            NodeRecord::decode(&vec![0; 300]),
            Err(DecodeError::TooLarge(300))
        );
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(NodeRecord::decode(&bad), Err(DecodeError::BadMagic));
        let mut bad = good.clone();
        bad[6] = 5;
        assert_eq!(
            NodeRecord::decode(&bad),
            Err(DecodeError::Field("capacity"))
        );
        let mut bad = good.clone();
        bad.push(0);
        assert_eq!(NodeRecord::decode(&bad), Err(DecodeError::Trailing(1)));
        for cut in 0..good.len() {
            assert!(NodeRecord::decode(&good[..cut]).is_err());
        }
        // A record naming itself as parent is well-formed bytes but an invalid record.
        let mut own = sample();
        own.node.parent = Some(own.node.id);
        assert_eq!(
            NodeRecord::decode(&own.encode()),
            Err(DecodeError::Record(RecordError::OwnParent))
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = NodeRecord::decode(&bytes);
        }

        #[test]
        fn mutated_records_never_panic_and_reencode_identically(pos in 0usize..120, val in any::<u8>()) {
            let mut bytes = sample().encode();
            if pos < bytes.len() { bytes[pos] = val; }
            if let Ok(rec) = NodeRecord::decode(&bytes) {
                prop_assert_eq!(rec.encode(), bytes);
            }
        }
    }
}
