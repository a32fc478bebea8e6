//! Whatever decodes re-encodes and decodes to the same frame, in both encodings, and the JSON and
//! binary forms of a frame decode to the same value. The first byte picks the input encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_core::codec;
use presence_core::frame::{Encoding, Limits};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, input)) = data.split_first() else { return };
    let encoding = if pick & 1 == 0 { Encoding::Json } else { Encoding::Binary };
    // Generous limits: a re-encoded frame may be longer than its input (JSON escapes).
    let limits = Limits { max_frame_bytes: usize::MAX, ..Limits::default() };
    let Ok(frame) = codec::decode(input, encoding, &limits) else { return };
    let json = codec::encode_json(&frame);
    let binary = codec::encode_binary(&frame);
    let from_json = codec::decode(json.as_bytes(), Encoding::Json, &limits);
    let from_binary = codec::decode(&binary, Encoding::Binary, &limits);
    assert_eq!(from_json.as_ref(), Ok(&frame), "JSON round trip of {frame:?} via {json}");
    assert_eq!(from_binary.as_ref(), Ok(&frame), "binary round trip of {frame:?} via {binary:?}");
});
