//! Quality of service levels.

use std::fmt;

/// The delivery guarantee of a message (MQTT 3.1.1 section 4.3).
///
/// The discriminants are the wire values, so `QoS as u8` and [`QoS::from_u8`] are the whole codec.
/// `Ord` follows the strength of the guarantee, which is what the broker needs to grant
/// `min(requested, published)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum QoS {
    /// Fire and forget.
    AtMostOnce = 0,
    /// Acknowledged delivery (PUBACK).
    AtLeastOnce = 1,
    /// Assured delivery (PUBREC / PUBREL / PUBCOMP).
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for a wire value, `None` for 3 and above (3 is reserved by the specification).
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

impl From<QoS> for u8 {
    fn from(qos: QoS) -> u8 {
        qos as u8
    }
}

impl fmt::Display for QoS {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", *self as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_round_trip() {
        for v in 0..=2u8 {
            let qos = QoS::from_u8(v);
            assert_eq!(qos.map(u8::from), Some(v));
        }
        assert_eq!(QoS::from_u8(3), None);
        assert_eq!(QoS::from_u8(0xff), None);
    }

    #[test]
    fn order_follows_the_guarantee() {
        assert!(QoS::AtMostOnce < QoS::AtLeastOnce);
        assert!(QoS::AtLeastOnce < QoS::ExactlyOnce);
        assert_eq!(QoS::ExactlyOnce.min(QoS::AtLeastOnce), QoS::AtLeastOnce);
    }
}
