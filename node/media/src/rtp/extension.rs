//! RTP header extensions: the block (RFC 3550 §5.3.1), its one-byte and two-byte elements
//! (RFC 8285 §4.2, §4.3), and the per-leg id table used when forwarding.

use super::packet::RtpError;

/// Profile value announcing one-byte elements (RFC 8285 §4.2).
pub const ONE_BYTE_PROFILE: u16 = 0xBEDE;
/// Profile value announcing two-byte elements; the low 4 bits are "appbits" (RFC 8285 §4.3).
pub const TWO_BYTE_PROFILE: u16 = 0x1000;

/// How the elements of an extension block are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtensionKind {
    /// 0xBEDE: 4-bit id, 4-bit length-minus-one, ids 1..=14 (RFC 8285 §4.2).
    OneByte,
    /// 0x100X: 8-bit id, 8-bit length, ids 1..=255 (RFC 8285 §4.3).
    TwoByte,
    /// Any other profile: opaque to us (RFC 3550 §5.3.1).
    Other,
}

/// The header extension block of a packet, already validated by [`super::Packet::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionBlock<'a> {
    /// The 16-bit "defined by profile" field.
    pub profile: u16,
    data: &'a [u8],
}

/// One extension element (RFC 8285 §4): a local id and its value bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element<'a> {
    /// Local identifier, negotiated per leg with `a=extmap` (RFC 8285 §5).
    pub id: u8,
    /// The value; 1..=16 bytes in one-byte form, 0..=255 in two-byte form.
    pub data: &'a [u8],
}

impl<'a> ExtensionBlock<'a> {
    /// Validates the element layout of `data` for `profile`; other profiles are accepted as opaque.
    pub(crate) fn parse(profile: u16, data: &'a [u8]) -> Result<Self, RtpError> {
        let block = ExtensionBlock { profile, data };
        let mut walk = block.walk();
        while let Some(step) = walk.next_element() {
            step?;
        }
        Ok(block)
    }

    /// Which element layout the block uses.
    pub fn kind(&self) -> ExtensionKind {
        if self.profile == ONE_BYTE_PROFILE {
            ExtensionKind::OneByte
        } else if self.profile & 0xfff0 == TWO_BYTE_PROFILE {
            ExtensionKind::TwoByte
        } else {
            ExtensionKind::Other
        }
    }

    /// The block's bytes after its 4-byte header, padding included.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The elements in order, skipping padding. Empty for [`ExtensionKind::Other`].
    pub fn elements(&self) -> Elements<'a> {
        Elements { walk: self.walk() }
    }

    /// The value of the element with local id `id`, if present.
    pub fn find(&self, id: u8) -> Option<&'a [u8]> {
        self.elements().find(|e| e.id == id).map(|e| e.data)
    }

    fn walk(&self) -> Walk<'a> {
        Walk {
            kind: self.kind(),
            data: self.data,
            at: 0,
        }
    }
}

/// Iterator over the elements of a validated block. See [`ExtensionBlock::elements`].
#[derive(Debug, Clone)]
pub struct Elements<'a> {
    walk: Walk<'a>,
}

impl<'a> Iterator for Elements<'a> {
    type Item = Element<'a>;

    fn next(&mut self) -> Option<Element<'a>> {
        // The block was validated at parse time; an error here cannot happen, but we stop
        // rather than panic if it ever did.
        self.walk.next_element()?.ok()
    }
}

#[derive(Debug, Clone)]
struct Walk<'a> {
    kind: ExtensionKind,
    data: &'a [u8],
    at: usize,
}

impl<'a> Walk<'a> {
    /// The next element, `None` at the end, or an error if an element overruns the block.
    fn next_element(&mut self) -> Option<Result<Element<'a>, RtpError>> {
        loop {
            let first = *self.data.get(self.at)?;
            match self.kind {
                ExtensionKind::Other => return None,
                ExtensionKind::OneByte => {
                    let id = first >> 4;
                    if id == 0 {
                        // RFC 8285 §4.2: id 0 is a padding byte.
                        self.at += 1;
                        continue;
                    }
                    if id == 15 {
                        // RFC 8285 §4.2: id 15 ends processing of the block.
                        self.at = self.data.len();
                        return None;
                    }
                    let len = usize::from(first & 0x0f) + 1;
                    return Some(self.take(id, 1, len));
                }
                ExtensionKind::TwoByte => {
                    if first == 0 {
                        // RFC 8285 §4.3: a zero byte is padding.
                        self.at += 1;
                        continue;
                    }
                    let Some(&len) = self.data.get(self.at + 1) else {
                        self.at = self.data.len();
                        return Some(Err(RtpError::Extension));
                    };
                    return Some(self.take(first, 2, usize::from(len)));
                }
            }
        }
    }

    fn take(&mut self, id: u8, header: usize, len: usize) -> Result<Element<'a>, RtpError> {
        let start = self.at + header;
        match self.data.get(start..start + len) {
            Some(data) => {
                self.at = start + len;
                Ok(Element { id, data })
            }
            None => {
                self.at = self.data.len();
                Err(RtpError::Extension)
            }
        }
    }
}

/// Per-leg translation of header extension ids: upstream id -> downstream id, or strip.
///
/// Ids are negotiated per peer connection (RFC 8285 §5), so the same extension can carry
/// different ids on the upstream and on each child leg, and an extension the child did not
/// negotiate must not be sent to it (webrtc 0.21 silently drops such packets, see
/// `notes/dependencies.md` pitfall 1). The default table strips everything.
#[derive(Clone, PartialEq, Eq)]
pub struct ExtensionMap {
    /// `to[from]` is the downstream id for upstream id `from`; 0 means strip.
    to: [u8; 256],
}

impl ExtensionMap {
    /// A table that strips every extension.
    pub fn strip_all() -> Self {
        ExtensionMap { to: [0; 256] }
    }

    /// A table that keeps every id as it is (both legs negotiated the same `a=extmap` lines).
    pub fn identity() -> Self {
        let mut to = [0u8; 256];
        for (i, slot) in to.iter_mut().enumerate().skip(1) {
            *slot = i as u8; // i < 256 by construction
        }
        ExtensionMap { to }
    }

    /// Builds the table by matching extension URIs: every upstream `(id, uri)` whose URI the
    /// downstream leg also negotiated maps to the downstream id; the rest are stripped.
    /// URIs compare exactly (RFC 8285 §5: the URI is the extension's name).
    pub fn from_uris(upstream: &[(u8, &str)], downstream: &[(u8, &str)]) -> Self {
        let mut map = Self::strip_all();
        for &(up_id, uri) in upstream {
            if let Some(&(down_id, _)) = downstream.iter().find(|(_, u)| *u == uri) {
                map.set(up_id, Some(down_id));
            }
        }
        map
    }

    /// Maps upstream id `from` to `to` (`None` strips it). Id 0 is padding, never an element,
    /// so `from == 0` and `to == Some(0)` are ignored / mean strip.
    pub fn set(&mut self, from: u8, to: Option<u8>) {
        if from != 0 {
            self.to[usize::from(from)] = to.unwrap_or(0);
        }
    }

    /// The downstream id for upstream id `from`, or `None` to strip.
    pub fn map(&self, from: u8) -> Option<u8> {
        match self.to[usize::from(from)] {
            0 => None,
            id => Some(id),
        }
    }
}

impl Default for ExtensionMap {
    fn default() -> Self {
        Self::strip_all()
    }
}

impl std::fmt::Debug for ExtensionMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = (1..=255u8).filter_map(|from| self.map(from).map(|to| (from, to)));
        f.debug_map().entries(kept).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(profile: u16, data: &[u8]) -> Result<ExtensionBlock<'_>, RtpError> {
        ExtensionBlock::parse(profile, data)
    }

    #[test]
    fn one_byte_elements_with_padding() {
        // id 1 len 1, padding, id 2 len 3, padding x3
        let data = [0x10, 0xaa, 0x00, 0x22, 1, 2, 3, 0, 0, 0, 0, 0];
        let b = block(ONE_BYTE_PROFILE, &data).expect("valid");
        assert_eq!(b.kind(), ExtensionKind::OneByte);
        let e: Vec<_> = b.elements().collect();
        assert_eq!(
            e,
            vec![
                Element {
                    id: 1,
                    data: &[0xaa]
                },
                Element {
                    id: 2,
                    data: &[1, 2, 3]
                }
            ]
        );
        assert_eq!(b.find(2), Some(&[1u8, 2, 3][..]));
        assert_eq!(b.find(3), None);
    }

    #[test]
    fn one_byte_id_15_stops_processing() {
        let data = [0x10, 0xaa, 0xf0, 0x20, 0, 0, 0, 0];
        let b = block(ONE_BYTE_PROFILE, &data).expect("valid");
        assert_eq!(b.elements().count(), 1);
    }

    #[test]
    fn two_byte_elements_allow_empty_and_long_values() {
        let mut data = vec![0x01, 0x00, 0x00, 200, 20];
        data.extend([7u8; 20]);
        data.extend([0, 0, 0]);
        let b = block(0x1003, &data).expect("valid");
        assert_eq!(b.kind(), ExtensionKind::TwoByte);
        let e: Vec<_> = b.elements().collect();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0], Element { id: 1, data: &[] });
        assert_eq!(e[1].id, 200);
        assert_eq!(e[1].data, &[7u8; 20][..]);
    }

    #[test]
    fn rejects_overruns() {
        assert_eq!(
            block(ONE_BYTE_PROFILE, &[0x13, 1, 2, 3]),
            Err(RtpError::Extension)
        );
        assert_eq!(block(0x1000, &[0x05, 4, 1, 2]), Err(RtpError::Extension));
        assert_eq!(block(0x1000, &[0, 0, 0, 0x05]), Err(RtpError::Extension));
    }

    #[test]
    fn other_profiles_are_opaque() {
        let b = block(0x1234, &[0xff, 0xff, 0xff, 0xff]).expect("opaque");
        assert_eq!(b.kind(), ExtensionKind::Other);
        assert_eq!(b.elements().count(), 0);
    }

    #[test]
    fn map_from_uris() {
        let up = [(1, "urn:a"), (3, "urn:b"), (5, "urn:c")];
        let down = [(2, "urn:b"), (1, "urn:a")];
        let m = ExtensionMap::from_uris(&up, &down);
        assert_eq!(m.map(1), Some(1));
        assert_eq!(m.map(3), Some(2));
        assert_eq!(m.map(5), None);
        assert_eq!(m.map(0), None);
        assert_eq!(format!("{m:?}"), "{1: 1, 3: 2}");
        assert_eq!(ExtensionMap::identity().map(0), None);
        assert_eq!(ExtensionMap::identity().map(255), Some(255));
    }
}
