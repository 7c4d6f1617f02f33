//! Arbitrary bytes through the broker's read path and the codec: no panic, allocation within
//! what the input holds, both paths alike, every decoded packet round-trips. The properties are
//! in protocol/tests/support/decode_check.rs, shared with the stable test
//! protocol/tests/decode_fuzz.rs.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../protocol/tests/support/decode_check.rs"]
mod decode_check;

#[global_allocator]
static ALLOC: decode_check::CountingAlloc = decode_check::CountingAlloc;

fuzz_target!(|data: &[u8]| decode_check::check(data));
