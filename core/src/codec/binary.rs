//! The compact binary encoding (`docs/PROTOCOL.md` section 3): one frame per WebSocket binary
//! message, a tag byte followed by the frame's fields; integers are big-endian.
//!
//! The decoder reads through a cursor (`Reader`) that only ever splits the remaining slice, so no
//! read can go out of bounds, and it sizes vectors by what the remaining bytes can hold rather than
//! by a declared count.

use crate::frame::{
    Approx, DecodeError, DecodeErrorKind, ErrorCode, Frame, Limits, PresenceEntry, Token,
    MAX_ERROR_MESSAGE_BYTES, MAX_TOKEN_BYTES,
};
use crate::time::{UnixMillis, MAX_WIRE_MILLIS, MIN_WIRE_MILLIS};
use crate::user::{check_user_id, UserId};

/// Tag of `ping`.
pub const TAG_PING: u8 = 0x01;
/// Tag of `pong`.
pub const TAG_PONG: u8 = 0x02;
/// Tag of `query`.
pub const TAG_QUERY: u8 = 0x03;
/// Tag of `subscribe`.
pub const TAG_SUBSCRIBE: u8 = 0x04;
/// Tag of `unsubscribe`.
pub const TAG_UNSUBSCRIBE: u8 = 0x05;
/// Tag of `bye`.
pub const TAG_BYE: u8 = 0x06;
/// Tag of `presence`.
pub const TAG_PRESENCE: u8 = 0x07;
/// Tag of `error`.
pub const TAG_ERROR: u8 = 0x08;
/// Tag of `auth`.
pub const TAG_AUTH: u8 = 0x09;

/// Presence entry flags: the user is online.
const FLAG_ONLINE: u8 = 0b01;
/// Presence entry flags: an 8-byte `last_seen` follows.
const FLAG_LAST_SEEN: u8 = 0b10;
/// Presence entry flags: a 1-byte `last_seen_approx` code follows (after `last_seen`, which an
/// entry with a bucket never has). Entries without a bucket are byte-identical to before.
const FLAG_APPROX: u8 = 0b100;

/// Fewest bytes one user id takes in a list (length byte + one byte).
const MIN_USER_BYTES: usize = 2;
/// Fewest bytes one presence entry takes (user id + flags byte).
const MIN_ENTRY_BYTES: usize = MIN_USER_BYTES + 1;

/// Decodes one binary frame.
///
/// The rules, in the order they apply, are those of `docs/PROTOCOL.md` section 3.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Frame, DecodeError> {
    super::check(bytes, limits)?;
    parse(bytes, limits)
}

/// Encodes `frame` in the binary encoding.
///
/// A `last_seen` outside the wire range is clamped and an over-long error message is cut, exactly
/// as the JSON encoder does. Lists longer than 65,535 (far beyond any sane `Limits::max_users`)
/// cannot be represented and are cut to their first 65,535 entries; so is a token longer than
/// 65,535 bytes (no decoder accepts one over [`MAX_TOKEN_BYTES`] anyway).
pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    match frame {
        Frame::Ping { seq } => {
            out.push(TAG_PING);
            put_opt_u64(&mut out, *seq);
        }
        Frame::Pong { seq } => {
            out.push(TAG_PONG);
            put_opt_u64(&mut out, *seq);
        }
        Frame::Query { id, users } => put_user_frame(&mut out, TAG_QUERY, *id, users),
        Frame::Subscribe { id, users } => put_user_frame(&mut out, TAG_SUBSCRIBE, *id, users),
        Frame::Unsubscribe { id, users } => put_user_frame(&mut out, TAG_UNSUBSCRIBE, *id, users),
        Frame::Bye => out.push(TAG_BYE),
        Frame::Auth { token } => {
            out.push(TAG_AUTH);
            let bytes = token.0.as_bytes();
            let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(bytes.get(..usize::from(len)).unwrap_or(bytes));
        }
        Frame::Presence { id, users } => {
            out.push(TAG_PRESENCE);
            put_opt_u64(&mut out, *id);
            let users = put_count(&mut out, users);
            for e in users {
                put_user(&mut out, &e.user);
                let mut flags = 0;
                if e.online {
                    flags |= FLAG_ONLINE;
                }
                if e.last_seen.is_some() {
                    flags |= FLAG_LAST_SEEN;
                }
                if e.last_seen_approx.is_some() {
                    flags |= FLAG_APPROX;
                }
                out.push(flags);
                if let Some(t) = e.last_seen {
                    out.extend_from_slice(&t.clamp_to_wire().0.to_be_bytes());
                }
                if let Some(a) = e.last_seen_approx {
                    out.push(a.code());
                }
            }
        }
        Frame::Error { id, code, message } => {
            out.push(TAG_ERROR);
            put_opt_u64(&mut out, *id);
            out.push(code_byte(*code));
            let message = super::wire_message(message);
            // At most MAX_ERROR_MESSAGE_BYTES (1024), so it fits a u16.
            let len = u16::try_from(message.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(message.as_bytes());
        }
    }
    out
}

fn put_opt_u64(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

/// Writes the u16 count of `items` and returns the items that count covers.
fn put_count<'a, T>(out: &mut Vec<u8>, items: &'a [T]) -> &'a [T] {
    let n = u16::try_from(items.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&n.to_be_bytes());
    items.get(..usize::from(n)).unwrap_or(items)
}

fn put_user(out: &mut Vec<u8>, user: &UserId) {
    // A UserId is 1..=128 bytes by construction, so the length fits a u8.
    let bytes = user.as_str().as_bytes();
    out.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(bytes);
}

fn put_user_frame(out: &mut Vec<u8>, tag: u8, id: Option<u64>, users: &[UserId]) {
    out.push(tag);
    put_opt_u64(out, id);
    for user in put_count(out, users) {
        put_user(out, user);
    }
}

fn code_byte(code: ErrorCode) -> u8 {
    let index = ErrorCode::ALL.iter().position(|c| *c == code).unwrap_or(0);
    u8::try_from(index).unwrap_or(0)
}

/// A cursor over the input that can only shrink it: every read either returns bytes that exist
/// or fails with "truncated".
struct Reader<'a> {
    rest: &'a [u8],
}

const TRUNCATED: DecodeErrorKind = DecodeErrorKind::Malformed("truncated");

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeErrorKind> {
        let (head, tail) = self.rest.split_at_checked(n).ok_or(TRUNCATED)?;
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeErrorKind> {
        let (head, tail) = self.rest.split_first_chunk::<N>().ok_or(TRUNCATED)?;
        self.rest = tail;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, DecodeErrorKind> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, DecodeErrorKind> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn opt_u64(&mut self) -> Result<Option<u64>, DecodeErrorKind> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(u64::from_be_bytes(self.array()?))),
            _ => Err(DecodeErrorKind::Malformed("optional field flag must be 0 or 1")),
        }
    }

    /// A u16 count, checked against `max` before anything it counts is read.
    fn count(&mut self, max: usize) -> Result<usize, DecodeErrorKind> {
        let count = usize::from(self.u16()?);
        if count > max {
            return Err(DecodeErrorKind::TooManyUsers { count, max });
        }
        Ok(count)
    }

    /// A length-prefixed user id: the bytes are read first (truncation), then checked.
    fn user(&mut self, index: usize) -> Result<UserId, DecodeErrorKind> {
        let len = self.u8()?;
        let bytes = self.take(usize::from(len))?;
        check_user_id(bytes).map_err(|reason| DecodeErrorKind::InvalidUser { index, reason })?;
        // Valid user ids are ASCII, so neither of these can fail; still, no panics on input.
        let s = std::str::from_utf8(bytes).map_err(|_| DecodeErrorKind::Malformed("not UTF-8"))?;
        UserId::new(s).map_err(|reason| DecodeErrorKind::InvalidUser { index, reason })
    }

    /// Room for `count` items of at least `min_size` bytes each, bounded by the remaining input.
    fn capacity(&self, count: usize, min_size: usize) -> usize {
        count.min(self.rest.len() / min_size)
    }
}

fn parse(bytes: &[u8], limits: &Limits) -> Result<Frame, DecodeError> {
    let mut r = Reader { rest: bytes };
    let mut id = None;
    let result = frame(&mut r, limits, &mut id);
    let frame = result.map_err(|kind| DecodeError { kind, id })?;
    if !r.rest.is_empty() {
        return Err(DecodeError { kind: DecodeErrorKind::TrailingBytes, id });
    }
    Ok(frame)
}

/// Reads one frame; sets `id` as soon as it has been read, so the caller can attach it to any
/// later error.
fn frame(r: &mut Reader<'_>, limits: &Limits, id: &mut Option<u64>) -> Result<Frame, DecodeErrorKind> {
    let tag = r.u8().map_err(|_| DecodeErrorKind::Malformed("empty frame"))?;
    match tag {
        TAG_PING => Ok(Frame::Ping { seq: r.opt_u64()? }),
        TAG_PONG => Ok(Frame::Pong { seq: r.opt_u64()? }),
        TAG_BYE => Ok(Frame::Bye),
        TAG_AUTH => {
            let len = usize::from(r.u16()?);
            let bytes = r.take(len)?;
            if len > MAX_TOKEN_BYTES {
                return Err(DecodeErrorKind::Malformed("token too long"));
            }
            let token =
                std::str::from_utf8(bytes).map_err(|_| DecodeErrorKind::Malformed("token is not UTF-8"))?;
            Ok(Frame::Auth { token: Token(token.to_owned()) })
        }
        TAG_QUERY | TAG_SUBSCRIBE | TAG_UNSUBSCRIBE => {
            *id = r.opt_u64()?;
            let count = r.count(limits.max_users)?;
            let mut users = Vec::with_capacity(r.capacity(count, MIN_USER_BYTES));
            for index in 0..count {
                users.push(r.user(index)?);
            }
            Ok(match tag {
                TAG_QUERY => Frame::Query { id: *id, users },
                TAG_SUBSCRIBE => Frame::Subscribe { id: *id, users },
                _ => Frame::Unsubscribe { id: *id, users },
            })
        }
        TAG_PRESENCE => {
            *id = r.opt_u64()?;
            let count = r.count(limits.max_users)?;
            let mut users = Vec::with_capacity(r.capacity(count, MIN_ENTRY_BYTES));
            for index in 0..count {
                users.push(entry(r, index)?);
            }
            Ok(Frame::Presence { id: *id, users })
        }
        TAG_ERROR => {
            *id = r.opt_u64()?;
            let code = ErrorCode::ALL
                .get(usize::from(r.u8()?))
                .copied()
                .ok_or(DecodeErrorKind::Malformed("unknown error code"))?;
            let len = usize::from(r.u16()?);
            let bytes = r.take(len)?;
            if len > MAX_ERROR_MESSAGE_BYTES {
                return Err(DecodeErrorKind::Malformed("error message too long"));
            }
            let message = std::str::from_utf8(bytes)
                .map_err(|_| DecodeErrorKind::Malformed("error message is not UTF-8"))?;
            Ok(Frame::Error { id: *id, code, message: message.to_owned() })
        }
        _ => Err(DecodeErrorKind::UnknownType),
    }
}

fn entry(r: &mut Reader<'_>, index: usize) -> Result<PresenceEntry, DecodeErrorKind> {
    let user = r.user(index)?;
    let flags = r.u8()?;
    if flags & !(FLAG_ONLINE | FLAG_LAST_SEEN | FLAG_APPROX) != 0 {
        return Err(DecodeErrorKind::Malformed("reserved presence flag bits set"));
    }
    if flags & FLAG_LAST_SEEN != 0 && flags & FLAG_APPROX != 0 {
        return Err(DecodeErrorKind::Malformed("an entry has a last_seen or its bucket, not both"));
    }
    let last_seen = if flags & FLAG_LAST_SEEN != 0 {
        let ms = i64::from_be_bytes(r.array()?);
        if !(MIN_WIRE_MILLIS..=MAX_WIRE_MILLIS).contains(&ms) {
            return Err(DecodeErrorKind::Malformed("last_seen out of range"));
        }
        Some(UnixMillis(ms))
    } else {
        None
    };
    let last_seen_approx = if flags & FLAG_APPROX != 0 {
        Some(Approx::from_code(r.u8()?).ok_or(DecodeErrorKind::Malformed("unknown last_seen_approx code"))?)
    } else {
        None
    };
    Ok(PresenceEntry { user, online: flags & FLAG_ONLINE != 0, last_seen, last_seen_approx })
}
