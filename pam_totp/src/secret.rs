//! Types for secrets and typed codes: wiped on drop, never printed.

use std::fmt;
use zeroize::Zeroizing;

/// A TOTP key (the raw bytes behind the base32 text).
#[derive(Clone)]
pub struct SecretKey(Zeroizing<Vec<u8>>);

impl SecretKey {
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        SecretKey(Zeroizing::new(bytes))
    }

    /// A fresh random key of `len` bytes from the kernel's generator.
    pub fn generate(len: usize) -> std::io::Result<Self> {
        let mut bytes = Zeroizing::new(vec![0u8; len]);
        fill_random(&mut bytes)?;
        Ok(SecretKey(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What a user typed at a prompt (a code or a recovery code).
pub struct Answer(Zeroizing<Vec<u8>>);

impl Answer {
    pub fn new(bytes: Vec<u8>) -> Self {
        Answer(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The answer without spaces and tabs, which users type between digit groups.
    pub fn without_spaces(&self) -> Answer {
        let mut out = Zeroizing::new(Vec::with_capacity(self.0.len()));
        out.extend(self.0.iter().copied().filter(|b| *b != b' ' && *b != b'\t'));
        Answer(out)
    }
}

impl From<&str> for Answer {
    fn from(s: &str) -> Self {
        Answer::new(s.as_bytes().to_vec())
    }
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Fills `buf` from getrandom(2). No thread-local generator: inside a PAM module a
/// thread-local with a destructor would pin the module in the host process.
pub fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        filled += n as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let key = SecretKey::from_bytes(b"12345678901234567890".to_vec());
        assert_eq!(format!("{key:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Answer::from("123456")), "<redacted>");
    }

    #[test]
    fn spaces_are_removed() {
        let a = Answer::from(" 123 456\t");
        assert_eq!(a.without_spaces().as_bytes(), b"123456");
    }

    #[test]
    fn random_keys_differ() {
        let a = SecretKey::generate(20).unwrap();
        let b = SecretKey::generate(20).unwrap();
        assert_ne!(a.as_bytes(), b.as_bytes());
    }
}
