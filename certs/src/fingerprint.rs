//! SHA-256 fingerprints and the text forms that browsers and Rust clients expect.
//!
//! One type serves two hashes: the SHA-256 of a certificate's DER (what the WebTransport
//! `serverCertificateHashes` option and most pinning clients compare) and the SHA-256 of a
//! certificate's SubjectPublicKeyInfo DER (what Chromium's `--ignore-certificate-errors-spki-list`
//! flag takes). Which one a value holds is said by where it came from
//! ([`Identity::fingerprint`](crate::Identity::fingerprint) or
//! [`Identity::spki_fingerprint`](crate::Identity::spki_fingerprint)).

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A SHA-256 digest, usually of a certificate's DER or of its SubjectPublicKeyInfo DER.
///
/// Text forms:
/// - [`to_base64`](Self::to_base64): standard alphabet with padding, 44 characters. This is what
///   `/v1/cert-hashes` serves (the page decodes it into the `value` of a `serverCertificateHashes`
///   entry) and what `--ignore-certificate-errors-spki-list` takes for an SPKI hash.
/// - [`to_hex_colon`](Self::to_hex_colon) (also [`Display`](fmt::Display)): upper-case hex bytes
///   joined by `:`, as `openssl x509 -fingerprint -sha256` prints them.
/// - [`to_hex`](Self::to_hex): 64 lower-case hex digits.
///
/// [`FromStr`] accepts any of the three.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; Fingerprint::LEN]);

impl Fingerprint {
    /// Length of a SHA-256 digest in bytes.
    pub const LEN: usize = 32;

    /// Hashes `data` with SHA-256.
    pub fn of(data: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, data);
        let mut bytes = [0u8; Self::LEN];
        bytes.copy_from_slice(digest.as_ref());
        Self(bytes)
    }

    /// Wraps a digest computed elsewhere.
    pub const fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        Self(bytes)
    }

    /// The raw digest, e.g. for a Rust client that pins the server certificate.
    pub const fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// Standard base64 with padding (44 characters).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Upper-case hex bytes separated by colons: `AB:CD:…` (95 characters).
    pub fn to_hex_colon(&self) -> String {
        let mut out = String::with_capacity(Self::LEN * 3 - 1);
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(':');
            }
            push_hex(&mut out, *byte, HEX_UPPER);
        }
        out
    }

    /// Lower-case hex without separators (64 characters).
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(Self::LEN * 2);
        for byte in self.0 {
            push_hex(&mut out, byte, HEX_LOWER);
        }
        out
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

fn push_hex(out: &mut String, byte: u8, digits: &[u8; 16]) {
    out.push(char::from(digits[usize::from(byte >> 4)]));
    out.push(char::from(digits[usize::from(byte & 0x0f)]));
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex_colon())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_hex_colon())
    }
}

impl From<[u8; Fingerprint::LEN]> for Fingerprint {
    fn from(bytes: [u8; Fingerprint::LEN]) -> Self {
        Self(bytes)
    }
}

impl From<Fingerprint> for [u8; Fingerprint::LEN] {
    fn from(fingerprint: Fingerprint) -> Self {
        fingerprint.0
    }
}

impl AsRef<[u8]> for Fingerprint {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A string given to [`Fingerprint::from_str`] is not a SHA-256 digest in a known form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a SHA-256 fingerprint: expected 44 base64 characters, 64 hex digits or 32 colon-separated \
     hex bytes, got {len} characters"
)]
pub struct ParseFingerprintError {
    /// Length of the rejected input, in characters.
    pub len: usize,
}

impl FromStr for Fingerprint {
    type Err = ParseFingerprintError;

    /// Parses standard base64 (padded, 44 characters), plain hex (64 digits) or colon-separated
    /// hex (`AB:CD:…`); hex is case-insensitive. Surrounding whitespace is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let err = || ParseFingerprintError {
            len: s.chars().count(),
        };
        let mut bytes = [0u8; Self::LEN];
        match s.len() {
            // 32 bytes as "XX:" * 31 + "XX".
            95 => {
                for (i, chunk) in s.as_bytes().split(|&c| c == b':').enumerate() {
                    let [hi, lo] = chunk else { return Err(err()) };
                    let slot = bytes.get_mut(i).ok_or_else(err)?;
                    *slot =
                        (hex_value(*hi).ok_or_else(err)? << 4) | hex_value(*lo).ok_or_else(err)?;
                }
            }
            64 => {
                for (slot, pair) in bytes.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
                    let hi = hex_value(pair[0]).ok_or_else(err)?;
                    let lo = hex_value(pair[1]).ok_or_else(err)?;
                    *slot = (hi << 4) | lo;
                }
            }
            44 => {
                let decoded = STANDARD.decode(s).map_err(|_| err())?;
                bytes = decoded.try_into().map_err(|_| err())?;
            }
            _ => return Err(err()),
        }
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-256("abc") from FIPS 180-2, appendix B.1.
    const ABC: [u8; 32] = [
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22,
        0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00,
        0x15, 0xad,
    ];

    #[test]
    fn hashes_the_fips_vector() {
        assert_eq!(Fingerprint::of(b"abc").as_bytes(), &ABC);
    }

    #[test]
    fn encodes_a_known_digest_in_every_form() {
        let fp = Fingerprint::from_bytes(ABC);
        assert_eq!(
            fp.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            fp.to_hex_colon(),
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:\
             B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
        assert_eq!(
            fp.to_base64(),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
        assert_eq!(fp.to_string(), fp.to_hex_colon());
        assert_eq!(
            format!("{fp:?}"),
            format!("Fingerprint({})", fp.to_hex_colon())
        );
    }

    #[test]
    fn parses_every_form_back() {
        let fp = Fingerprint::from_bytes(ABC);
        for text in [
            fp.to_hex(),
            fp.to_hex_colon(),
            fp.to_base64(),
            fp.to_hex().to_uppercase(),
        ] {
            assert_eq!(text.parse::<Fingerprint>(), Ok(fp), "{text}");
        }
        assert_eq!(
            format!("  {}\n", fp.to_base64()).parse::<Fingerprint>(),
            Ok(fp)
        );
    }

    #[test]
    fn rejects_malformed_text() {
        let fp = Fingerprint::from_bytes(ABC);
        let mut wrong_separator = fp.to_hex_colon();
        wrong_separator.replace_range(2..3, "-");
        let bad = [
            String::new(),
            "zz".repeat(32),
            fp.to_hex()[..62].to_owned(),
            wrong_separator,
            format!("{}A", &fp.to_base64()[..43]),
            "!".repeat(44),
        ];
        for text in bad {
            assert!(text.parse::<Fingerprint>().is_err(), "{text:?} parsed");
        }
    }
}
