//! Writes the fuzzers' seed corpus: every frame type, in both encodings, plus edge cases.
//! `cargo run -p presence-core --example fuzz_seeds -- fuzz/seeds` (scripts/fuzz runs it).

use std::path::PathBuf;

use presence_core::codec;
use presence_core::frame::{ErrorCode, Frame, PresenceEntry, Token};
use presence_core::time::UnixMillis;
use presence_core::user::UserId;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/seeds".into()));
    let u = |s: &str| UserId::new(s).expect("valid id");
    let long = "x".repeat(128);
    let frames = vec![
        Frame::Ping { seq: Some(42) },
        Frame::Ping { seq: None },
        Frame::Pong { seq: Some(u64::MAX) },
        Frame::Query { id: Some(7), users: vec![u("bob"), u("carol")] },
        Frame::Query { id: None, users: vec![] },
        Frame::Query { id: Some(0), users: vec![u(&long), u("a.b_c@d+e-f:g")] },
        Frame::Subscribe { id: Some(8), users: vec![u("bob")] },
        Frame::Unsubscribe { id: None, users: vec![u("bob")] },
        Frame::Bye,
        Frame::Auth { token: Token("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2ln".into()) },
        Frame::Auth { token: Token(String::new()) },
        Frame::Presence {
            id: Some(7),
            users: vec![
                PresenceEntry {
                    user: u("bob"),
                    online: false,
                    last_seen: Some(UnixMillis(1_705_311_720_000)),
                    last_seen_approx: None,
                },
                PresenceEntry { user: u("carol"), online: true, last_seen: None, last_seen_approx: None },
            ],
        },
        Frame::Presence { id: None, users: vec![] },
        Frame::Error { id: Some(7), code: ErrorCode::TooManyUsers, message: "too \"many\" users\n".into() },
        Frame::Error { id: None, code: ErrorCode::Unavailable, message: String::new() },
        Frame::Error { id: None, code: ErrorCode::TokenExpired, message: "expired".into() },
    ];
    for t in ["decode_json", "decode_binary", "round_trip", "core_sequence"] {
        std::fs::create_dir_all(dir.join(t))?;
    }
    for (i, f) in frames.iter().enumerate() {
        let json = codec::encode_json(f);
        let bin = codec::encode_binary(f);
        std::fs::write(dir.join("decode_json").join(format!("frame-{i:02}.json")), &json)?;
        std::fs::write(dir.join("decode_binary").join(format!("frame-{i:02}.bin")), &bin)?;
        let mut rt = vec![0u8];
        rt.extend_from_slice(json.as_bytes());
        std::fs::write(dir.join("round_trip").join(format!("json-{i:02}")), rt)?;
        let mut rt = vec![1u8];
        rt.extend_from_slice(&bin);
        std::fs::write(dir.join("round_trip").join(format!("bin-{i:02}")), rt)?;
    }
    // Edge cases the decoders must refuse cleanly.
    let edges: [(&str, &[u8]); 8] = [
        ("trailing.json", br#"{"type":"ping"} x"#),
        ("unknown-type.json", br#"{"type":"teleport","id":1}"#),
        ("bad-user.json", br#"{"type":"query","id":3,"users":["bad user"]}"#),
        ("deep.json", &[b'['; 200]),
        ("not-object.json", b"[1,2,3]"),
        ("big-id.json", br#"{"type":"query","id":18446744073709551616,"users":[]}"#),
        ("empty.json", b""),
        ("utf8.json", "{\"type\":\"query\",\"users\":[\"b\u{f8}b\"]}".as_bytes()),
    ];
    for (name, bytes) in edges {
        std::fs::write(dir.join("decode_json").join(name), bytes)?;
    }
    let bin_edges: [(&str, &[u8]); 4] = [
        ("truncated.bin", &[0x03, 0x01, 0, 0]),
        ("huge-count.bin", &[0x03, 0x00, 0xff, 0xff, 3, b'b', b'o', b'b']),
        ("bad-tag.bin", &[0xee]),
        ("trailing.bin", &[0x06, 0x00]),
    ];
    for (name, bytes) in bin_edges {
        std::fs::write(dir.join("decode_binary").join(name), bytes)?;
    }
    // The core target's input is `arbitrary` bytes: a few byte strings of varied length.
    for (i, len) in [16usize, 64, 256, 1024].into_iter().enumerate() {
        let bytes: Vec<u8> = (0..len).map(|j| (j * 37 % 251) as u8).collect();
        std::fs::write(dir.join("core_sequence").join(format!("seed-{i}")), bytes)?;
    }
    // Regression: a wall clock jump of -7 days, then opens whose tokens are thus already expired
    // (the core ends each at once). The harness once counted live sessions only after the core's
    // effects, so its pending-writes bound saw none of them and failed (docs/TESTING.md).
    #[rustfmt::skip]
    let expired_at_open: [u8; 72] = [
        0x05, 0x00, 0x00, 0x00, 0xff, 0x57, 0x0d, 0x0d, 0x0d, 0x0d, 0x4b, 0x0d,
        0x0d, 0x0d, 0x0d, 0x0d, 0xdb, 0xff, 0xff, 0xff, 0x0d, 0x0d, 0x0d, 0x0d,
        0x0d, 0x0d, 0x73, 0x33, 0x0d, 0x0d, 0x0d, 0x0d, 0x0d, 0x0d, 0x21, 0x0d,
        0x0d, 0x0d, 0x0d, 0x0d, 0x0d, 0x0d, 0x0d, 0x4b, 0x0d, 0x0d, 0x0d, 0x0d,
        0x0d, 0xdb, 0xdb, 0xdb, 0x0b, 0x0d, 0x0d, 0xdb, 0xdb, 0x0d, 0xdb, 0xdb,
        0xdb, 0x0b, 0x0d, 0x0d, 0x0d, 0x0d, 0x0d, 0xdb, 0xdb, 0x0d, 0xdb, 0xdb,
    ];
    std::fs::write(dir.join("core_sequence").join("expired-at-open"), expired_at_open)?;
    println!("seed corpus written to {}", dir.display());
    Ok(())
}
