//! Hex text of bytes, both ways: the one encoder and decoder of the crate.
//!
//! Hex is how bytes travel into and out of the Tcl hooks (values, masks, whole regions,
//! hex-encoded paths and messages) and how hashes are shown to people. Only hex we
//! encoded here goes into a Tcl command; hex from openMSX is decoded here and refused
//! when it is not hex.

use anyhow::{anyhow, bail, Result};
use std::fmt::Write as _;

/// Lowercase hex of bytes, two digits per byte.
pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Bytes of a hex string (either case); an error for an odd length or a character that
/// is not a hex digit.
pub fn decode(text: &str) -> Result<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        bail!("hex string of odd length {}", digits.len());
    }
    let nibble = |c: u8| -> Result<u8> {
        (c as char)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or_else(|| anyhow!("bad hex digit {:?}", c as char))
    };
    digits
        .chunks(2)
        .map(|p| Ok(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        assert_eq!(encode(&[0, 1, 0xab, 0xff]), "0001abff");
        assert_eq!(encode(&[]), "");
        assert_eq!(
            decode(&encode(&[0, 1, 0xab, 0xff])).unwrap(),
            [0, 1, 0xab, 0xff]
        );
        assert_eq!(decode("ABcd").unwrap(), [0xab, 0xcd]);
        assert_eq!(decode("").unwrap(), [] as [u8; 0]);
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)).unwrap(), all);
        assert!(decode("abc").is_err());
        assert!(decode("zz").is_err());
        assert!(decode("+1").is_err());
        assert!(decode("éé").is_err());
    }
}
