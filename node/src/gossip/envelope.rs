//! Self-certifying records: a record sealed with its publisher's signature and public key,
//! together with the addresses the publisher can be dialled at.
//!
//! gossipsub signs every message, but that signature is gone once the message is delivered.
//! Sealing the record itself lets any peer hand records on later (a newcomer's sync, see
//! [`super::Body::Sync`]) while the receiver still checks who wrote each one: the signer must
//! be the node the record describes, or the proxy it names in `via`.
//!
//! The addresses (at most [`MAX_ADDRS`], each at most [`MAX_ADDR_BYTES`] in multiaddr binary
//! form, 8 bytes for `/ip4/A/tcp/P`) let whoever holds the record send a direct message to its
//! author without a DHT walk: a joiner dials its chosen parent at once. They only ever describe
//! the signer's own peer, so a hostile author can only misdirect dials to itself.
//!
//! Layout (all lengths big-endian):
//!
//! ```text
//! version u8 = 2 | record_len u16 | record | addr_count u8 | (addr_len u8 | multiaddr)*
//!   | key_len u8 | public key (protobuf) | signature
//! ```
//!
//! The signature (ed25519, 64 bytes, the rest of the envelope) covers [`DOMAIN`] followed by
//! every byte before the key: version, record and addresses. Only ed25519 keys are accepted:
//! they are what treecast nodes generate, and they keep verification cheap and envelopes small.

use libp2p::identity::{Keypair, PublicKey, SigningError};
use libp2p::{Multiaddr, PeerId};
use treecast_tree::MAX_RECORD_BYTES;

/// Prefix of the signed bytes, so a record signature can never be replayed as another kind
/// of libp2p signature (or the other way round).
pub const DOMAIN: &[u8] = b"treecast/record/2:";

const VERSION: u8 = 2;
/// An ed25519 public key in libp2p's protobuf encoding.
const ED25519_KEY_LEN: usize = 36;
const SIGNATURE_LEN: usize = 64;
/// Most addresses in one envelope; more are not sealed.
pub const MAX_ADDRS: usize = 4;
/// Longest address, in multiaddr binary form; longer ones are not sealed.
pub const MAX_ADDR_BYTES: usize = 64;

/// The largest envelope: a record at its cap plus header, addresses, key and signature.
pub const MAX_ENVELOPE_BYTES: usize = 1
    + 2
    + MAX_RECORD_BYTES
    + 1
    + MAX_ADDRS * (1 + MAX_ADDR_BYTES)
    + 1
    + ED25519_KEY_LEN
    + SIGNATURE_LEN;

/// What sealing usually adds to an encoded record: the header, two short addresses (an IPv4
/// or IPv6 one with its port, about 9 bytes each), the key and the signature. An estimate for
/// the refresh pace before any record of ours was sealed (`publish_pace::first_pace`).
pub const TYPICAL_SEAL_OVERHEAD: usize =
    1 + 2 + 1 + 2 * (1 + 9) + 1 + ED25519_KEY_LEN + SIGNATURE_LEN;

/// An opened envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened<'a> {
    /// Who sealed it.
    pub signer: PeerId,
    /// The record's bytes, still to be decoded.
    pub record: &'a [u8],
    /// Where the signer says it can be dialled.
    pub addrs: Vec<Multiaddr>,
}

/// Why an envelope could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Longer than [`MAX_ENVELOPE_BYTES`].
    #[error("envelope too large")]
    TooLarge,
    /// Not laid out as an envelope (or an unknown version).
    #[error("malformed envelope")]
    Malformed,
    /// The key is not an ed25519 key.
    #[error("unsupported key")]
    BadKey,
    /// The signature does not match the key and the record.
    #[error("bad signature")]
    BadSignature,
}

/// Seals `record` (its encoded bytes) and the first [`MAX_ADDRS`] of `addrs` (those short
/// enough) with `keypair`.
pub fn seal(
    keypair: &Keypair,
    record: &[u8],
    addrs: &[Multiaddr],
) -> Result<Vec<u8>, SigningError> {
    let key = keypair.public().encode_protobuf();
    let mut out = Vec::with_capacity(8 + record.len() + key.len() + SIGNATURE_LEN);
    out.push(VERSION);
    out.extend_from_slice(&(record.len() as u16).to_be_bytes());
    out.extend_from_slice(record);
    let addrs: Vec<Vec<u8>> = addrs
        .iter()
        .map(|a| a.to_vec())
        .filter(|a| a.len() <= MAX_ADDR_BYTES)
        .take(MAX_ADDRS)
        .collect();
    out.push(addrs.len() as u8);
    for a in &addrs {
        out.push(a.len() as u8);
        out.extend_from_slice(a);
    }
    let signature = keypair.sign(&signed_bytes(&out))?;
    out.push(key.len() as u8);
    out.extend_from_slice(&key);
    out.extend_from_slice(&signature);
    Ok(out)
}

/// An envelope laid out right, its signature not yet checked (see [`Parsed::verify`]).
#[derive(Debug, Clone)]
pub struct Parsed<'a> {
    /// The record's bytes, still to be decoded.
    pub record: &'a [u8],
    /// Where the signer says it can be dialled.
    pub addrs: Vec<Multiaddr>,
    signed: &'a [u8],
    key: &'a [u8],
    signature: &'a [u8],
}

/// Reads an envelope's layout without checking its signature, so a receiver can drop a
/// record it already holds before paying for a verification. Never panics, whatever the bytes.
pub fn parse(data: &[u8]) -> Result<Parsed<'_>, EnvelopeError> {
    if data.len() > MAX_ENVELOPE_BYTES {
        return Err(EnvelopeError::TooLarge);
    }
    let (&version, rest) = data.split_first().ok_or(EnvelopeError::Malformed)?;
    if version != VERSION {
        return Err(EnvelopeError::Malformed);
    }
    let (len, rest) = rest.split_at_checked(2).ok_or(EnvelopeError::Malformed)?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let (record, rest) = rest.split_at_checked(len).ok_or(EnvelopeError::Malformed)?;
    let (&count, mut rest) = rest.split_first().ok_or(EnvelopeError::Malformed)?;
    if usize::from(count) > MAX_ADDRS {
        return Err(EnvelopeError::Malformed);
    }
    let mut addrs = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let (&alen, tail) = rest.split_first().ok_or(EnvelopeError::Malformed)?;
        if usize::from(alen) > MAX_ADDR_BYTES {
            return Err(EnvelopeError::Malformed);
        }
        let (addr, tail) = tail
            .split_at_checked(usize::from(alen))
            .ok_or(EnvelopeError::Malformed)?;
        addrs.push(Multiaddr::try_from(addr.to_vec()).map_err(|_| EnvelopeError::Malformed)?);
        rest = tail;
    }
    let signed = &data[..data.len() - rest.len()];
    let (&key_len, rest) = rest.split_first().ok_or(EnvelopeError::Malformed)?;
    if usize::from(key_len) != ED25519_KEY_LEN {
        return Err(EnvelopeError::BadKey);
    }
    let (key, signature) = rest
        .split_at_checked(ED25519_KEY_LEN)
        .ok_or(EnvelopeError::Malformed)?;
    if signature.len() != SIGNATURE_LEN {
        return Err(EnvelopeError::Malformed);
    }
    Ok(Parsed {
        record,
        addrs,
        signed,
        key,
        signature,
    })
}

impl<'a> Parsed<'a> {
    /// Checks the key and the signature.
    pub fn verify(self) -> Result<Opened<'a>, EnvelopeError> {
        let key = PublicKey::try_decode_protobuf(self.key).map_err(|_| EnvelopeError::BadKey)?;
        if key.clone().try_into_ed25519().is_err() {
            return Err(EnvelopeError::BadKey);
        }
        if !key.verify(&signed_bytes(self.signed), self.signature) {
            return Err(EnvelopeError::BadSignature);
        }
        Ok(Opened {
            signer: key.to_peer_id(),
            record: self.record,
            addrs: self.addrs,
        })
    }
}

/// Checks an envelope and returns its signer, the record bytes (still to be decoded) and the
/// signer's addresses. Never panics, whatever the bytes.
pub fn open(data: &[u8]) -> Result<Opened<'_>, EnvelopeError> {
    parse(data)?.verify()
}

fn signed_bytes(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(DOMAIN.len() + body.len());
    v.extend_from_slice(DOMAIN);
    v.extend_from_slice(body);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip() {
        let k = Keypair::generate_ed25519();
        let addrs: Vec<Multiaddr> = vec![
            "/ip4/127.0.0.1/tcp/4001".parse().unwrap(),
            "/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap(),
        ];
        let sealed = seal(&k, b"record bytes", &addrs).expect("ed25519 signs");
        assert!(sealed.len() <= MAX_ENVELOPE_BYTES);
        // The typical overhead is, within a byte or two, that of a node listening on TCP and
        // QUIC (126 bytes here).
        let overhead = sealed.len() - b"record bytes".len();
        assert!(overhead.abs_diff(TYPICAL_SEAL_OVERHEAD) <= 2, "{overhead}");
        let opened = open(&sealed).expect("valid envelope");
        assert_eq!(opened.signer, k.public().to_peer_id());
        assert_eq!(opened.record, b"record bytes");
        assert_eq!(opened.addrs, addrs);
        // At most MAX_ADDRS are sealed.
        let many: Vec<Multiaddr> = (0..9)
            .map(|p| format!("/ip4/10.0.0.1/tcp/{}", 4000 + p).parse().unwrap())
            .collect();
        let sealed = seal(&k, b"r", &many).expect("ed25519 signs");
        assert_eq!(open(&sealed).expect("valid").addrs, many[..MAX_ADDRS]);
    }

    #[test]
    fn tampering_is_caught() {
        let k = Keypair::generate_ed25519();
        let addrs: Vec<Multiaddr> = vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()];
        let sealed = seal(&k, b"record bytes", &addrs).expect("ed25519 signs");
        // Any flipped bit anywhere: never accepted as the original signer's record.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            match open(&bad) {
                Err(_) => {}
                Ok(o) => assert!(
                    o.signer != k.public().to_peer_id()
                        || (o.record != b"record bytes" || o.addrs != addrs),
                    "byte {i}"
                ),
            }
        }
        // Truncations and junk.
        for n in 0..sealed.len() {
            assert!(open(&sealed[..n]).is_err(), "prefix {n}");
        }
        assert_eq!(open(&[0u8; 3000]), Err(EnvelopeError::TooLarge));
        // Another signer's key with this signature.
        let other = Keypair::generate_ed25519().public().encode_protobuf();
        let mut swapped = sealed.clone();
        let key_at = sealed.len() - SIGNATURE_LEN - ED25519_KEY_LEN;
        swapped[key_at..key_at + other.len()].copy_from_slice(&other);
        assert_eq!(open(&swapped), Err(EnvelopeError::BadSignature));
    }
}
