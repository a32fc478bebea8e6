//! The JSON encoding (`docs/PROTOCOL.md` section 2): one JSON object per WebSocket text message,
//! discriminated by its `"type"` member.
//!
//! Decoding parses the whole input into a [`serde_json::Value`] first (serde_json's recursion
//! limit bounds the nesting depth, so the stack is safe), then interprets the members. Unknown
//! members are ignored, so later protocol versions can add fields; if a member name repeats, the
//! last occurrence wins (as in serde_json and JavaScript's `JSON.parse`).

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::frame::{
    Approx, DecodeError, DecodeErrorKind, ErrorCode, Frame, Limits, PresenceEntry, Token,
    MAX_ERROR_MESSAGE_BYTES, MAX_TOKEN_BYTES,
};
use crate::time::UnixMillis;
use crate::user::UserId;

type Object = Map<String, Value>;

/// Decodes one JSON text frame (`bytes` must be UTF-8).
///
/// The rules, in the order they apply, are those of `docs/PROTOCOL.md` section 2.3.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Frame, DecodeError> {
    super::check(bytes, limits)?;
    parse(bytes, limits)
}

/// Encodes `frame` as compact JSON: `type` first, then `id`/`seq` (left out when `None`), then the
/// other members in the order of `docs/PROTOCOL.md`.
pub fn encode(frame: &Frame) -> String {
    // Every map key is a string and every value serializes without I/O, so this cannot fail.
    serde_json::to_string(&Wire::from(frame)).expect("a frame always serializes to JSON")
}

fn parse(bytes: &[u8], limits: &Limits) -> Result<Frame, DecodeError> {
    let bare = |kind| DecodeError { kind, id: None };
    if std::str::from_utf8(bytes).is_err() {
        return Err(bare(DecodeErrorKind::Malformed("not UTF-8")));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Value::deserialize(&mut de).map_err(|_| bare(DecodeErrorKind::Malformed("invalid JSON")))?;
    let Value::Object(obj) = value else {
        return Err(bare(DecodeErrorKind::Malformed("not a JSON object")));
    };
    // The id as far as it is readable, for the errors raised before the frame type is known.
    let loose_id = obj.get("id").and_then(Value::as_u64);
    // `end` fails only on trailing characters: the value itself parsed above.
    if de.end().is_err() {
        return Err(DecodeError { kind: DecodeErrorKind::TrailingBytes, id: loose_id });
    }
    let Some(Value::String(ty)) = obj.get("type") else {
        return Err(DecodeError { kind: DecodeErrorKind::Malformed("missing type"), id: loose_id });
    };
    let mut id = None;
    frame(ty, &obj, limits, &mut id).map_err(|kind| DecodeError { kind, id })
}

/// Interprets the members of a frame of type `ty`; sets `id` as soon as it has been read, so the
/// caller can attach it to any later error.
fn frame(ty: &str, obj: &Object, limits: &Limits, id: &mut Option<u64>) -> Result<Frame, DecodeErrorKind> {
    match ty {
        "ping" => Ok(Frame::Ping { seq: opt_u64(obj, "seq")? }),
        "pong" => Ok(Frame::Pong { seq: opt_u64(obj, "seq")? }),
        "bye" => Ok(Frame::Bye),
        "auth" => {
            let Some(Value::String(token)) = obj.get("token") else {
                return Err(DecodeErrorKind::Malformed("missing or non-string token"));
            };
            if token.len() > MAX_TOKEN_BYTES {
                return Err(DecodeErrorKind::Malformed("token too long"));
            }
            Ok(Frame::Auth { token: Token(token.clone()) })
        }
        "query" | "subscribe" | "unsubscribe" => {
            *id = opt_u64(obj, "id")?;
            let users = user_ids(users_array(obj, limits)?)?;
            Ok(match ty {
                "query" => Frame::Query { id: *id, users },
                "subscribe" => Frame::Subscribe { id: *id, users },
                _ => Frame::Unsubscribe { id: *id, users },
            })
        }
        "presence" => {
            *id = opt_u64(obj, "id")?;
            let users = entries(users_array(obj, limits)?)?;
            Ok(Frame::Presence { id: *id, users })
        }
        "error" => {
            *id = opt_u64(obj, "id")?;
            let Some(Value::String(code)) = obj.get("code") else {
                return Err(DecodeErrorKind::Malformed("missing or non-string code"));
            };
            let code =
                ErrorCode::from_str_opt(code).ok_or(DecodeErrorKind::Malformed("unknown error code"))?;
            let Some(Value::String(message)) = obj.get("message") else {
                return Err(DecodeErrorKind::Malformed("missing or non-string message"));
            };
            if message.len() > MAX_ERROR_MESSAGE_BYTES {
                return Err(DecodeErrorKind::Malformed("error message too long"));
            }
            Ok(Frame::Error { id: *id, code, message: message.clone() })
        }
        _ => {
            // Unknown to this version; echo its id if it has a readable one.
            *id = obj.get("id").and_then(Value::as_u64);
            Err(DecodeErrorKind::UnknownType)
        }
    }
}

/// An optional unsigned 64-bit member: absent or `null` is `None`, an integer in `0..=u64::MAX`
/// (no fraction, no exponent) is `Some`, anything else is malformed.
fn opt_u64(obj: &Object, key: &'static str) -> Result<Option<u64>, DecodeErrorKind> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or(DecodeErrorKind::Malformed("id and seq must be integers in 0..=2^64-1")),
    }
}

/// The required `users` array, its length checked against the limit before any entry is looked at.
fn users_array<'a>(obj: &'a Object, limits: &Limits) -> Result<&'a [Value], DecodeErrorKind> {
    let Some(Value::Array(users)) = obj.get("users") else {
        return Err(DecodeErrorKind::Malformed("missing or non-array users"));
    };
    if users.len() > limits.max_users {
        return Err(DecodeErrorKind::TooManyUsers { count: users.len(), max: limits.max_users });
    }
    Ok(users)
}

fn user_id(index: usize, value: &Value) -> Result<UserId, DecodeErrorKind> {
    let Value::String(s) = value else {
        return Err(DecodeErrorKind::Malformed("user ids must be strings"));
    };
    UserId::new(s).map_err(|reason| DecodeErrorKind::InvalidUser { index, reason })
}

fn user_ids(values: &[Value]) -> Result<Vec<UserId>, DecodeErrorKind> {
    values.iter().enumerate().map(|(index, v)| user_id(index, v)).collect()
}

fn entries(values: &[Value]) -> Result<Vec<PresenceEntry>, DecodeErrorKind> {
    values.iter().enumerate().map(|(index, v)| entry(index, v)).collect()
}

fn entry(index: usize, value: &Value) -> Result<PresenceEntry, DecodeErrorKind> {
    let Value::Object(obj) = value else {
        return Err(DecodeErrorKind::Malformed("presence entries must be objects"));
    };
    let user = user_id(index, obj.get("user").unwrap_or(&Value::Null))?;
    let Some(Value::Bool(online)) = obj.get("online") else {
        return Err(DecodeErrorKind::Malformed("missing or non-boolean online"));
    };
    let last_seen = match obj.get("last_seen") {
        Some(Value::Null) => None,
        Some(Value::String(s)) => {
            Some(UnixMillis::parse_rfc3339(s).ok_or(DecodeErrorKind::Malformed("bad last_seen time"))?)
        }
        _ => return Err(DecodeErrorKind::Malformed("missing or non-string last_seen")),
    };
    let last_seen_approx = match obj.get("last_seen_approx") {
        None => None,
        Some(Value::String(s)) => {
            Some(Approx::parse(s).ok_or(DecodeErrorKind::Malformed("unknown last_seen_approx"))?)
        }
        Some(_) => return Err(DecodeErrorKind::Malformed("non-string last_seen_approx")),
    };
    Ok(PresenceEntry { user, online: *online, last_seen, last_seen_approx })
}

/// The serialized shape of a frame: serde writes the tag first, then the fields in this order.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Wire<'a> {
    Ping {
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    Query {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        users: Users<'a>,
    },
    Subscribe {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        users: Users<'a>,
    },
    Unsubscribe {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        users: Users<'a>,
    },
    Bye,
    Auth {
        token: &'a str,
    },
    Presence {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        users: Entries<'a>,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        code: &'static str,
        message: &'a str,
    },
}

impl<'a> From<&'a Frame> for Wire<'a> {
    fn from(frame: &'a Frame) -> Self {
        match frame {
            Frame::Ping { seq } => Wire::Ping { seq: *seq },
            Frame::Pong { seq } => Wire::Pong { seq: *seq },
            Frame::Query { id, users } => Wire::Query { id: *id, users: Users(users) },
            Frame::Subscribe { id, users } => Wire::Subscribe { id: *id, users: Users(users) },
            Frame::Unsubscribe { id, users } => Wire::Unsubscribe { id: *id, users: Users(users) },
            Frame::Bye => Wire::Bye,
            Frame::Auth { token } => Wire::Auth { token: &token.0 },
            Frame::Presence { id, users } => Wire::Presence { id: *id, users: Entries(users) },
            Frame::Error { id, code, message } => {
                Wire::Error { id: *id, code: code.as_str(), message: super::wire_message(message) }
            }
        }
    }
}

struct Users<'a>(&'a [UserId]);

impl Serialize for Users<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(UserId::as_str))
    }
}

struct Entries<'a>(&'a [PresenceEntry]);

/// One presence entry; `last_seen` is always written (`null` when unknown or hidden), and
/// `last_seen_approx` only when there is a bucket (so an entry with nothing hidden is
/// byte-identical to one from before privacy).
#[derive(Serialize)]
struct EntryWire<'a> {
    user: &'a str,
    online: bool,
    last_seen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen_approx: Option<&'static str>,
}

impl Serialize for Entries<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|e| EntryWire {
            user: e.user.as_str(),
            online: e.online,
            last_seen: e.last_seen.map(UnixMillis::to_rfc3339),
            last_seen_approx: e.last_seen_approx.map(Approx::as_str),
        }))
    }
}
