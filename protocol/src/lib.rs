//! placeholder until the helper lands the codec
