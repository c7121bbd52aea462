//! Rewriting a packet for one downstream leg: the only bytes a treecast node changes.
//!
//! Payload, padding, marker and CSRCs are copied verbatim. SSRC and payload type are set per leg
//! (each child leg negotiates its own), sequence number and timestamp come from the munger, and
//! header extension ids are translated through the leg's [`ExtensionMap`]
//! (see `notes/dependencies.md`, webrtc 0.21 pitfall 1).

use bytes::{BufMut, Bytes, BytesMut};

use super::extension::{
    Element, ExtensionBlock, ExtensionKind, ExtensionMap, ONE_BYTE_PROFILE, TWO_BYTE_PROFILE,
};
use super::packet::{FIXED_HEADER_LEN, Packet};

/// The header fields written into a forwarded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegHeader {
    /// The SSRC of the child leg's local track.
    pub ssrc: u32,
    /// The payload type the child leg negotiated for this codec.
    pub payload_type: u8,
    /// Outgoing sequence number (from the munger).
    pub sequence: u16,
    /// Outgoing timestamp (from the munger).
    pub timestamp: u32,
}

/// Rewrites `packet` for a leg and returns the new packet.
///
/// Allocates exactly once; on the hot path prefer [`rewrite_into`] with a reused buffer.
pub fn rewrite(packet: &Packet<'_>, header: &LegHeader, extensions: &ExtensionMap) -> Bytes {
    let mut out = BytesMut::new();
    rewrite_into(packet, header, extensions, &mut out);
    out.freeze()
}

/// Appends the rewritten packet to `out`, reserving what it needs.
///
/// Use with one long-lived `BytesMut` and `out.split().freeze()` after each call: consecutive
/// packets then share one allocation, and the frozen `Bytes` can go to the cache and every queue.
///
/// Extension elements are remapped through `extensions`; elements mapped to `None` are dropped,
/// and when none is left the X bit is cleared and the block removed. The output uses the
/// one-byte form (RFC 8285 §4.2) whenever every kept element fits it, and the two-byte form
/// (RFC 8285 §4.3, which the leg must have negotiated with `a=extmap-allow-mixed`) otherwise.
/// Blocks with an unknown profile (RFC 3550 §5.3.1) are stripped: the child cannot have
/// negotiated them.
pub fn rewrite_into(
    packet: &Packet<'_>,
    header: &LegHeader,
    extensions: &ExtensionMap,
    out: &mut BytesMut,
) {
    let plan = packet
        .extension()
        .map(|block| Plan::new(block, extensions))
        .filter(|plan| plan.kept > 0);
    let csrcs = packet.csrc_bytes();
    let body = packet.body();
    let ext_len = plan.as_ref().map_or(0, Plan::block_len);
    out.reserve(FIXED_HEADER_LEN + csrcs.len() + ext_len + body.len());

    let first = packet.as_bytes()[0];
    // Keep V, P and CC; X only if a block survives.
    let x_bit = if plan.is_some() { 0x10 } else { 0 };
    out.put_u8((first & 0xef) | x_bit);
    out.put_u8(u8::from(packet.marker) << 7 | (header.payload_type & 0x7f));
    out.put_u16(header.sequence);
    out.put_u32(header.timestamp);
    out.put_u32(header.ssrc);
    out.put_slice(csrcs);
    if let (Some(plan), Some(block)) = (plan, packet.extension()) {
        plan.write(block, extensions, out);
    }
    out.put_slice(body);
}

/// What survives of an extension block, computed without allocating.
#[derive(Debug, Clone, Copy)]
struct Plan {
    kept: usize,
    /// Sum of the kept elements' value lengths.
    value_bytes: usize,
    one_byte: bool,
    profile: u16,
}

impl Plan {
    fn new(block: ExtensionBlock<'_>, map: &ExtensionMap) -> Plan {
        let mut plan = Plan {
            kept: 0,
            value_bytes: 0,
            one_byte: true,
            profile: ONE_BYTE_PROFILE,
        };
        if block.kind() == ExtensionKind::Other {
            return plan;
        }
        for (id, element) in kept(block, map) {
            plan.kept += 1;
            plan.value_bytes += element.data.len();
            plan.one_byte &= (1..=14).contains(&id) && (1..=16).contains(&element.data.len());
        }
        if !plan.one_byte {
            plan.profile = if block.kind() == ExtensionKind::TwoByte {
                block.profile // keep the appbits
            } else {
                TWO_BYTE_PROFILE
            };
        }
        plan
    }

    /// Bytes of the elements, before padding to a 32-bit boundary.
    fn elements_len(&self) -> usize {
        let per_element = if self.one_byte { 1 } else { 2 };
        self.kept * per_element + self.value_bytes
    }

    /// The whole block: 4-byte header plus elements padded to 32 bits.
    fn block_len(&self) -> usize {
        4 + self.elements_len().div_ceil(4) * 4
    }

    fn write(&self, block: ExtensionBlock<'_>, map: &ExtensionMap, out: &mut BytesMut) {
        let padded = self.elements_len().div_ceil(4) * 4;
        out.put_u16(self.profile);
        // The input came in one UDP datagram (< 64 KiB) and each element grows by at most one byte,
        // so the block is < 2^17 bytes and its word count fits 16 bits.
        out.put_u16((padded / 4) as u16);
        for (id, element) in kept(block, map) {
            if self.one_byte {
                // Lengths 1..=16 are checked in Plan::new.
                out.put_u8(id << 4 | (element.data.len() - 1) as u8);
            } else {
                out.put_u8(id);
                // Both input forms cap a value at 255 bytes.
                out.put_u8(element.data.len() as u8);
            }
            out.put_slice(element.data);
        }
        out.put_bytes(0, padded - self.elements_len());
    }
}

fn kept<'a, 'm>(
    block: ExtensionBlock<'a>,
    map: &'m ExtensionMap,
) -> impl Iterator<Item = (u8, Element<'a>)> + use<'a, 'm> {
    block
        .elements()
        .filter_map(move |e| map.map(e.id).map(|id| (id, e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LEG: LegHeader = LegHeader {
        ssrc: 0xaabb_ccdd,
        payload_type: 102,
        sequence: 7,
        timestamp: 9000,
    };

    /// V=2, X per `ext`, PT 108, M=1, one CSRC, optional extension, payload "xyz".
    fn packet(ext: Option<(u16, &[u8])>) -> Vec<u8> {
        let x = if ext.is_some() { 0x10 } else { 0 };
        let mut p = vec![
            0x81 | x,
            0x80 | 108,
            0,
            1,
            0,
            0,
            0,
            2,
            0,
            0,
            0,
            3,
            0,
            0,
            0,
            9,
        ];
        if let Some((profile, data)) = ext {
            p.extend(profile.to_be_bytes());
            p.extend(((data.len() / 4) as u16).to_be_bytes());
            p.extend(data);
        }
        p.extend(b"xyz");
        p
    }

    fn rewritten(input: &[u8], map: &ExtensionMap) -> Vec<u8> {
        let p = Packet::parse(input).expect("valid input");
        rewrite(&p, &LEG, map).to_vec()
    }

    #[test]
    fn sets_leg_fields_and_keeps_the_rest() {
        let out = rewritten(&packet(None), &ExtensionMap::strip_all());
        let p = Packet::parse(&out).expect("valid output");
        assert_eq!((p.ssrc, p.payload_type), (LEG.ssrc, 102));
        assert_eq!((p.sequence, p.timestamp), (7, 9000));
        assert!(p.marker);
        assert_eq!(p.csrcs().collect::<Vec<_>>(), vec![9]);
        assert_eq!(p.payload(), b"xyz");
    }

    #[test]
    fn remaps_one_byte_ids_and_drops_the_rest() {
        // id 1 (1 byte), id 2 (2 bytes), id 3 (1 byte), padding
        let data = [0x10, 0xa1, 0x21, 0xb1, 0xb2, 0x30, 0xc1, 0];
        let mut map = ExtensionMap::strip_all();
        map.set(1, Some(5));
        map.set(3, Some(1));
        let out = rewritten(&packet(Some((ONE_BYTE_PROFILE, &data))), &map);
        let p = Packet::parse(&out).expect("valid output");
        let ext = p.extension().expect("kept");
        assert_eq!(ext.profile, ONE_BYTE_PROFILE);
        let e: Vec<_> = ext.elements().map(|e| (e.id, e.data.to_vec())).collect();
        assert_eq!(e, vec![(5, vec![0xa1]), (1, vec![0xc1])]);
        assert_eq!(ext.data().len(), 4);
        assert_eq!(p.payload(), b"xyz");
    }

    #[test]
    fn strips_block_when_nothing_is_left() {
        let data = [0x10, 0xa1, 0, 0];
        let input = packet(Some((ONE_BYTE_PROFILE, &data)));
        let out = rewritten(&input, &ExtensionMap::strip_all());
        assert_eq!(out[0] & 0x10, 0, "X bit cleared");
        assert_eq!(out.len(), input.len() - 8);
        let p = Packet::parse(&out).expect("valid output");
        assert!(p.extension().is_none());
        assert_eq!(p.payload(), b"xyz");
    }

    #[test]
    fn switches_to_two_byte_form_when_an_id_needs_it() {
        let data = [0x10, 0xa1, 0, 0];
        let mut map = ExtensionMap::strip_all();
        map.set(1, Some(20));
        let out = rewritten(&packet(Some((ONE_BYTE_PROFILE, &data))), &map);
        let ext = Packet::parse(&out)
            .expect("valid")
            .extension()
            .expect("kept");
        assert_eq!(ext.kind(), ExtensionKind::TwoByte);
        assert_eq!(ext.find(20), Some(&[0xa1u8][..]));
    }

    #[test]
    fn two_byte_input_becomes_one_byte_when_it_fits() {
        let data = [7, 2, 0xd1, 0xd2];
        let out = rewritten(&packet(Some((0x1000, &data))), &ExtensionMap::identity());
        let ext = Packet::parse(&out)
            .expect("valid")
            .extension()
            .expect("kept");
        assert_eq!(ext.kind(), ExtensionKind::OneByte);
        assert_eq!(ext.find(7), Some(&[0xd1u8, 0xd2][..]));
    }

    #[test]
    fn unknown_profile_is_stripped() {
        let out = rewritten(
            &packet(Some((0x1234, &[1, 2, 3, 4]))),
            &ExtensionMap::identity(),
        );
        assert!(Packet::parse(&out).expect("valid").extension().is_none());
    }

    #[test]
    fn padding_is_preserved() {
        let mut input = packet(None);
        input[0] |= 0x20;
        input.extend([0, 0, 3]);
        let out = rewritten(&input, &ExtensionMap::strip_all());
        let p = Packet::parse(&out).expect("valid");
        assert!(p.has_padding());
        assert_eq!(p.payload(), b"xyz");
    }

    proptest! {
        /// Hostile input: whatever parses, rewritten under any table, parses again with the
        /// same payload and padding. Never panics.
        #[test]
        fn rewrite_of_arbitrary_parsed_input_parses(
            first in 0x80u8..0xc0,
            rest in proptest::collection::vec(any::<u8>(), 11..200),
            ext in proptest::option::of((
                prop_oneof![Just(ONE_BYTE_PROFILE), Just(TWO_BYTE_PROFILE), any::<u16>()],
                proptest::collection::vec(any::<[u8; 4]>(), 0..12),
            )),
            identity in any::<bool>(),
        ) {
            let mut input = vec![first];
            input.extend(rest);
            if let Some((profile, words)) = ext {
                // Force a well-framed block with arbitrary elements after a CSRC-free header.
                input[0] = (first & 0xe0) | 0x10;
                let tail = input.split_off(12);
                input.extend(profile.to_be_bytes());
                input.extend((words.len() as u16).to_be_bytes());
                input.extend(words.concat());
                input.extend(tail);
            }
            if let Ok(p) = Packet::parse(&input) {
                let map = if identity { ExtensionMap::identity() } else { ExtensionMap::strip_all() };
                let out = rewrite(&p, &LEG, &map);
                let q = Packet::parse(&out).expect("rewritten packet parses");
                prop_assert_eq!(q.payload(), p.payload());
                prop_assert_eq!(q.has_padding(), p.has_padding());
                prop_assert_eq!(q.csrcs().collect::<Vec<_>>(), p.csrcs().collect::<Vec<_>>());
                let before: Vec<_> = p.extension().filter(|_| identity).map(|e| e.elements().collect()).unwrap_or_default();
                let after: Vec<_> = q.extension().map(|e| e.elements().collect()).unwrap_or_default();
                prop_assert_eq!(after, before);
            }
        }

        /// Any valid packet rewritten under any table parses again, with the leg's fields, the
        /// same payload, and exactly the mapped elements.
        #[test]
        fn rewrite_round_trips(
            elements in proptest::collection::vec((1u8..=14, proptest::collection::vec(any::<u8>(), 1..=16)), 0..6),
            table in proptest::collection::vec((1u8..=14, proptest::option::of(1u8..=255)), 0..14),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut data = Vec::new();
            for (id, value) in &elements {
                data.push(id << 4 | (value.len() - 1) as u8);
                data.extend(value);
            }
            while data.len() % 4 != 0 { data.push(0); }
            let mut input = vec![0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
            input.extend(ONE_BYTE_PROFILE.to_be_bytes());
            input.extend(((data.len() / 4) as u16).to_be_bytes());
            input.extend(&data);
            input.extend(&payload);
            let mut map = ExtensionMap::strip_all();
            for (from, to) in &table { map.set(*from, *to); }

            let out = rewritten(&input, &map);
            let p = Packet::parse(&out).expect("rewritten packet parses");
            prop_assert_eq!(p.ssrc, LEG.ssrc);
            prop_assert_eq!(p.payload(), &payload[..]);
            let expected: Vec<(u8, Vec<u8>)> = elements.iter()
                .filter_map(|(id, v)| map.map(*id).map(|to| (to, v.clone())))
                .collect();
            let got: Vec<(u8, Vec<u8>)> = p.extension()
                .map(|e| e.elements().map(|e| (e.id, e.data.to_vec())).collect())
                .unwrap_or_default();
            prop_assert_eq!(got, expected);
        }
    }
}
