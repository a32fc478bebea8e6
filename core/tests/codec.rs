//! The frame codec against `docs/PROTOCOL.md`: exact bytes of every frame in both encodings, every
//! decode error in both encodings (with the request-id echo), JSON/binary equivalence, and
//! property tests (round trips, no panics on arbitrary input).

use presence_core::codec::{decode, encode_binary, encode_json};
use presence_core::frame::{
    DecodeError, DecodeErrorKind, Encoding, ErrorCode, Frame, Limits, PresenceEntry, Token,
    MAX_ERROR_MESSAGE_BYTES, MAX_FRAME_BYTES, MAX_TOKEN_BYTES, MAX_USERS_PER_FRAME,
};
use presence_core::time::{UnixMillis, MAX_WIRE_MILLIS};
use presence_core::user::{InvalidUserId, UserId};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn user(s: &str) -> UserId {
    UserId::new(s).expect("valid test user id")
}

fn users(ids: &[&str]) -> Vec<UserId> {
    ids.iter().map(|s| user(s)).collect()
}

fn dec_json(s: &str) -> Result<Frame, DecodeError> {
    decode(s.as_bytes(), Encoding::Json, &Limits::default())
}

fn dec_bin(b: &[u8]) -> Result<Frame, DecodeError> {
    decode(b, Encoding::Binary, &Limits::default())
}

/// Parses `"01 0a ff"` (whitespace ignored) into bytes.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits in {s:?}");
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(pair, 16).expect("hex digit")
        })
        .collect()
}

fn err(kind: DecodeErrorKind, id: Option<u64>) -> Result<Frame, DecodeError> {
    Err(DecodeError { kind, id })
}

fn malformed_kind(r: &Result<Frame, DecodeError>) -> bool {
    matches!(r, Err(DecodeError { kind: DecodeErrorKind::Malformed(_), .. }))
}

#[track_caller]
fn assert_malformed(r: Result<Frame, DecodeError>, id: Option<u64>) {
    match r {
        Err(DecodeError { kind: DecodeErrorKind::Malformed(_), id: got }) => {
            assert_eq!(got, id, "wrong id echo")
        }
        other => panic!("expected Malformed with id {id:?}, got {other:?}"),
    }
}

/// 2024-01-15T09:42:00.000Z
const T: UnixMillis = UnixMillis(1_705_311_720_000);

/// Every frame type (several shapes of some), with its exact JSON and binary encodings.
fn examples() -> Vec<(Frame, &'static str, Vec<u8>)> {
    vec![
        (Frame::Ping { seq: Some(42) }, r#"{"type":"ping","seq":42}"#, hex("01 01 00 00 00 00 00 00 00 2a")),
        (Frame::Ping { seq: None }, r#"{"type":"ping"}"#, hex("01 00")),
        (Frame::Pong { seq: Some(42) }, r#"{"type":"pong","seq":42}"#, hex("02 01 00 00 00 00 00 00 00 2a")),
        (Frame::Pong { seq: None }, r#"{"type":"pong"}"#, hex("02 00")),
        (
            Frame::Query { id: Some(7), users: users(&["bob", "carol"]) },
            r#"{"type":"query","id":7,"users":["bob","carol"]}"#,
            hex("03 01 00 00 00 00 00 00 00 07 00 02 03 62 6f 62 05 63 61 72 6f 6c"),
        ),
        (Frame::Query { id: None, users: vec![] }, r#"{"type":"query","users":[]}"#, hex("03 00 00 00")),
        (
            Frame::Query { id: Some(u64::MAX), users: users(&["a"]) },
            r#"{"type":"query","id":18446744073709551615,"users":["a"]}"#,
            hex("03 01 ff ff ff ff ff ff ff ff 00 01 01 61"),
        ),
        (
            Frame::Subscribe { id: Some(8), users: users(&["bob"]) },
            r#"{"type":"subscribe","id":8,"users":["bob"]}"#,
            hex("04 01 00 00 00 00 00 00 00 08 00 01 03 62 6f 62"),
        ),
        (
            Frame::Unsubscribe { id: None, users: users(&["bob"]) },
            r#"{"type":"unsubscribe","users":["bob"]}"#,
            hex("05 00 00 01 03 62 6f 62"),
        ),
        (Frame::Bye, r#"{"type":"bye"}"#, hex("06")),
        (
            Frame::Auth { token: Token("a.b".into()) },
            r#"{"type":"auth","token":"a.b"}"#,
            hex("09 00 03 61 2e 62"),
        ),
        (Frame::Auth { token: Token(String::new()) }, r#"{"type":"auth","token":""}"#, hex("09 00 00")),
        (
            Frame::Presence {
                id: Some(7),
                users: vec![
                    PresenceEntry {
                        user: user("bob"),
                        online: false,
                        last_seen: Some(T),
                        last_seen_approx: None,
                    },
                    PresenceEntry {
                        user: user("carol"),
                        online: true,
                        last_seen: None,
                        last_seen_approx: None,
                    },
                ],
            },
            r#"{"type":"presence","id":7,"users":[{"user":"bob","online":false,"last_seen":"2024-01-15T09:42:00.000Z"},{"user":"carol","online":true,"last_seen":null}]}"#,
            hex("07 01 00 00 00 00 00 00 00 07 00 02
                 03 62 6f 62 02 00 00 01 8d 0c 7f d2 40
                 05 63 61 72 6f 6c 01"),
        ),
        (
            Frame::Presence {
                id: None,
                users: vec![PresenceEntry {
                    user: user("bob"),
                    online: true,
                    last_seen: Some(T),
                    last_seen_approx: None,
                }],
            },
            r#"{"type":"presence","users":[{"user":"bob","online":true,"last_seen":"2024-01-15T09:42:00.000Z"}]}"#,
            hex("07 00 00 01 03 62 6f 62 03 00 00 01 8d 0c 7f d2 40"),
        ),
        (
            Frame::Presence {
                id: None,
                users: vec![PresenceEntry {
                    user: user("dave"),
                    online: false,
                    last_seen: None,
                    last_seen_approx: None,
                }],
            },
            r#"{"type":"presence","users":[{"user":"dave","online":false,"last_seen":null}]}"#,
            hex("07 00 00 01 04 64 61 76 65 00"),
        ),
        (
            Frame::Error {
                id: Some(7),
                code: ErrorCode::TooManyUsers,
                message: "at most 256 users per frame".into(),
            },
            r#"{"type":"error","id":7,"code":"too_many_users","message":"at most 256 users per frame"}"#,
            hex("08 01 00 00 00 00 00 00 00 07 02 00 1b
                 61 74 20 6d 6f 73 74 20 32 35 36 20 75 73 65 72 73 20 70 65 72 20 66 72 61 6d 65"),
        ),
        (
            Frame::Error { id: None, code: ErrorCode::RateLimited, message: "slow \"down\"".into() },
            r#"{"type":"error","code":"rate_limited","message":"slow \"down\""}"#,
            hex("08 00 03 00 0b 73 6c 6f 77 20 22 64 6f 77 6e 22"),
        ),
        (
            Frame::Error { id: None, code: ErrorCode::Unavailable, message: String::new() },
            r#"{"type":"error","code":"unavailable","message":""}"#,
            hex("08 00 04 00 00"),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Exact values
// ---------------------------------------------------------------------------------------------

#[test]
fn every_frame_encodes_to_the_exact_documented_json() {
    for (frame, json, _) in examples() {
        assert_eq!(encode_json(&frame), json, "{frame:?}");
    }
}

#[test]
fn every_frame_encodes_to_the_exact_documented_binary() {
    for (frame, _, bin) in examples() {
        assert_eq!(encode_binary(&frame), bin, "{frame:?}");
    }
}

#[test]
fn every_documented_json_decodes_to_its_frame() {
    for (frame, json, _) in examples() {
        assert_eq!(dec_json(json), Ok(frame), "{json}");
    }
}

#[test]
fn every_documented_binary_decodes_to_its_frame() {
    for (frame, _, bin) in examples() {
        assert_eq!(dec_bin(&bin), Ok(frame), "{bin:02x?}");
    }
}

#[test]
fn error_codes_have_their_wire_spelling_and_byte() {
    let expected = [
        "bad_frame",
        "invalid_user",
        "too_many_users",
        "rate_limited",
        "unavailable",
        "bad_token",
        "token_expired",
    ];
    for (byte, (code, name)) in ErrorCode::ALL.into_iter().zip(expected).enumerate() {
        let frame = Frame::Error { id: None, code, message: "m".into() };
        assert_eq!(encode_json(&frame), format!(r#"{{"type":"error","code":"{name}","message":"m"}}"#));
        assert_eq!(encode_binary(&frame), vec![0x08, 0x00, byte as u8, 0x00, 0x01, b'm']);
        assert_eq!(dec_json(&encode_json(&frame)), Ok(frame.clone()));
        assert_eq!(dec_bin(&encode_binary(&frame)), Ok(frame));
    }
}

#[test]
fn json_escapes_strings_in_error_messages() {
    let message = "quote \" backslash \\ newline \n tab \t nul \u{0} é 😀";
    let frame = Frame::Error { id: Some(1), code: ErrorCode::BadFrame, message: message.into() };
    let json = encode_json(&frame);
    assert_eq!(
        json,
        r#"{"type":"error","id":1,"code":"bad_frame","message":"quote \" backslash \\ newline \n tab \t nul \u0000 é 😀"}"#
    );
    assert_eq!(dec_json(&json), Ok(frame));
}

#[test]
fn json_decoding_is_liberal_in_layout_and_ignores_unknown_members() {
    let query = Ok(Frame::Query { id: Some(7), users: users(&["bob"]) });
    // Member order, whitespace, extra members, escapes in names and values.
    assert_eq!(dec_json(r#" { "users" : [ "bob" ] , "id" : 7 , "type" : "query" } "#), query);
    assert_eq!(dec_json("\t\r\n{\"type\":\"query\",\"id\":7,\"users\":[\"bob\"]}\n"), query);
    assert_eq!(
        dec_json(r#"{"type":"query","id":7,"users":["bob"],"x":{"deep":[1,2,{"a":null}]},"v":2}"#),
        query
    );
    assert_eq!(dec_json(r#"{"typ\u0065":"qu\u0065ry","id":7,"users":["b\u006fb"]}"#), query);
    // null is the same as absent.
    assert_eq!(
        dec_json(r#"{"type":"query","id":null,"users":["bob"]}"#),
        Ok(Frame::Query { id: None, users: users(&["bob"]) })
    );
    assert_eq!(dec_json(r#"{"type":"ping","seq":null}"#), Ok(Frame::Ping { seq: None }));
    // "id" on a frame that has none is just an unknown member.
    assert_eq!(dec_json(r#"{"type":"ping","id":"x"}"#), Ok(Frame::Ping { seq: None }));
    assert_eq!(dec_json(r#"{"type":"bye","users":5}"#), Ok(Frame::Bye));
    // Unknown members inside presence entries are ignored too.
    assert_eq!(
        dec_json(r#"{"type":"presence","users":[{"last_seen":null,"x":1,"online":true,"user":"a"}]}"#),
        Ok(Frame::Presence {
            id: None,
            users: vec![PresenceEntry {
                user: user("a"),
                online: true,
                last_seen: None,
                last_seen_approx: None
            }]
        })
    );
    // A repeated member: the last occurrence wins.
    assert_eq!(dec_json(r#"{"type":"ping","seq":1,"seq":2}"#), Ok(Frame::Ping { seq: Some(2) }));
}

#[test]
fn limits_are_inclusive() {
    // Exactly max_users users, exactly MAX_ERROR_MESSAGE_BYTES bytes, exactly max_frame_bytes.
    let many: Vec<UserId> = (0..MAX_USERS_PER_FRAME).map(|i| user(&format!("u{i}"))).collect();
    let frame = Frame::Subscribe { id: Some(1), users: many };
    assert_eq!(dec_json(&encode_json(&frame)), Ok(frame.clone()));
    assert_eq!(dec_bin(&encode_binary(&frame)), Ok(frame));

    let frame = Frame::Error {
        id: None,
        code: ErrorCode::BadFrame,
        message: "é".repeat(MAX_ERROR_MESSAGE_BYTES / 2),
    };
    assert_eq!(dec_json(&encode_json(&frame)), Ok(frame.clone()));
    assert_eq!(dec_bin(&encode_binary(&frame)), Ok(frame));

    let frame = Frame::Query { id: None, users: vec![user(&"x".repeat(128))] };
    let json = encode_json(&frame);
    let bin = encode_binary(&frame);
    let exact = |n| Limits { max_frame_bytes: n, max_users: MAX_USERS_PER_FRAME };
    assert_eq!(decode(json.as_bytes(), Encoding::Json, &exact(json.len())), Ok(frame.clone()));
    assert_eq!(decode(&bin, Encoding::Binary, &exact(bin.len())), Ok(frame));
    assert_eq!(Limits::default().max_frame_bytes, MAX_FRAME_BYTES);
}

#[test]
fn last_seen_bounds_of_the_wire_range() {
    for ms in [0, MAX_WIRE_MILLIS] {
        let frame = Frame::Presence {
            id: None,
            users: vec![PresenceEntry {
                user: user("a"),
                online: false,
                last_seen: Some(UnixMillis(ms)),
                last_seen_approx: None,
            }],
        };
        assert_eq!(dec_json(&encode_json(&frame)), Ok(frame.clone()));
        assert_eq!(dec_bin(&encode_binary(&frame)), Ok(frame));
    }
    let last = Ok(Frame::Presence {
        id: None,
        users: vec![PresenceEntry {
            user: user("a"),
            online: false,
            last_seen: Some(UnixMillis(MAX_WIRE_MILLIS)),
            last_seen_approx: None,
        }],
    });
    assert_eq!(
        dec_json(
            r#"{"type":"presence","users":[{"user":"a","online":false,"last_seen":"9999-12-31T23:59:59.999Z"}]}"#
        ),
        last
    );
    assert_eq!(dec_bin(&hex("07 00 00 01 01 61 02 00 00 e6 77 d2 1f db ff")), last);
    assert_eq!(
        dec_json(
            r#"{"type":"presence","users":[{"user":"a","online":false,"last_seen":"1970-01-01T00:00:00.000Z"}]}"#
        ),
        dec_bin(&hex("07 00 00 01 01 61 02 00 00 00 00 00 00 00 00"))
    );
}

// ---------------------------------------------------------------------------------------------
// Encoders normalize what the wire cannot carry, identically
// ---------------------------------------------------------------------------------------------

#[test]
fn out_of_range_last_seen_is_clamped_identically_by_both_encoders() {
    let entry = |ms| PresenceEntry {
        user: user("a"),
        online: true,
        last_seen: Some(UnixMillis(ms)),
        last_seen_approx: None,
    };
    let frame = Frame::Presence { id: None, users: vec![entry(-5), entry(i64::MAX), entry(i64::MIN)] };
    let clamped = Frame::Presence { id: None, users: vec![entry(0), entry(MAX_WIRE_MILLIS), entry(0)] };
    assert_eq!(dec_json(&encode_json(&frame)), Ok(clamped.clone()));
    assert_eq!(dec_bin(&encode_binary(&frame)), Ok(clamped));
}

#[test]
fn over_long_error_message_is_cut_identically_at_a_char_boundary() {
    // 3-byte characters: 1024 is not a multiple of 3, so the cut must back off to 1023.
    let frame = Frame::Error { id: Some(3), code: ErrorCode::BadFrame, message: "€".repeat(1000) };
    let cut = Frame::Error { id: Some(3), code: ErrorCode::BadFrame, message: "€".repeat(341) };
    assert_eq!(dec_json(&encode_json(&frame)), Ok(cut.clone()));
    assert_eq!(dec_bin(&encode_binary(&frame)), Ok(cut));
}

// ---------------------------------------------------------------------------------------------
// Errors: Oversized
// ---------------------------------------------------------------------------------------------

#[test]
fn oversized_is_refused_before_parsing_in_both_encodings() {
    let small = Limits { max_frame_bytes: 10, max_users: MAX_USERS_PER_FRAME };
    let oversized = |len| err(DecodeErrorKind::Oversized { len, max: 10 }, None);
    // Valid frames and garbage alike: nothing is parsed, so no id is echoed either.
    let json = r#"{"type":"query","id":7,"users":["bob"]}"#;
    assert_eq!(decode(json.as_bytes(), Encoding::Json, &small), oversized(json.len()));
    assert_eq!(decode(&[0xff; 11], Encoding::Json, &small), oversized(11));
    let bin = encode_binary(&Frame::Query { id: Some(7), users: users(&["bob"]) });
    assert_eq!(decode(&bin, Encoding::Binary, &small), oversized(bin.len()));
    assert_eq!(decode(&[0xff; 11], Encoding::Binary, &small), oversized(11));
    // Default limit: 64 KiB.
    let big = vec![b' '; MAX_FRAME_BYTES + 1];
    assert_eq!(
        dec_json(std::str::from_utf8(&big).unwrap()),
        err(DecodeErrorKind::Oversized { len: MAX_FRAME_BYTES + 1, max: MAX_FRAME_BYTES }, None)
    );
    assert_eq!(
        dec_bin(&big),
        err(DecodeErrorKind::Oversized { len: MAX_FRAME_BYTES + 1, max: MAX_FRAME_BYTES }, None)
    );
}

// ---------------------------------------------------------------------------------------------
// Errors: JSON
// ---------------------------------------------------------------------------------------------

#[test]
fn json_malformed_syntax_has_no_id() {
    for input in [
        &b""[..],
        b"   ",
        b"\xff",
        b"{\"type\":\"ping\",\"x\":\"\xc3\x28\"}",
        b"{\"type\":",
        b"{\"type\":\"query\",\"id\":7,\"users\":[\"bob\"]",
        b"{type:\"ping\"}",
        b"{\"type\":\"ping\",}",
        b"{\"type\":\"ping\",\"x\":\"\\ud800\"}",
        b"[1]",
        b"\"ping\"",
        b"42",
        b"null",
    ] {
        assert_malformed(decode(input, Encoding::Json, &Limits::default()), None);
    }
}

#[test]
fn json_nesting_beyond_the_recursion_limit_is_malformed() {
    let deep = format!(r#"{{"type":"ping","x":{}{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
    assert_malformed(dec_json(&deep), None);
    // At most 127 levels, the frame object counting as one (docs/PROTOCOL.md section 2.3).
    let nested = |n| format!(r#"{{"type":"ping","x":{}{}}}"#, "[".repeat(n), "]".repeat(n));
    assert_eq!(dec_json(&nested(126)), Ok(Frame::Ping { seq: None }));
    assert_malformed(dec_json(&nested(127)), None);
}

#[test]
fn json_missing_or_non_string_type_is_malformed_with_readable_id() {
    assert_malformed(dec_json(r#"{"id":7,"users":["bob"]}"#), Some(7));
    assert_malformed(dec_json(r#"{"type":3,"id":7}"#), Some(7));
    assert_malformed(dec_json(r#"{"type":null}"#), None);
    assert_malformed(dec_json(r#"{}"#), None);
}

#[test]
fn json_unknown_type_echoes_a_readable_id() {
    assert_eq!(dec_json(r#"{"type":"pang","id":9}"#), err(DecodeErrorKind::UnknownType, Some(9)));
    assert_eq!(dec_json(r#"{"type":"PING"}"#), err(DecodeErrorKind::UnknownType, None));
    assert_eq!(dec_json(r#"{"type":"","id":"9"}"#), err(DecodeErrorKind::UnknownType, None));
}

#[test]
fn json_bad_id_or_seq_is_malformed() {
    for bad in ["\"7\"", "-1", "1.5", "7.0", "1e2", "18446744073709551616", "true", "[7]", "{}", "-0"] {
        assert_malformed(dec_json(&format!(r#"{{"type":"query","id":{bad},"users":["a"]}}"#)), None);
        assert_malformed(dec_json(&format!(r#"{{"type":"ping","seq":{bad}}}"#)), None);
        assert_malformed(dec_json(&format!(r#"{{"type":"pong","seq":{bad}}}"#)), None);
        assert_malformed(
            dec_json(&format!(r#"{{"type":"error","id":{bad},"code":"bad_frame","message":""}}"#)),
            None,
        );
    }
    assert_eq!(dec_json(r#"{"type":"ping","seq":0}"#), Ok(Frame::Ping { seq: Some(0) }));
}

#[test]
fn json_bad_users_is_malformed_with_id() {
    for ty in ["query", "subscribe", "unsubscribe", "presence"] {
        for users in ["", r#","users":null"#, r#","users":"bob""#, r#","users":{"0":"bob"}"#] {
            assert_malformed(dec_json(&format!(r#"{{"type":"{ty}","id":7{users}}}"#)), Some(7));
        }
    }
    for ty in ["query", "subscribe", "unsubscribe"] {
        for entry in ["1", "null", r#"["bob"]"#, r#"{"user":"bob"}"#] {
            assert_malformed(
                dec_json(&format!(r#"{{"type":"{ty}","id":7,"users":["bob",{entry}]}}"#)),
                Some(7),
            );
        }
    }
}

#[test]
fn json_bad_presence_entries_are_malformed_with_id() {
    for entry in [
        r#""bob""#,
        r#"null"#,
        r#"{"online":true,"last_seen":null}"#,
        r#"{"user":5,"online":true,"last_seen":null}"#,
        r#"{"user":"bob","last_seen":null}"#,
        r#"{"user":"bob","online":1,"last_seen":null}"#,
        r#"{"user":"bob","online":"true","last_seen":null}"#,
        r#"{"user":"bob","online":true}"#,
        r#"{"user":"bob","online":true,"last_seen":1705311720000}"#,
        r#"{"user":"bob","online":true,"last_seen":"2024-01-15T09:42:00Z"}"#,
        r#"{"user":"bob","online":true,"last_seen":"2024-01-15T09:42:00.000+00:00"}"#,
        r#"{"user":"bob","online":true,"last_seen":"2024-01-15t09:42:00.000z"}"#,
        r#"{"user":"bob","online":true,"last_seen":"1969-12-31T23:59:59.999Z"}"#,
        r#"{"user":"bob","online":true,"last_seen":""}"#,
    ] {
        assert_malformed(dec_json(&format!(r#"{{"type":"presence","id":7,"users":[{entry}]}}"#)), Some(7));
    }
}

#[test]
fn json_bad_error_frames_are_malformed_with_id() {
    let long = "x".repeat(MAX_ERROR_MESSAGE_BYTES + 1);
    for body in [
        r#""message":"m""#.to_owned(),
        r#""code":null,"message":"m""#.to_owned(),
        r#""code":"nope","message":"m""#.to_owned(),
        r#""code":"BAD_FRAME","message":"m""#.to_owned(),
        r#""code":0,"message":"m""#.to_owned(),
        r#""code":"bad_frame""#.to_owned(),
        r#""code":"bad_frame","message":null"#.to_owned(),
        r#""code":"bad_frame","message":["m"]"#.to_owned(),
        format!(r#""code":"bad_frame","message":"{long}""#),
    ] {
        assert_malformed(dec_json(&format!(r#"{{"type":"error","id":7,{body}}}"#)), Some(7));
    }
}

#[test]
fn json_invalid_user_reports_index_and_reason_with_id() {
    let invalid = |index, reason, id| err(DecodeErrorKind::InvalidUser { index, reason }, id);
    let long = "x".repeat(129);
    assert_eq!(
        dec_json(r#"{"type":"subscribe","id":8,"users":["bob","bob smith"]}"#),
        invalid(1, InvalidUserId::BadChar, Some(8))
    );
    assert_eq!(dec_json(r#"{"type":"query","users":[""]}"#), invalid(0, InvalidUserId::Empty, None));
    assert_eq!(
        dec_json(&format!(r#"{{"type":"unsubscribe","id":1,"users":["a","b","{long}"]}}"#)),
        invalid(2, InvalidUserId::TooLong, Some(1))
    );
    assert_eq!(
        dec_json(r#"{"type":"query","id":2,"users":["bøb"]}"#),
        invalid(0, InvalidUserId::BadChar, Some(2))
    );
    assert_eq!(
        dec_json(
            r#"{"type":"presence","id":3,"users":[{"user":"ok","online":true,"last_seen":null},{"user":"a/b","online":true,"last_seen":null}]}"#
        ),
        invalid(1, InvalidUserId::BadChar, Some(3))
    );
    // The first bad entry wins.
    assert_eq!(dec_json(r#"{"type":"query","users":["a b",""]}"#), invalid(0, InvalidUserId::BadChar, None));
}

#[test]
fn json_too_many_users_is_checked_before_the_entries() {
    let list = |n: usize, item: &str| vec![item; n].join(",");
    let too_many = |count, id| err(DecodeErrorKind::TooManyUsers { count, max: 256 }, id);
    for ty in ["query", "subscribe", "unsubscribe", "presence"] {
        // 257 entries that are each malformed or invalid: the count is reported, not the entries.
        assert_eq!(
            dec_json(&format!(r#"{{"type":"{ty}","id":5,"users":[{}]}}"#, list(257, "1"))),
            too_many(257, Some(5))
        );
        assert_eq!(
            dec_json(&format!(r#"{{"type":"{ty}","users":[{}]}}"#, list(300, r#""""#))),
            too_many(300, None)
        );
    }
    let tight = Limits { max_frame_bytes: MAX_FRAME_BYTES, max_users: 1 };
    assert_eq!(
        decode(br#"{"type":"query","id":1,"users":["a","b"]}"#, Encoding::Json, &tight),
        err(DecodeErrorKind::TooManyUsers { count: 2, max: 1 }, Some(1))
    );
}

#[test]
fn json_trailing_bytes_are_detected_with_readable_id() {
    assert_eq!(
        dec_json(r#"{"type":"query","id":7,"users":["bob"]} x"#),
        err(DecodeErrorKind::TrailingBytes, Some(7))
    );
    assert_eq!(dec_json(r#"{"type":"bye"}{"type":"bye"}"#), err(DecodeErrorKind::TrailingBytes, None));
    assert_eq!(dec_json(r#"{"type":"bye"},"#), err(DecodeErrorKind::TrailingBytes, None));
    assert_eq!(dec_json("{\"type\":\"bye\"}\0"), err(DecodeErrorKind::TrailingBytes, None));
    // Trailing JSON whitespace is fine.
    assert_eq!(dec_json("{\"type\":\"bye\"} \t\r\n"), Ok(Frame::Bye));
}

// ---------------------------------------------------------------------------------------------
// Errors: binary
// ---------------------------------------------------------------------------------------------

#[test]
fn binary_empty_input_is_malformed() {
    assert_eq!(dec_bin(&[]), err(DecodeErrorKind::Malformed("empty frame"), None));
}

#[test]
fn binary_every_strict_prefix_of_a_frame_is_truncated() {
    for (frame, _, bin) in examples() {
        for len in 1..bin.len() {
            let r = dec_bin(&bin[..len]);
            assert_eq!(
                r.as_ref().map_err(|e| e.kind.clone()),
                Err(DecodeErrorKind::Malformed("truncated")),
                "{frame:?} cut to {len} bytes"
            );
        }
    }
    // Once the id is complete it is echoed.
    let query = hex("03 01 00 00 00 00 00 00 00 07 00 02 03 62 6f 62 05 63 61");
    assert_eq!(dec_bin(&query), err(DecodeErrorKind::Malformed("truncated"), Some(7)));
    assert_eq!(dec_bin(&hex("03 01 00 00 00 00")), err(DecodeErrorKind::Malformed("truncated"), None));
}

#[test]
fn binary_unknown_tag() {
    for tag in [0x00, 0x0a, 0x7f, 0x80, 0xff] {
        assert_eq!(dec_bin(&[tag]), err(DecodeErrorKind::UnknownType, None));
        assert_eq!(dec_bin(&[tag, 1, 2, 3]), err(DecodeErrorKind::UnknownType, None));
    }
}

#[test]
fn binary_optional_flag_must_be_0_or_1() {
    for input in ["01 02", "02 ff 00 00 00 00 00 00 00 01", "03 02 00 00", "07 80 00 00", "08 05 00 00 00"] {
        assert_malformed(dec_bin(&hex(input)), None);
    }
}

#[test]
fn binary_bad_presence_entries_are_malformed_with_id() {
    let id7 = "07 01 00 00 00 00 00 00 00 07 00 01 01 61";
    for rest in [
        "04",                         // reserved flag bit 2
        "80",                         // reserved flag bit 7
        "ff 00 00 00 00 00 00 00 00", // reserved bits together with valid ones
        "02 ff ff ff ff ff ff ff ff", // last_seen -1
        "02 80 00 00 00 00 00 00 00", // last_seen i64::MIN
        "02 00 00 e6 77 d2 1f dc 00", // last_seen MAX_WIRE_MILLIS + 1
        "03 7f ff ff ff ff ff ff ff", // last_seen i64::MAX
    ] {
        assert_malformed(dec_bin(&hex(&format!("{id7} {rest}"))), Some(7));
    }
}

#[test]
fn auth_frames_bound_and_check_their_token() {
    let long = "t".repeat(MAX_TOKEN_BYTES);
    let frame = Frame::Auth { token: Token(long.clone()) };
    assert_eq!(dec_json(&encode_json(&frame)), Ok(frame.clone()));
    assert_eq!(dec_bin(&encode_binary(&frame)), Ok(frame));
    let over = format!(r#"{{"type":"auth","token":"{long}t"}}"#);
    assert_eq!(dec_json(&over), err(DecodeErrorKind::Malformed("token too long"), None));
    let mut bin = vec![0x09, 0x10, 0x01];
    bin.extend(std::iter::repeat_n(b't', MAX_TOKEN_BYTES + 1));
    assert_eq!(dec_bin(&bin), err(DecodeErrorKind::Malformed("token too long"), None));
    for bad in [r#"{"type":"auth"}"#, r#"{"type":"auth","token":7}"#, r#"{"type":"auth","token":null}"#] {
        assert_eq!(
            dec_json(bad),
            err(DecodeErrorKind::Malformed("missing or non-string token"), None),
            "{bad}"
        );
    }
    assert_eq!(dec_bin(&hex("09 00 02 c3 28")), err(DecodeErrorKind::Malformed("token is not UTF-8"), None));
    assert_eq!(dec_bin(&hex("09 00 05 61")), err(DecodeErrorKind::Malformed("truncated"), None));
    assert_eq!(dec_bin(&hex("09 00")), err(DecodeErrorKind::Malformed("truncated"), None));
    // An id on an auth frame is an unknown member: ignored.
    assert_eq!(
        dec_json(r#"{"type":"auth","id":3,"token":"x"}"#),
        Ok(Frame::Auth { token: Token("x".into()) })
    );
    // The token never shows in a frame's Debug.
    assert_eq!(
        format!("{:?}", Frame::Auth { token: Token("secret".into()) }),
        "Auth { token: Token(<6 bytes redacted>) }"
    );
}

#[test]
fn binary_bad_error_frames_are_malformed_with_id() {
    let id7 = "08 01 00 00 00 00 00 00 00 07";
    assert_malformed(dec_bin(&hex(&format!("{id7} 07 00 00"))), Some(7)); // unknown code
    assert_malformed(dec_bin(&hex(&format!("{id7} ff 00 00"))), Some(7));
    assert_malformed(dec_bin(&hex(&format!("{id7} 00 00 02 c3 28"))), Some(7)); // not UTF-8
    assert_malformed(dec_bin(&hex(&format!("{id7} 00 00 01 80"))), Some(7));
    let mut long = hex(&format!("{id7} 00 04 01"));
    long.extend(vec![b'x'; MAX_ERROR_MESSAGE_BYTES + 1]);
    assert_malformed(dec_bin(&long), Some(7));
}

#[test]
fn binary_invalid_user_reports_index_and_reason_with_id() {
    let invalid = |index, reason, id| err(DecodeErrorKind::InvalidUser { index, reason }, id);
    let id8 = "04 01 00 00 00 00 00 00 00 08";
    assert_eq!(
        dec_bin(&hex(&format!("{id8} 00 02 03 62 6f 62 03 62 20 62"))),
        invalid(1, InvalidUserId::BadChar, Some(8))
    );
    assert_eq!(dec_bin(&hex("03 00 00 01 00")), invalid(0, InvalidUserId::Empty, None));
    let mut long = hex("05 01 00 00 00 00 00 00 00 01 00 02 01 61 81");
    long.extend(vec![b'x'; 129]);
    assert_eq!(dec_bin(&long), invalid(1, InvalidUserId::TooLong, Some(1)));
    // Non-ASCII bytes (here the UTF-8 of "ø") are bad characters, as in JSON.
    assert_eq!(
        dec_bin(&hex("03 01 00 00 00 00 00 00 00 02 00 01 04 62 c3 b8 62")),
        invalid(0, InvalidUserId::BadChar, Some(2))
    );
    assert_eq!(
        dec_bin(&hex("07 01 00 00 00 00 00 00 00 03 00 02 02 6f 6b 01 03 61 2f 62 01")),
        invalid(1, InvalidUserId::BadChar, Some(3))
    );
    // Truncation is detected before the id rules: a declared length beyond the input is "truncated".
    assert_eq!(dec_bin(&hex("03 00 00 01 81 61")), err(DecodeErrorKind::Malformed("truncated"), None));
}

#[test]
fn binary_too_many_users_is_checked_before_the_entries() {
    let too_many = |count, id| err(DecodeErrorKind::TooManyUsers { count, max: 256 }, id);
    for tag in ["03", "04", "05", "07"] {
        // Declared 257 / 65535 users and no bytes for them: the count is reported, not truncation.
        assert_eq!(dec_bin(&hex(&format!("{tag} 01 00 00 00 00 00 00 00 05 01 01"))), too_many(257, Some(5)));
        assert_eq!(dec_bin(&hex(&format!("{tag} 00 ff ff"))), too_many(65535, None));
    }
    let tight = Limits { max_frame_bytes: MAX_FRAME_BYTES, max_users: 1 };
    assert_eq!(
        decode(&hex("03 01 00 00 00 00 00 00 00 01 00 02 01 61 01 62"), Encoding::Binary, &tight),
        err(DecodeErrorKind::TooManyUsers { count: 2, max: 1 }, Some(1))
    );
}

#[test]
fn binary_trailing_bytes_are_detected_with_id() {
    assert_eq!(dec_bin(&hex("06 00")), err(DecodeErrorKind::TrailingBytes, None));
    assert_eq!(dec_bin(&hex("01 00 00")), err(DecodeErrorKind::TrailingBytes, None));
    for (frame, _, mut bin) in examples() {
        bin.push(0);
        let id = match frame {
            Frame::Query { id, .. }
            | Frame::Subscribe { id, .. }
            | Frame::Unsubscribe { id, .. }
            | Frame::Presence { id, .. }
            | Frame::Error { id, .. } => id,
            Frame::Ping { .. } | Frame::Pong { .. } | Frame::Bye | Frame::Auth { .. } => None,
        };
        assert_eq!(dec_bin(&bin), err(DecodeErrorKind::TrailingBytes, id), "{frame:?}");
    }
}

#[test]
fn decode_error_maps_to_the_error_frame_code() {
    let code = |r: Result<Frame, DecodeError>| r.unwrap_err().code();
    assert_eq!(code(dec_json(r#"{"type":"query","users":[""]}"#)), ErrorCode::InvalidUser);
    assert_eq!(code(dec_bin(&hex("03 00 ff ff"))), ErrorCode::TooManyUsers);
    assert_eq!(code(dec_bin(&hex("09"))), ErrorCode::BadFrame);
    assert_eq!(code(dec_json("x")), ErrorCode::BadFrame);
}

// ---------------------------------------------------------------------------------------------
// JSON <-> binary equivalence
// ---------------------------------------------------------------------------------------------

#[test]
fn json_and_binary_transcode_into_each_other_for_every_frame_type() {
    for (frame, json, bin) in examples() {
        let from_json = dec_json(json).expect("example decodes");
        let from_bin = dec_bin(&bin).expect("example decodes");
        assert_eq!(from_json, from_bin);
        assert_eq!(encode_binary(&from_json), bin, "{frame:?}");
        assert_eq!(encode_json(&from_bin), json, "{frame:?}");
        assert_eq!(dec_bin(&encode_binary(&dec_json(json).unwrap())), Ok(frame.clone()));
        assert_eq!(dec_json(&encode_json(&dec_bin(&bin).unwrap())), Ok(frame));
    }
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

fn arb_user() -> impl Strategy<Value = UserId> {
    "[A-Za-z0-9_.@+:-]{1,128}".prop_map(|s| UserId::new(&s).expect("strategy yields valid ids"))
}

fn arb_users() -> impl Strategy<Value = Vec<UserId>> {
    prop_oneof![
        8 => prop::collection::vec(arb_user(), 0..8),
        1 => prop::collection::vec(arb_user(), 0..=MAX_USERS_PER_FRAME),
    ]
}

fn arb_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(ErrorCode::ALL.to_vec())
}

/// Frames whose every value the wire can carry, so both encodings must round-trip them exactly.
fn arb_frame() -> impl Strategy<Value = Frame> {
    // `Bye` weighs as one variant among nine, as if it were listed with the others.
    prop_oneof![8 => arb_frame_with_body(), 1 => Just(Frame::Bye)]
}

/// Every frame but `Bye`, the one whose binary form is a single byte (its tag): each of these
/// encodes to at least two bytes, so it has a non-empty strict prefix.
fn arb_frame_with_body() -> impl Strategy<Value = Frame> {
    let entry =
        (arb_user(), any::<bool>(), prop::option::of(0..=MAX_WIRE_MILLIS)).prop_map(|(user, online, t)| {
            PresenceEntry { user, online, last_seen: t.map(UnixMillis), last_seen_approx: None }
        });
    // Up to 256 chars of up to 4 bytes: at most MAX_ERROR_MESSAGE_BYTES.
    let message = prop::collection::vec(any::<char>(), 0..=MAX_ERROR_MESSAGE_BYTES / 4)
        .prop_map(|cs| cs.into_iter().collect::<String>());
    let id = any::<Option<u64>>;
    prop_oneof![
        id().prop_map(|seq| Frame::Ping { seq }),
        id().prop_map(|seq| Frame::Pong { seq }),
        (id(), arb_users()).prop_map(|(id, users)| Frame::Query { id, users }),
        (id(), arb_users()).prop_map(|(id, users)| Frame::Subscribe { id, users }),
        (id(), arb_users()).prop_map(|(id, users)| Frame::Unsubscribe { id, users }),
        ".{0,64}".prop_map(|t| Frame::Auth { token: Token(t) }),
        (id(), prop::collection::vec(entry, 0..8)).prop_map(|(id, users)| Frame::Presence { id, users }),
        (id(), arb_code(), message).prop_map(|(id, code, message)| Frame::Error { id, code, message }),
    ]
}

/// Frames with values the wire cannot carry (any i64 last_seen, over-long messages).
fn arb_wild_frame() -> impl Strategy<Value = Frame> {
    let entry = (arb_user(), any::<bool>(), prop::option::of(any::<i64>())).prop_map(|(user, online, t)| {
        PresenceEntry { user, online, last_seen: t.map(UnixMillis), last_seen_approx: None }
    });
    prop_oneof![
        (any::<Option<u64>>(), prop::collection::vec(entry, 0..8))
            .prop_map(|(id, users)| Frame::Presence { id, users }),
        (any::<Option<u64>>(), arb_code(), ".{0,1500}").prop_map(|(id, code, message)| Frame::Error {
            id,
            code,
            message
        }),
    ]
}

/// JSON values biased towards frame shapes, to reach the semantic checks, not just the parser.
fn arb_json_frame() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "[a-z0-9 ]{0,6}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("2024-01-15T09:42:00.000Z")),
        prop::sample::select(vec!["bad_frame", "unavailable", "nope"]).prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop::sample::select(vec!["user", "online", "last_seen", "x"]).prop_map(String::from),
                inner,
                0..4
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    let ty = prop::sample::select(vec![
        "ping",
        "pong",
        "query",
        "subscribe",
        "unsubscribe",
        "bye",
        "presence",
        "error",
        "other",
    ]);
    let key = prop::sample::select(vec!["id", "seq", "users", "code", "message", "extra"]);
    (ty, prop::collection::vec((key, value), 0..5)).prop_map(|(ty, members)| {
        let mut obj = serde_json::Map::new();
        obj.insert("type".into(), ty.into());
        for (k, v) in members {
            obj.insert(k.into(), v);
        }
        serde_json::Value::Object(obj).to_string()
    })
}

/// Applies byte edits (overwrite, insert, delete) to `bytes`.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(pos, op, b) in edits {
        let at = if bytes.is_empty() { 0 } else { pos % (bytes.len() + 1) };
        match op % 3 {
            0 if at < bytes.len() => bytes[at] = b,
            1 => bytes.insert(at, b),
            2 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => {}
        }
    }
    bytes
}

/// Decodes under `encoding`; whenever that succeeds, re-encoding must decode to the same frame.
fn decode_is_total_and_canonical(bytes: &[u8], encoding: Encoding) -> Result<(), TestCaseError> {
    let limits = Limits::default();
    if let Ok(frame) = decode(bytes, encoding, &limits) {
        prop_assert_eq!(decode(encode_json(&frame).as_bytes(), Encoding::Json, &limits), Ok(frame.clone()));
        prop_assert_eq!(decode(&encode_binary(&frame), Encoding::Binary, &limits), Ok(frame));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn prop_every_frame_round_trips_through_both_encodings(frame in arb_frame()) {
        let limits = Limits::default();
        let json = encode_json(&frame);
        let bin = encode_binary(&frame);
        prop_assert_eq!(decode(json.as_bytes(), Encoding::Json, &limits), Ok(frame.clone()));
        prop_assert_eq!(decode(&bin, Encoding::Binary, &limits), Ok(frame));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn prop_both_encodings_normalize_wild_frames_identically(frame in arb_wild_frame()) {
        let limits = Limits::default();
        let from_json = decode(encode_json(&frame).as_bytes(), Encoding::Json, &limits);
        let from_bin = decode(&encode_binary(&frame), Encoding::Binary, &limits);
        prop_assert!(from_json.is_ok(), "{:?}", from_json);
        prop_assert_eq!(from_json, from_bin);
    }

    #[test]
    fn prop_decode_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_is_total_and_canonical(&bytes, Encoding::Json)?;
        decode_is_total_and_canonical(&bytes, Encoding::Binary)?;
    }

    #[test]
    fn prop_decode_never_panics_on_arbitrary_strings(s in ".{0,256}") {
        decode_is_total_and_canonical(s.as_bytes(), Encoding::Json)?;
        decode_is_total_and_canonical(s.as_bytes(), Encoding::Binary)?;
    }

    #[test]
    fn prop_decode_never_panics_on_frame_shaped_json(json in arb_json_frame()) {
        decode_is_total_and_canonical(json.as_bytes(), Encoding::Json)?;
    }

    #[test]
    fn prop_decode_never_panics_on_mutated_frames(
        frame in arb_frame(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
    ) {
        let json = mutate(encode_json(&frame).into_bytes(), &edits);
        decode_is_total_and_canonical(&json, Encoding::Json)?;
        let bin = mutate(encode_binary(&frame), &edits);
        decode_is_total_and_canonical(&bin, Encoding::Binary)?;
    }

    #[test]
    fn prop_binary_prefixes_are_truncated(frame in arb_frame_with_body(), cut in any::<prop::sample::Index>()) {
        let bin = encode_binary(&frame);
        prop_assert!(bin.len() >= 2, "{:?} encodes to {} byte(s)", frame, bin.len());
        let len = 1 + cut.index(bin.len() - 1); // 1..bin.len(): a non-empty strict prefix
        let r = decode(&bin[..len], Encoding::Binary, &Limits::default());
        prop_assert!(malformed_kind(&r), "{:?}", r);
    }
}

#[test]
fn a_hidden_last_seen_carries_its_bucket_in_both_encodings() {
    let hidden = PresenceEntry {
        user: user("eve"),
        online: false,
        last_seen: None,
        last_seen_approx: Some(presence_core::frame::Approx::WithinWeek),
    };
    let frame = Frame::Presence { id: None, users: vec![hidden] };
    let json = encode_json(&frame);
    assert_eq!(
        json,
        r#"{"type":"presence","users":[{"user":"eve","online":false,"last_seen":null,"last_seen_approx":"within_week"}]}"#
    );
    let bin = encode_binary(&frame);
    assert_eq!(bin, [0x07, 0x00, 0x00, 0x01, 0x03, b'e', b'v', b'e', 0x04, 0x01]);
    let limits = Limits::default();
    assert_eq!(decode(json.as_bytes(), Encoding::Json, &limits).unwrap(), frame);
    assert_eq!(decode(&bin, Encoding::Binary, &limits).unwrap(), frame);
    // A bucket code out of range, or a bucket beside a last seen, is malformed.
    for bad in [
        vec![0x07, 0x00, 0x00, 0x01, 0x03, b'e', b'v', b'e', 0x04, 0x04],
        vec![0x07, 0x00, 0x00, 0x01, 0x03, b'e', b'v', b'e', 0x06, 0, 0, 0, 0, 0, 0, 0, 1, 0x00],
    ] {
        assert!(decode(&bad, Encoding::Binary, &limits).is_err(), "{bad:?}");
    }
}
