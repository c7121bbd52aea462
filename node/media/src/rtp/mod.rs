//! RTP packets (RFC 3550 §5): a zero-copy parser, header extensions (RFC 8285) and the per-leg
//! rewrite a forwarding node applies.
//!
//! ```
//! use treecast_media::rtp::{ExtensionMap, LegHeader, Packet, rewrite};
//!
//! let input = [0x80, 0x60, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, b'h', b'i'];
//! let packet = Packet::parse(&input)?;
//! let leg = LegHeader { ssrc: 42, payload_type: 102, sequence: 10, timestamp: 900 };
//! let out = rewrite(&packet, &leg, &ExtensionMap::strip_all());
//! assert_eq!(Packet::parse(&out)?.payload(), b"hi");
//! # Ok::<(), treecast_media::rtp::RtpError>(())
//! ```

mod extension;
mod packet;
mod rewrite;

pub use extension::{
    Element, Elements, ExtensionBlock, ExtensionKind, ExtensionMap, ONE_BYTE_PROFILE,
    TWO_BYTE_PROFILE,
};
pub use packet::{FIXED_HEADER_LEN, Packet, RtpError};
pub use rewrite::{LegHeader, rewrite, rewrite_into};
