//! Just enough of a STUN header (RFC 8489 section 5) to route a datagram: the class, the
//! transaction id and the USERNAME attribute. Integrity is the ICE agent's job; nothing here
//! trusts what it reads beyond choosing a queue.

/// RFC 8489 section 5: the fixed value in bytes 4..8 of every STUN message.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// RFC 8489 section 14.3.
const ATTR_USERNAME: u16 = 0x0006;
/// RFC 8489 section 14.3: at most 763 bytes; anything longer is not a username we issued.
const MAX_USERNAME: usize = 763;
/// Attributes walked before giving up on finding USERNAME (it comes early in practice).
const MAX_ATTRIBUTES: usize = 32;

/// The class bits of a STUN message type (RFC 8489 section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A request (ICE connectivity checks are Binding requests).
    Request,
    /// An indication (keepalives).
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

/// What routing needs from one STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Request, indication or response.
    pub class: Class,
    /// The 96-bit transaction id (RFC 8489 section 5).
    pub transaction: [u8; 12],
    /// The USERNAME attribute's value, if present and well-formed.
    pub username: Option<&'a [u8]>,
}

/// `datagram` read as a STUN message, or `None` if it is not one (DTLS, SRTP, garbage).
///
/// RFC 7983 section 7: a first byte of 0..=3 means STUN; the magic cookie and a length
/// field that fits the datagram confirm it.
pub fn parse(datagram: &[u8]) -> Option<Header<'_>> {
    let header: &[u8; 20] = datagram.get(..20)?.try_into().ok()?;
    if header[0] > 3 || header[4..8] != MAGIC_COOKIE {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let body = datagram.get(20..20 + length)?;
    let typ = u16::from_be_bytes([header[0], header[1]]);
    // The class is bits C1 (0x0100) and C0 (0x0010) of the message type.
    let class = match ((typ >> 7) & 0b10) | ((typ >> 4) & 0b01) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    let mut transaction = [0u8; 12];
    transaction.copy_from_slice(&header[8..20]);
    Some(Header {
        class,
        transaction,
        username: username(body),
    })
}

/// The USERNAME value among the attributes in `body`, if any.
fn username(body: &[u8]) -> Option<&[u8]> {
    let mut rest = body;
    for _ in 0..MAX_ATTRIBUTES {
        let typ = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
        let len = usize::from(u16::from_be_bytes([*rest.get(2)?, *rest.get(3)?]));
        let value = rest.get(4..4 + len)?;
        if typ == ATTR_USERNAME {
            return (len <= MAX_USERNAME).then_some(value);
        }
        // Attributes are padded to a multiple of 4 bytes (section 14).
        let padded = 4 + len.div_ceil(4) * 4;
        rest = rest.get(padded..)?;
    }
    None
}

/// The local ufrag in a connectivity check's USERNAME: `LOCAL:REMOTE` as the receiver sees
/// it (RFC 8445 section 7.2.2), so the part before the first colon.
pub fn local_ufrag(username: &[u8]) -> &[u8] {
    match username.iter().position(|b| *b == b':') {
        Some(i) => &username[..i],
        None => username,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A STUN message of `typ` with the given attributes (type, value), padded.
    pub(crate) fn message(typ: u16, transaction: [u8; 12], attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, v) in attrs {
            body.extend_from_slice(&t.to_be_bytes());
            body.extend_from_slice(&(v.len() as u16).to_be_bytes());
            body.extend_from_slice(v);
            body.resize(body.len().div_ceil(4) * 4, 0);
        }
        let mut m = Vec::new();
        m.extend_from_slice(&typ.to_be_bytes());
        m.extend_from_slice(&(body.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&transaction);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn reads_class_transaction_and_username() {
        let t = [7u8; 12];
        // SOFTWARE (0x8022) first, odd length, so the walk must honour the padding.
        let req = message(
            0x0001,
            t,
            &[
                (0x8022, b"abc"),
                (ATTR_USERNAME, b"loc:rem"),
                (0x0008, &[0; 20]),
            ],
        );
        let h = parse(&req).expect("stun");
        assert_eq!(h.class, Class::Request);
        assert_eq!(h.transaction, t);
        assert_eq!(h.username, Some(&b"loc:rem"[..]));
        assert_eq!(local_ufrag(h.username.expect("username")), b"loc");
        assert_eq!(
            parse(&message(0x0101, t, &[])).expect("stun").class,
            Class::Success
        );
        assert_eq!(
            parse(&message(0x0111, t, &[])).expect("stun").class,
            Class::Error
        );
        assert_eq!(
            parse(&message(0x0011, t, &[])).expect("stun").class,
            Class::Indication
        );
    }

    #[test]
    fn rejects_what_is_not_stun() {
        let req = message(0x0001, [1; 12], &[(ATTR_USERNAME, b"a:b")]);
        assert!(parse(&req[..19]).is_none(), "short header");
        assert!(
            parse(&req[..req.len() - 1]).is_none(),
            "length beyond the datagram"
        );
        let mut dtls = req.clone();
        dtls[0] = 22; // a DTLS handshake record
        assert!(parse(&dtls).is_none());
        let mut cookie = req.clone();
        cookie[5] ^= 1;
        assert!(parse(&cookie).is_none());
        // An attribute claiming more bytes than there are: no username, but still STUN.
        let mut cut = message(0x0001, [1; 12], &[(ATTR_USERNAME, b"a:b")]);
        cut[22..24].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(parse(&cut).expect("stun").username, None);
    }
}
