//! Recovery codes: single-use codes for a lost phone, stored only as salted hashes.

use crate::secret::{fill_random, Answer};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Letters and digits without look-alikes (no 0/o, 1/l/i).
const ALPHABET: &[u8; 32] = b"23456789abcdefghjkmnpqrstuvwxyz-";
/// Characters of a generated code (16 × 5 bits = 80 bits), shown as four groups of four.
const CODE_CHARS: usize = 16;
pub const SALT_LEN: usize = 16;

/// One stored recovery code: a random salt and SHA-256(domain, salt, code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashedCode {
    pub salt: [u8; SALT_LEN],
    pub hash: [u8; 32],
}

/// `count` new codes, formatted `abcd-efgh-jkmn-pqrs`.
pub fn generate(count: u32) -> std::io::Result<Vec<Zeroizing<String>>> {
    let mut codes = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let mut raw = Zeroizing::new([0u8; CODE_CHARS]);
        fill_random(&mut raw[..])?;
        let mut code = Zeroizing::new(String::with_capacity(CODE_CHARS + 3));
        for (i, b) in raw.iter().enumerate() {
            if i > 0 && i % 4 == 0 {
                code.push('-');
            }
            // 31 usable characters: reduce modulo 31 with rejection-free bias < 1%;
            // each character still carries more than 4.9 bits.
            code.push(ALPHABET[(*b as usize) % 31] as char);
        }
        codes.push(code);
    }
    Ok(codes)
}

/// The canonical form that is hashed: lower case, without dashes and spaces.
/// `None` when the answer cannot be a recovery code (or an imported scratch code).
pub fn normalize(answer: &Answer) -> Option<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::with_capacity(answer.as_bytes().len()));
    for &b in answer.as_bytes() {
        match b {
            b'-' | b' ' | b'\t' => {}
            b'0'..=b'9' | b'a'..=b'z' => out.push(b),
            b'A'..=b'Z' => out.push(b.to_ascii_lowercase()),
            _ => return None,
        }
    }
    // Generated codes have 16 characters, imported google-authenticator scratch codes 8.
    (8..=32).contains(&out.len()).then_some(out)
}

/// Hashes a normalized code with `salt`.
pub fn hash_with_salt(salt: &[u8; SALT_LEN], normalized: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"pam_totp recovery v1\0");
    h.update(salt);
    h.update(normalized);
    h.finalize().into()
}

/// A stored form for a code as it is shown to the user.
pub fn hash_new(code: &str) -> std::io::Result<HashedCode> {
    let normalized = normalize(&Answer::from(code)).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a recovery code")
    })?;
    let mut salt = [0u8; SALT_LEN];
    fill_random(&mut salt)?;
    Ok(HashedCode {
        salt,
        hash: hash_with_salt(&salt, &normalized),
    })
}

/// Whether `normalized` is the code behind `stored`, compared in constant time.
pub fn matches(stored: &HashedCode, normalized: &[u8]) -> bool {
    let candidate = hash_with_salt(&stored.salt, normalized);
    candidate
        .iter()
        .zip(stored.hash.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_are_distinct_and_well_formed() {
        let codes = generate(10).unwrap();
        assert_eq!(codes.len(), 10);
        for c in &codes {
            assert_eq!(c.len(), 19, "{}", c.as_str());
            assert_eq!(c.matches('-').count(), 3);
            assert!(normalize(&Answer::from(c.as_str())).is_some());
        }
        let mut sorted: Vec<_> = codes.iter().map(|c| c.to_string()).collect();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 10);
    }

    #[test]
    fn hash_matches_any_typed_form() {
        let stored = hash_new("abcd-efgh-jkmn-pqrs").unwrap();
        for typed in [
            "abcd-efgh-jkmn-pqrs",
            "ABCD EFGH JKMN PQRS",
            "abcdefghjkmnpqrs",
        ] {
            let n = normalize(&Answer::from(typed)).unwrap();
            assert!(matches(&stored, &n), "{typed}");
        }
        let other = normalize(&Answer::from("abcd-efgh-jkmn-pqrt")).unwrap();
        assert!(!matches(&stored, &other));
    }

    #[test]
    fn salts_differ() {
        let a = hash_new("abcd-efgh-jkmn-pqrs").unwrap();
        let b = hash_new("abcd-efgh-jkmn-pqrs").unwrap();
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn refuses_what_cannot_be_a_code() {
        for bad in ["", "1234567", "abc!defgh", "ünïcödé-code", &"a".repeat(40)] {
            assert!(normalize(&Answer::from(bad)).is_none(), "{bad}");
        }
        assert!(normalize(&Answer::from("12345678")).is_some());
    }
}
