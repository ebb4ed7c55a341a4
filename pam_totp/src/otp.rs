//! RFC 4226 / RFC 6238 one-time passwords and RFC 4648 base32 keys.

use crate::secret::SecretKey;
use hmac::{Hmac, Mac};
use std::fmt;
use std::str::FromStr;
use zeroize::{Zeroize, Zeroizing};

/// The HMAC hash of a factor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum Algorithm {
    #[serde(rename = "SHA1")]
    Sha1,
    #[serde(rename = "SHA256")]
    Sha256,
    #[serde(rename = "SHA512")]
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "SHA1" => Ok(Algorithm::Sha1),
            "SHA256" => Ok(Algorithm::Sha256),
            "SHA512" => Ok(Algorithm::Sha512),
            _ => Err(format!(
                "unknown algorithm {s:?} (use SHA1, SHA256 or SHA512)"
            )),
        }
    }
}

/// How codes are computed for one factor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OtpParams {
    pub algorithm: Algorithm,
    pub digits: u32,
    pub period: u64,
}

pub const MIN_DIGITS: u32 = 6;
pub const MAX_DIGITS: u32 = 8;

/// Dynamic truncation (RFC 4226 section 5.3) of an HMAC value to `digits` digits.
fn truncate(digest: &[u8], digits: u32) -> u32 {
    let offset = (digest[digest.len() - 1] & 0x0f) as usize;
    let binary = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    binary % 10u32.pow(digits)
}

/// The HOTP values for the counters in `counters`, keyed once (the key's inner and
/// outer blocks are hashed one time and each counter costs two compressions), until
/// `each` returns false.
fn hotp_each(
    key: &SecretKey,
    algorithm: Algorithm,
    digits: u32,
    counters: impl Iterator<Item = u64>,
    mut each: impl FnMut(u64, u32) -> bool,
) {
    fn run<M: Mac + hmac::digest::KeyInit + Clone>(
        key: &[u8],
        digits: u32,
        counters: impl Iterator<Item = u64>,
        each: &mut impl FnMut(u64, u32) -> bool,
    ) {
        let keyed = <M as hmac::digest::KeyInit>::new_from_slice(key)
            .expect("HMAC accepts keys of any length");
        for counter in counters {
            let mut mac = keyed.clone();
            mac.update(&counter.to_be_bytes());
            let mut digest = mac.finalize().into_bytes();
            let value = truncate(&digest, digits);
            digest.as_mut_slice().zeroize();
            if !each(counter, value) {
                break;
            }
        }
    }
    let key = key.as_bytes();
    match algorithm {
        Algorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, digits, counters, &mut each),
        Algorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, digits, counters, &mut each),
        Algorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, digits, counters, &mut each),
    }
}

/// The HOTP value (RFC 4226 section 5.3) for `counter`, reduced to `digits` digits.
pub fn hotp(key: &SecretKey, algorithm: Algorithm, counter: u64, digits: u32) -> u32 {
    let mut value = 0;
    hotp_each(key, algorithm, digits, std::iter::once(counter), |_, v| {
        value = v;
        false
    });
    value
}

/// The time step that `unix_time` falls in.
pub fn step_at(unix_time: u64, period: u64) -> u64 {
    unix_time / period.max(1)
}

/// The code for time step `step`, zero-padded to the configured digits.
pub fn code_for_step(key: &SecretKey, params: &OtpParams, step: u64) -> Zeroizing<String> {
    let value = hotp(key, params.algorithm, step, params.digits);
    Zeroizing::new(format!("{:0width$}", value, width = params.digits as usize))
}

/// The code at `unix_time`.
pub fn code_at(key: &SecretKey, params: &OtpParams, unix_time: u64) -> Zeroizing<String> {
    code_for_step(key, params, step_at(unix_time, params.period))
}

/// Parses a typed code: exactly `digits` ASCII digits (spaces already removed).
pub fn parse_code(typed: &[u8], digits: u32) -> Option<u32> {
    if typed.len() != digits as usize || !typed.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        typed
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')),
    )
}

/// Checks a typed code against the steps within `window` steps of `unix_time`: the
/// current step first, then the later ones, then the earlier ones, stopping at the
/// first match. A right code usually costs one HMAC; a wrong one costs every step of the
/// window, which tells it nothing it does not learn from the answer.
pub fn verify_code(
    key: &SecretKey,
    params: &OtpParams,
    code: u32,
    unix_time: u64,
    window: u64,
) -> Option<u64> {
    let now = step_at(unix_time, params.period);
    let later = (1..=window).filter_map(|k| now.checked_add(k));
    let earlier = (1..=window).filter_map(|k| now.checked_sub(k));
    let steps = std::iter::once(now).chain(later).chain(earlier);
    let mut matched = None;
    hotp_each(
        key,
        params.algorithm,
        params.digits,
        steps,
        |step, value| {
            if value == code {
                matched = Some(step);
            }
            matched.is_none()
        },
    );
    matched
}

const BASE32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Why a base32 key was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Base32Error {
    /// A character outside A-Z and 2-7 (spaces, dashes and `=` padding are allowed).
    BadCharacter,
    /// The text does not end on a whole byte (a truncated key).
    BadLength,
    /// Fewer than 80 bits: too weak to be a TOTP key.
    TooShort,
    /// More than 1024 bits.
    TooLong,
}

impl fmt::Display for Base32Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Base32Error::BadCharacter => "the key may contain only the letters A-Z and digits 2-7",
            Base32Error::BadLength => {
                "the key's length is not a whole number of bytes (truncated?)"
            }
            Base32Error::TooShort => "the key is shorter than 80 bits (16 base32 characters)",
            Base32Error::TooLong => "the key is longer than 1024 bits",
        })
    }
}

/// Decodes a base32 key as users and authenticator apps write it: any case, with
/// spaces, dashes or `=` padding.
pub fn decode_base32(text: &str) -> Result<SecretKey, Base32Error> {
    let mut bits: u64 = 0;
    let mut nbits = 0u32;
    let mut chars = 0usize;
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() * 5 / 8));
    let mut padding = false;
    for c in text.bytes() {
        match c {
            b' ' | b'\t' | b'-' => continue,
            b'=' => {
                padding = true;
                continue;
            }
            _ => {}
        }
        if padding {
            return Err(Base32Error::BadCharacter);
        }
        let upper = c.to_ascii_uppercase();
        let value = BASE32_ALPHABET
            .iter()
            .position(|&a| a == upper)
            .ok_or(Base32Error::BadCharacter)? as u64;
        chars += 1;
        if chars > 205 {
            return Err(Base32Error::TooLong);
        }
        bits = (bits << 5) | value;
        nbits += 5;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    // A valid encoding leaves fewer than 5 unused bits, all zero.
    if nbits >= 5 || bits != 0 {
        return Err(Base32Error::BadLength);
    }
    if out.len() < 10 {
        return Err(Base32Error::TooShort);
    }
    Ok(SecretKey::from_bytes(std::mem::take(&mut *out)))
}

/// Encodes a key as unpadded upper-case base32, as otpauth URIs carry it.
pub fn encode_base32(key: &SecretKey) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(key.as_bytes().len() * 8 / 5 + 1));
    let mut bits: u64 = 0;
    let mut nbits = 0u32;
    for &b in key.as_bytes() {
        bits = (bits << 8) | u64::from(b);
        nbits += 8;
        while nbits >= 5 {
            nbits -= 5;
            out.push(BASE32_ALPHABET[((bits >> nbits) & 31) as usize] as char);
        }
        bits &= (1 << nbits) - 1;
    }
    if nbits > 0 {
        out.push(BASE32_ALPHABET[((bits << (5 - nbits)) & 31) as usize] as char);
    }
    out
}

/// The key in groups of four characters, for typing into an app by hand.
pub fn grouped_base32(key: &SecretKey) -> Zeroizing<String> {
    let plain = encode_base32(key);
    let mut out = Zeroizing::new(String::with_capacity(plain.len() * 5 / 4 + 1));
    for (i, c) in plain.chars().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(algorithm: Algorithm, digits: u32) -> OtpParams {
        OtpParams {
            algorithm,
            digits,
            period: 30,
        }
    }

    const SEED20: &[u8] = b"12345678901234567890";
    const SEED32: &[u8] = b"12345678901234567890123456789012";
    const SEED64: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    /// RFC 6238 appendix B: all 18 test vectors.
    #[test]
    fn rfc6238_appendix_b() {
        let vectors: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for (t, sha1, sha256, sha512) in vectors {
            for (alg, seed, want) in [
                (Algorithm::Sha1, SEED20, sha1),
                (Algorithm::Sha256, SEED32, sha256),
                (Algorithm::Sha512, SEED64, sha512),
            ] {
                let key = SecretKey::from_bytes(seed.to_vec());
                assert_eq!(*code_at(&key, &params(alg, 8), t), want, "{alg} at {t}");
            }
        }
    }

    /// RFC 4226 appendix D, the first HOTP values.
    #[test]
    fn rfc4226_hotp() {
        let key = SecretKey::from_bytes(SEED20.to_vec());
        let want = [755224, 287082, 359152, 969429, 338314];
        for (counter, w) in want.iter().enumerate() {
            assert_eq!(hotp(&key, Algorithm::Sha1, counter as u64, 6), *w);
        }
    }

    #[test]
    fn window_edges() {
        let key = SecretKey::from_bytes(SEED20.to_vec());
        let p = params(Algorithm::Sha1, 6);
        let now = 1_700_000_000u64;
        let step = step_at(now, 30);
        for (offset, window, accepted) in [
            (0i64, 0u64, true),
            (1, 0, false),
            (-1, 1, true),
            (1, 1, true),
            (2, 1, false),
            (-2, 1, false),
            (-2, 2, true),
            (3, 2, false),
        ] {
            let target = (step as i64 + offset) as u64;
            let code = parse_code(code_for_step(&key, &p, target).as_bytes(), 6).unwrap();
            let got = verify_code(&key, &p, code, now, window);
            if accepted {
                assert_eq!(got, Some(target), "offset {offset} window {window}");
            } else {
                assert_ne!(got, Some(target), "offset {offset} window {window}");
            }
        }
    }

    #[test]
    fn first_and_last_second_of_a_step() {
        let key = SecretKey::from_bytes(SEED20.to_vec());
        let p = params(Algorithm::Sha1, 6);
        let code = code_at(&key, &p, 1_700_000_010);
        let c = parse_code(code.as_bytes(), 6).unwrap();
        // 1_700_000_010 is in step 56_666_667, which runs from ..._010 to ..._039.
        assert_eq!(verify_code(&key, &p, c, 1_700_000_039, 0), Some(56_666_667));
        assert_eq!(verify_code(&key, &p, c, 1_700_000_040, 0), None);
        assert_eq!(verify_code(&key, &p, c, 1_700_000_009, 0), None);
    }

    #[test]
    fn parse_code_requires_exact_digits() {
        assert_eq!(parse_code(b"012345", 6), Some(12345));
        assert_eq!(parse_code(b"12345", 6), None);
        assert_eq!(parse_code(b"1234567", 6), None);
        assert_eq!(parse_code(b"12a456", 6), None);
        assert_eq!(parse_code(b"", 6), None);
        assert_eq!(parse_code("１２３４５６".as_bytes(), 6), None);
        assert_eq!(parse_code(b"99999999", 8), Some(99_999_999));
    }

    #[test]
    fn base32_round_trip_and_forms() {
        let key = decode_base32("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP").unwrap();
        assert_eq!(*encode_base32(&key), "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP");
        let spaced = decode_base32("jbsw y3dp-ehpk 3pxp").unwrap();
        assert_eq!(
            spaced.as_bytes(),
            decode_base32("JBSWY3DPEHPK3PXP").unwrap().as_bytes()
        );
        let padded = decode_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
        assert_eq!(padded.as_bytes(), SEED20);
        assert_eq!(
            *grouped_base32(&padded),
            "GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ"
        );
    }

    #[test]
    fn base32_refusals() {
        assert_eq!(
            decode_base32("JBSWY3DPEHPK3PX1").unwrap_err(),
            Base32Error::BadCharacter
        );
        // 17 characters do not end on a byte boundary with zero bits.
        assert_eq!(
            decode_base32("JBSWY3DPEHPK3PXPJ").unwrap_err(),
            Base32Error::BadLength
        );
        assert_eq!(
            decode_base32("JBSWY3DP").unwrap_err(),
            Base32Error::TooShort
        );
        assert_eq!(decode_base32("").unwrap_err(), Base32Error::TooShort);
        assert_eq!(
            decode_base32("JBSW=Y3DP").unwrap_err(),
            Base32Error::BadCharacter
        );
        assert_eq!(
            decode_base32(&"A".repeat(400)).unwrap_err(),
            Base32Error::TooLong
        );
    }

    #[test]
    fn base32_encode_partial_bytes() {
        for len in 10..=40 {
            let key = SecretKey::from_bytes((0..len as u8).map(|b| b.wrapping_mul(37)).collect());
            let text = encode_base32(&key);
            assert_eq!(
                decode_base32(&text).unwrap().as_bytes(),
                key.as_bytes(),
                "len {len}"
            );
        }
    }
}
