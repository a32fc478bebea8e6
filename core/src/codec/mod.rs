//! Frame codec: JSON text ([`json`]) and compact binary ([`binary`]), both to and from [`Frame`].
//!
//! The byte-level specification of both encodings is `docs/PROTOCOL.md`; this module is its
//! reference implementation.
//!
//! Decoding has two steps, as in mini-redis' `frame.rs`: a cheap *check* that looks only at the
//! input's length ([`Limits::max_frame_bytes`], so an oversized input is refused before a single
//! byte of it is parsed), then the *parse*. The parse allocates at most in proportion to the input
//! (it never trusts a declared count beyond what the remaining bytes can hold), runs in time linear
//! in the input, and never panics.
//!
//! Encoding never fails. Both encoders write the same value for every [`Frame`], so
//! `decode(encode_json(f)) == decode(encode_binary(f))` for any `f`; the two places where a
//! `Frame` can hold more than the wire can carry are normalized identically by both:
//! a `last_seen` outside the years 1970..=9999 is clamped ([`UnixMillis::clamp_to_wire`]) and an
//! error message longer than [`MAX_ERROR_MESSAGE_BYTES`] is cut at the last character boundary
//! within the limit.
//!
//! [`UnixMillis::clamp_to_wire`]: crate::time::UnixMillis::clamp_to_wire

pub mod binary;
pub mod json;

use crate::frame::{DecodeError, DecodeErrorKind, Encoding, Frame, Limits, MAX_ERROR_MESSAGE_BYTES};

/// Decodes one WebSocket message payload in `encoding`.
///
/// Text messages are [`Encoding::Json`], binary messages [`Encoding::Binary`]. On failure the
/// error carries the request id whenever it could be read, so the server's `error` frame can
/// echo it.
pub fn decode(bytes: &[u8], encoding: Encoding, limits: &Limits) -> Result<Frame, DecodeError> {
    match encoding {
        Encoding::Json => json::decode(bytes, limits),
        Encoding::Binary => binary::decode(bytes, limits),
    }
}

/// Encodes `frame` as JSON text (compact, `type` first).
pub fn encode_json(frame: &Frame) -> String {
    json::encode(frame)
}

/// Encodes `frame` in the binary encoding.
pub fn encode_binary(frame: &Frame) -> Vec<u8> {
    binary::encode(frame)
}

/// The check step shared by both decoders: refuses an input over the size limit before parsing.
fn check(bytes: &[u8], limits: &Limits) -> Result<(), DecodeError> {
    if bytes.len() > limits.max_frame_bytes {
        return Err(DecodeError {
            kind: DecodeErrorKind::Oversized { len: bytes.len(), max: limits.max_frame_bytes },
            id: None,
        });
    }
    Ok(())
}

/// `message` cut to at most [`MAX_ERROR_MESSAGE_BYTES`] at a character boundary (both encoders
/// use this, so both encodings of an over-long message decode to the same string).
fn wire_message(message: &str) -> &str {
    let mut end = message.len().min(MAX_ERROR_MESSAGE_BYTES);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.get(..end).unwrap_or_default()
}
