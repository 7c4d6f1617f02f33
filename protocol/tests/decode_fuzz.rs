//! The `decode` fuzz target's properties on the stable toolchain, so `cargo test` checks them on
//! every change (the coverage-guided runs need nightly; see docs/FUZZING.md): arbitrary bytes,
//! and well-framed packets built from MQTT fields and then mutated, go through the broker's read
//! path and the codec without a panic, allocate only what the input holds, decode alike in both,
//! and round-trip. The properties themselves are in `support/decode_check.rs`, shared with the
//! fuzz target.

#[path = "support/decode_check.rs"]
mod decode_check;
#[path = "support/remaining_length.rs"]
mod remaining_length;
use remaining_length::remaining_length;

use proptest::collection::vec;
use proptest::prelude::*;

#[global_allocator]
static ALLOC: decode_check::CountingAlloc = decode_check::CountingAlloc;

/// The maximum packet size, as the two leading bytes of an input: mostly large enough for what
/// follows, sometimes small enough to cut it.
fn max_packet_size() -> impl Strategy<Value = [u8; 2]> {
    prop_oneof![3 => Just(u16::MAX), 1 => 0..64u16, 1 => any::<u16>()].prop_map(u16::to_le_bytes)
}

/// A piece of a packet body: the fields packets are made of, with valid, edge and invalid values.
fn field() -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![
        Just(&b""[..]),
        Just(&b"a"[..]),
        Just(&b"a/b"[..]),
        Just(&b"#"[..]),
        Just(&b"a/+/#"[..]),
        Just(&b"$SYS/x"[..]),
        Just(&b"MQTT"[..]),
        Just(&b"MQIsdp"[..]),
        Just(&b"a\0b"[..]),
        Just(&b"\xff\xfe"[..]),
        Just("é/ü".as_bytes()),
    ];
    prop_oneof![
        // A length-prefixed string.
        text.prop_map(|text| {
            let mut out = (text.len() as u16).to_be_bytes().to_vec();
            out.extend_from_slice(text);
            out
        }),
        // A length prefix announcing more than follows.
        (any::<u16>(), vec(any::<u8>(), 0..4)).prop_map(|(declared, bytes)| {
            let mut out = declared.to_be_bytes().to_vec();
            out.extend(bytes);
            out
        }),
        // A packet id, flags, QoS or return code byte.
        prop_oneof![Just(0u16), Just(1), any::<u16>()].prop_map(|id| id.to_be_bytes().to_vec()),
        (0..8u8).prop_map(|byte| vec![byte]),
        any::<u8>().prop_map(|byte| vec![byte]),
    ]
}

/// A whole frame: any packet type and flags, a body of fields, and a remaining length that
/// matches it (sometimes non-minimal, sometimes off by a little).
fn frame() -> impl Strategy<Value = Vec<u8>> {
    let first = prop_oneof![
        (1..=14u8).prop_map(|ty| ty << 4 | if matches!(ty, 6 | 8 | 10) { 0b0010 } else { 0 }),
        (0..8u8).prop_map(|flags| 0x30 | flags),
        any::<u8>(),
    ];
    let length = prop_oneof![8 => Just(0i8), 1 => -2..=2i8, 1 => Just(i8::MAX)];
    (first, vec(field(), 0..6), length).prop_map(|(first, fields, delta)| {
        let body = fields.concat();
        let mut out = vec![first];
        if delta == i8::MAX {
            // The same length with a needless continuation byte.
            let mut len = remaining_length(body.len());
            if let Some(last) = len.last_mut() {
                *last |= 0x80;
            }
            len.push(0);
            out.extend(len);
        } else {
            out.extend(remaining_length(body.len().saturating_add_signed(delta.into())));
        }
        out.extend(body);
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn arbitrary_bytes_hold_the_decode_properties(max in max_packet_size(), bytes in vec(any::<u8>(), 0..300)) {
        decode_check::check(&[&max[..], &bytes].concat());
    }

    #[test]
    fn framed_and_mutated_packets_hold_the_decode_properties(
        max in max_packet_size(),
        frames in vec(frame(), 1..5),
        mutations in vec((any::<usize>(), any::<u8>()), 0..3),
        cut in any::<usize>(),
    ) {
        let mut input = frames.concat();
        for (at, byte) in mutations {
            let len = input.len();
            if let Some(b) = input.get_mut(at % len.max(1)) {
                *b = byte;
            }
        }
        // Sometimes the input ends within the last packet.
        if cut % 4 == 0 {
            input.truncate(cut % (input.len() + 1));
        }
        decode_check::check(&[&max[..], &input].concat());
    }
}

/// The allocation bound can fail: the counter sees an allocation sized from a declared length,
/// as a decoder trusting the remaining length of a 5-byte input announcing 256 MiB would make.
#[test]
fn the_allocation_counter_sees_an_allocation_from_a_declared_length() {
    let declared = 0x0fff_ffff_usize;
    let (buffer, peak) = decode_check::peak_allocation(|| Vec::<u8>::with_capacity(declared));
    assert!(peak >= declared, "counted {peak} bytes");
    drop(buffer);
    // The real decoder, given that input, stays within the bound.
    decode_check::check(&[0xff, 0xff, 0x30, 0xff, 0xff, 0xff, 0x7f]);
}

/// Found by the `decode` fuzz target in the harness itself: 40 PINGRESPs in one input made the
/// harness's own list of decoded packets count as the decoder's allocation. Each decoding step
/// is measured on its own now.
#[test]
fn many_packets_in_one_input_are_measured_one_by_one() {
    let mut input = vec![0x00, 0x04];
    for _ in 0..40 {
        input.extend_from_slice(&[0xd0, 0x00]);
    }
    decode_check::check(&input);
}
