//! The remaining-length encoding (MQTT 3.1.1 section 2.2.3), written independently of the
//! crate's own so that tests building frames by hand do not trust the code they test.

/// The remaining-length bytes for `len`.
pub fn remaining_length(mut len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        if len == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}
