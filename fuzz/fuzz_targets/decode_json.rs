//! JSON frame decoding: never panics, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_core::codec;
use presence_core::frame::{Encoding, Limits};

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode(data, Encoding::Json, &Limits::default());
});
