//! Self-certifying records: a record sealed with its publisher's signature and public key.
//!
//! gossipsub signs every message, but that signature is gone once the message is delivered.
//! Sealing the record itself lets any peer hand records on later (a newcomer's sync, see
//! [`super::Body::Sync`]) while the receiver still checks who wrote each one: the signer must
//! be the node the record describes, or the proxy it names in `via`.
//!
//! Layout (all lengths big-endian):
//!
//! ```text
//! version u8 = 1 | record_len u16 | record | key_len u8 | public key (protobuf) | signature
//! ```
//!
//! The signature (ed25519, 64 bytes, the rest of the envelope) covers [`DOMAIN`] followed by
//! the record bytes. Only ed25519 keys are accepted: they are what treecast nodes generate,
//! and they keep verification cheap and envelopes small.

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey, SigningError};
use treecast_tree::MAX_RECORD_BYTES;

/// Prefix of the signed bytes, so a record signature can never be replayed as another kind
/// of libp2p signature (or the other way round).
pub const DOMAIN: &[u8] = b"treecast/record/1:";

const VERSION: u8 = 1;
/// An ed25519 public key in libp2p's protobuf encoding.
const ED25519_KEY_LEN: usize = 36;
const SIGNATURE_LEN: usize = 64;

/// The largest envelope: a record at its cap plus header, key and signature.
pub const MAX_ENVELOPE_BYTES: usize =
    1 + 2 + MAX_RECORD_BYTES + 1 + ED25519_KEY_LEN + SIGNATURE_LEN;

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

/// Seals `record` (its encoded bytes) with `keypair`.
pub fn seal(keypair: &Keypair, record: &[u8]) -> Result<Vec<u8>, SigningError> {
    let key = keypair.public().encode_protobuf();
    let signature = keypair.sign(&signed_bytes(record))?;
    let mut out = Vec::with_capacity(4 + record.len() + key.len() + signature.len());
    out.push(VERSION);
    out.extend_from_slice(&(record.len() as u16).to_be_bytes());
    out.extend_from_slice(record);
    out.push(key.len() as u8);
    out.extend_from_slice(&key);
    out.extend_from_slice(&signature);
    Ok(out)
}

/// Checks an envelope and returns its signer and the record bytes (still to be decoded).
/// Never panics, whatever the bytes.
pub fn open(data: &[u8]) -> Result<(PeerId, &[u8]), EnvelopeError> {
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
    let key = PublicKey::try_decode_protobuf(key).map_err(|_| EnvelopeError::BadKey)?;
    if key.clone().try_into_ed25519().is_err() {
        return Err(EnvelopeError::BadKey);
    }
    if !key.verify(&signed_bytes(record), signature) {
        return Err(EnvelopeError::BadSignature);
    }
    Ok((key.to_peer_id(), record))
}

fn signed_bytes(record: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(DOMAIN.len() + record.len());
    v.extend_from_slice(DOMAIN);
    v.extend_from_slice(record);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip() {
        let k = Keypair::generate_ed25519();
        let sealed = seal(&k, b"record bytes").expect("ed25519 signs");
        assert!(sealed.len() <= MAX_ENVELOPE_BYTES);
        let (signer, record) = open(&sealed).expect("valid envelope");
        assert_eq!(signer, k.public().to_peer_id());
        assert_eq!(record, b"record bytes");
    }

    #[test]
    fn tampering_is_caught() {
        let k = Keypair::generate_ed25519();
        let sealed = seal(&k, b"record bytes").expect("ed25519 signs");
        // Any flipped bit anywhere: never accepted as the original signer's record.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            match open(&bad) {
                Err(_) => {}
                Ok((signer, record)) => assert!(
                    signer != k.public().to_peer_id() || record != b"record bytes",
                    "byte {i}"
                ),
            }
        }
        // Truncations and junk.
        for n in 0..sealed.len() {
            assert!(open(&sealed[..n]).is_err(), "prefix {n}");
        }
        assert_eq!(open(&[0u8; 2000]), Err(EnvelopeError::TooLarge));
        // Another signer's key with this signature.
        let other = Keypair::generate_ed25519().public().encode_protobuf();
        let mut swapped = sealed.clone();
        let key_at = 1 + 2 + b"record bytes".len() + 1;
        swapped[key_at..key_at + other.len()].copy_from_slice(&other);
        assert_eq!(open(&swapped), Err(EnvelopeError::BadSignature));
    }
}
