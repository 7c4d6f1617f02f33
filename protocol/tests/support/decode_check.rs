//! The properties the decoder must hold on any input, in one place for both harnesses that check
//! them: the `decode` cargo-fuzz target (fuzz/fuzz_targets/decode.rs, nightly, coverage-guided)
//! and protocol/tests/decode_fuzz.rs (stable, in `cargo test`). Both include this file by path, so
//! a property added here is fuzzed and tested alike.
//!
//! The input's first two bytes are the maximum packet size (little-endian), the rest is what a
//! client sent. The rest is decoded twice, as the broker's read path does (`frame_len` with the
//! maximum, then `Packet::read` per frame) and through `MqttCodec` (clients, tests), packet after
//! packet until more input is needed or a packet is refused. Checked:
//! - no panic, in either path;
//! - the two paths decode the same packets and stop the same way;
//! - allocation stays within what the input holds: a length field read from the input must never
//!   size an allocation beyond the bytes actually there (the codec may also reserve the rest of a
//!   packet the header announces, but never beyond the maximum packet size);
//! - every decoded packet re-encodes, and the encoding decodes to the same packet.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use amqtt_protocol::{frame_len, DecodeError, MqttCodec, Packet};
use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// Counts the bytes this thread allocates while armed, to bound what decoding allocates. Declared
/// as the `#[global_allocator]` by each harness that includes this file.
pub struct CountingAlloc;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    /// Bytes allocated minus bytes freed since arming, and its highest value.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn record(delta: isize) {
    // try_with: the allocator also runs while thread-locals are torn down.
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            let live = LIVE.with(|live| {
                live.set(live.get() + delta);
                live.get()
            });
            PEAK.with(|peak| peak.set(peak.get().max(live)));
        }
    });
}

// SAFETY: every call is passed on to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size() as isize);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        record(-(layout.size() as isize));
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size as isize - layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns its result with the most bytes it had allocated at once.
pub fn peak_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LIVE.with(|live| live.set(0));
    PEAK.with(|peak| peak.set(0));
    ARMED.with(|armed| armed.set(true));
    let out = f();
    ARMED.with(|armed| armed.set(false));
    (out, PEAK.with(Cell::get).max(0) as usize)
}

/// What decoding may allocate for `len` input bytes besides the buffer: packets are slices of the
/// input, but SUBSCRIBE / UNSUBSCRIBE / SUBACK bodies become vectors of up to 40 bytes per 2 or 3
/// input bytes (doubled while a vector grows).
fn allocation_bound(len: usize) -> usize {
    64 * len + 4096
}

/// How decoding a whole input ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The input ends in the middle of a packet (or exactly after one).
    NeedsMore,
    /// A packet was refused; the message of its error.
    Refused(String),
}

/// Checks every property on `data` (see the module documentation); panics when one fails.
pub fn check(data: &[u8]) {
    let (max, input) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => return,
    };

    let (read_path, read_end, peak) = decode_like_the_broker(input, max);
    let bound = allocation_bound(input.len());
    assert!(peak <= bound, "broker read path allocated {peak} bytes for {} input bytes", input.len());

    let mut buf = BytesMut::from(input);
    let (codec_path, codec_end, peak) = decode_with_codec(&mut buf, max);
    let bound = allocation_bound(input.len()) + 2 * max;
    assert!(peak <= bound, "codec allocated {peak} bytes for {} input bytes (max packet {max})", input.len());
    if codec_end == End::NeedsMore {
        // Room for the rest of the packet being read at most (which is within the maximum), or
        // the input's own buffer grown once (a vector's smallest growth is to 8 bytes).
        let limit = (2 * input.len()).max(max).max(8);
        assert!(buf.capacity() <= limit, "codec reserved {} bytes, limit {limit}", buf.capacity());
    }

    assert_eq!(read_path, codec_path, "the broker's read path and the codec decode differently");
    assert_eq!(read_end, codec_end, "the broker's read path and the codec stop differently");

    for packet in &read_path {
        assert_round_trip(packet);
    }
}

/// `FrameReader` + `Session`: `frame_len` against the maximum, then `Packet::read` per frame.
/// Also returns the most one step (finding a frame and decoding it) allocated: the packets
/// collected here are the harness's, not the decoder's.
fn decode_like_the_broker(input: &[u8], max: usize) -> (Vec<Packet>, End, usize) {
    let mut rest = Bytes::copy_from_slice(input);
    let mut packets = Vec::new();
    let mut most = 0;
    loop {
        let (step, peak) = peak_allocation(|| {
            let len = frame_len(&rest, max)?;
            if let Some(len) = len {
                assert!(len <= max && len <= rest.len(), "frame of {len} bytes, max {max}, {} buffered", rest.len());
            }
            len.map(|len| Packet::read(rest.split_to(len))).transpose()
        });
        most = most.max(peak);
        match step {
            Ok(Some(packet)) => packets.push(packet),
            Ok(None) => return (packets, End::NeedsMore, most),
            Err(error) => return (packets, refused(&error), most),
        }
    }
}

/// `MqttCodec::decode` until it needs more or refuses; the most one call allocated.
fn decode_with_codec(buf: &mut BytesMut, max: usize) -> (Vec<Packet>, End, usize) {
    let mut codec = MqttCodec::new(max);
    let mut packets = Vec::new();
    let mut most = 0;
    loop {
        let (step, peak) = peak_allocation(|| codec.decode(buf));
        most = most.max(peak);
        match step {
            Ok(Some(packet)) => packets.push(packet),
            Ok(None) => return (packets, End::NeedsMore, most),
            Err(error) => return (packets, refused(&error), most),
        }
    }
}

fn refused(error: &DecodeError) -> End {
    End::Refused(error.to_string())
}

/// What decoded re-encodes, and the encoding decodes to the same packet.
fn assert_round_trip(packet: &Packet) {
    let mut encoded = BytesMut::new();
    packet.write(&mut encoded).unwrap_or_else(|error| panic!("decoded {packet:?} does not encode: {error}"));
    let len = encoded.len();
    assert_eq!(frame_len(&encoded, usize::MAX).ok().flatten(), Some(len), "encoding of {packet:?} is not one frame");
    match Packet::read(encoded.freeze()) {
        Ok(again) => assert_eq!(&again, packet, "round trip changed the packet"),
        Err(error) => panic!("encoding of {packet:?} does not decode: {error}"),
    }
}
