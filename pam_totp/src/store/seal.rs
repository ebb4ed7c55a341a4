//! TOTP keys sealed at rest: every factor's key is stored encrypted with
//! XChaCha20-Poly1305 under the host key (`[store] key`, default
//! `/etc/pam_totp/store.key`: 32 random bytes, root's, mode 0400), with a random 24-byte
//! nonce per seal. The associated data binds a fixed context, the version of the data
//! model, the user and the factor's name: a sealed key copied onto another user's or
//! factor's row does not open. A copy of the store alone (a backup, a stolen disk image
//! of /var/lib) holds no usable key.
//!
//! Stored form: `1` (format), the nonce, the ciphertext with its 16-byte tag.

use super::{Result, StoreError, SCHEMA_VERSION};
use crate::secret::{fill_random, SecretKey};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use std::cell::OnceCell;
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Bytes of a host key.
pub const HOST_KEY_BYTES: usize = 32;

/// The first byte of every sealed key.
const FORMAT: u8 = 1;
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;

/// Bound into every seal: what the sealed bytes are, and the version of the data model
/// they belong to (SQLite schema 3; PostgreSQL's schema 2 is the same model).
const CONTEXT: &str = "pam_totp factor key";

/// The host key, wiped when dropped.
pub struct HostKey(Zeroizing<[u8; HOST_KEY_BYTES]>);

impl fmt::Debug for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl HostKey {
    /// A fresh random key from the kernel's generator.
    pub fn generate() -> std::io::Result<HostKey> {
        let mut key = Zeroizing::new([0u8; HOST_KEY_BYTES]);
        fill_random(&mut key[..])?;
        Ok(HostKey(key))
    }

    /// A key from known bytes (tests).
    pub fn from_bytes(bytes: [u8; HOST_KEY_BYTES]) -> HostKey {
        HostKey(Zeroizing::new(bytes))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&*self.0).into())
    }

    /// Reads the host key at `path`: a regular file (not a symlink) of exactly
    /// [`HOST_KEY_BYTES`] bytes, root's, readable by root alone (mode 0400 or
    /// stricter), in a directory only root can write.
    pub fn load(path: &Path) -> Result<HostKey> {
        let refuse = |why: String| StoreError::KeyFile(path.to_path_buf(), why);
        let dir = path.parent().unwrap_or(Path::new("/"));
        let dir_meta = std::fs::metadata(dir)
            .map_err(|e| refuse(format!("directory {}: {e}", dir.display())))?;
        crate::config::check_owner_and_mode(&dir_meta, "its directory").map_err(refuse)?;
        let mut file = std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| {
                refuse(match e.raw_os_error() {
                    Some(libc::ENOENT) => {
                        "missing: every enrolled user's login fails until it is restored \
                         (from a backup of this host, or another host of the fleet)"
                            .to_string()
                    }
                    Some(libc::ELOOP) => "is a symbolic link: refused".to_string(),
                    _ => format!("cannot open: {e}"),
                })
            })?;
        let meta = file.metadata().map_err(|e| refuse(e.to_string()))?;
        if !meta.is_file() {
            return Err(refuse("not a regular file".into()));
        }
        if meta.uid() != 0 {
            return Err(refuse(format!("owned by uid {}, not root", meta.uid())));
        }
        if meta.mode() & 0o7377 != 0 {
            return Err(refuse(format!(
                "mode {:04o}: must be 0400 (readable by root alone); run chmod 400",
                meta.mode() & 0o7777
            )));
        }
        let mut bytes = Zeroizing::new([0u8; HOST_KEY_BYTES + 1]);
        let mut filled = 0;
        // A regular file: read returns 0 at its end; at most 33 bytes are asked for.
        while filled < bytes.len() {
            match file.read(&mut bytes[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(refuse(format!("cannot read: {e}"))),
            }
        }
        if filled != HOST_KEY_BYTES {
            return Err(refuse(format!(
                "must hold exactly {HOST_KEY_BYTES} bytes (a damaged or wrong file?)"
            )));
        }
        let mut key = Zeroizing::new([0u8; HOST_KEY_BYTES]);
        key.copy_from_slice(&bytes[..HOST_KEY_BYTES]);
        Ok(HostKey(key))
    }

    /// Writes this key to a new file at `path` (root's, mode 0400); an existing file is
    /// never overwritten. The key is written and synced in `PATH.partial` first, then
    /// linked to `path`: a process killed at any moment leaves either no file at `path`
    /// or the whole key, never a piece of one. The directory is synced before this
    /// returns.
    pub fn write_new(&self, path: &Path) -> Result<()> {
        let refuse = |why: String| StoreError::KeyFile(path.to_path_buf(), why);
        let dir = path.parent().unwrap_or(Path::new("/"));
        if std::fs::symlink_metadata(dir).is_err() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| refuse(format!("cannot create {}: {e}", dir.display())))?;
        }
        let dir_meta = std::fs::metadata(dir)
            .map_err(|e| refuse(format!("directory {}: {e}", dir.display())))?;
        crate::config::check_owner_and_mode(&dir_meta, "its directory").map_err(refuse)?;
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(refuse("cannot create: it exists already".into()));
        }
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        // Left by a run killed while writing (the directory is root's alone).
        match std::fs::remove_file(&partial) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(refuse(format!("cannot remove {}: {e}", partial.display())))
            }
            _ => {}
        }
        let mut file = std::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&partial)
            .map_err(|e| refuse(format!("cannot create {}: {e}", partial.display())))?;
        let written = file
            .write_all(&self.0[..])
            .and_then(|()| file.sync_all())
            // A link never replaces an existing file (EEXIST).
            .and_then(|()| std::fs::hard_link(&partial, path))
            .and_then(|()| std::fs::remove_file(&partial))
            .and_then(|()| sync_dir(dir));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&partial);
            return Err(refuse(format!("cannot write: {e}")));
        }
        Ok(())
    }

    /// Seals `secret` as the key of factor `name` of `user`.
    pub fn seal(&self, user: &str, name: &str, secret: &SecretKey) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_BYTES];
        fill_random(&mut nonce).map_err(|e| StoreError::Sqlite(format!("no random nonce: {e}")))?;
        let plain = secret.as_bytes();
        // Room for the tag up front: the buffer never moves, so no copy of the key is
        // left behind in freed memory.
        let mut buf = Zeroizing::new(Vec::with_capacity(plain.len() + TAG_BYTES));
        buf.extend_from_slice(plain);
        self.cipher()
            .encrypt_in_place(
                XNonce::from_slice(&nonce),
                &associated_data(user, name),
                &mut *buf,
            )
            .map_err(|_| StoreError::Corrupt(format!("cannot seal the key of {user:?}")))?;
        let mut sealed = Vec::with_capacity(1 + NONCE_BYTES + buf.len());
        sealed.push(FORMAT);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&buf);
        Ok(sealed)
    }

    /// Opens the sealed key of factor `name` of `user`; `None` when it does not open
    /// (another host key, another user or factor, or damaged bytes).
    pub fn unseal(&self, user: &str, name: &str, sealed: &[u8]) -> Option<SecretKey> {
        if sealed.len() < 1 + NONCE_BYTES + TAG_BYTES || sealed[0] != FORMAT {
            return None;
        }
        let (nonce, body) = sealed[1..].split_at(NONCE_BYTES);
        let mut buf = Zeroizing::new(body.to_vec());
        self.cipher()
            .decrypt_in_place(
                XNonce::from_slice(nonce),
                &associated_data(user, name),
                &mut *buf,
            )
            .ok()?;
        Some(SecretKey::from_bytes(std::mem::take(&mut *buf)))
    }
}

/// The context, the model version, the user and the factor's name, each length-prefixed
/// so that no two (user, name) pairs give the same bytes.
fn associated_data(user: &str, name: &str) -> Vec<u8> {
    let mut ad = Vec::with_capacity(CONTEXT.len() + user.len() + name.len() + 20);
    for part in [CONTEXT.as_bytes(), user.as_bytes(), name.as_bytes()] {
        ad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        ad.extend_from_slice(part);
    }
    ad.extend_from_slice(&SCHEMA_VERSION.to_be_bytes());
    ad
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The host key a store seals with: read from its file when first needed, so that a
/// login that unseals nothing (an unenrolled user) never depends on it.
pub struct Keyring {
    path: PathBuf,
    key: OnceCell<HostKey>,
}

impl Keyring {
    pub fn new(path: &Path) -> Keyring {
        Keyring {
            path: path.to_path_buf(),
            key: OnceCell::new(),
        }
    }

    /// A keyring holding `key` already (tests, in-memory stores).
    pub fn with_key(path: &Path, key: HostKey) -> Keyring {
        let keyring = Keyring::new(path);
        let _ = keyring.key.set(key);
        keyring
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn key(&self) -> Result<&HostKey> {
        if let Some(key) = self.key.get() {
            return Ok(key);
        }
        let key = HostKey::load(&self.path)?;
        Ok(self.key.get_or_init(|| key))
    }

    pub fn seal(&self, user: &str, name: &str, secret: &SecretKey) -> Result<Vec<u8>> {
        self.key()?.seal(user, name, secret)
    }

    /// Opens a stored key; one that does not open fails closed, naming the key file.
    pub fn unseal(&self, user: &str, name: &str, sealed: &[u8]) -> Result<SecretKey> {
        self.key()?.unseal(user, name, sealed).ok_or_else(|| {
            StoreError::KeyFile(
                self.path.clone(),
                format!(
                    "does not open the key of factor {name:?} of {user:?}: not the key it was \
                     sealed with (replaced, or from another host?), or the row was altered"
                ),
            )
        })
    }
}

/// Creates the host key at `path` when there is none; never overwrites one. `true` when
/// it was created.
pub fn create_host_key(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => {
            // There is one: it must be usable as it is.
            HostKey::load(path)?;
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = HostKey::generate().map_err(|e| {
                StoreError::KeyFile(path.to_path_buf(), format!("no random key: {e}"))
            })?;
            key.write_new(path)?;
            Ok(true)
        }
        Err(e) => Err(StoreError::KeyFile(path.to_path_buf(), e.to_string())),
    }
}

/// Holds an exclusive lock on the directory of the key file at `path` until the
/// returned file is dropped: `store init` and `store rekey`, which write key files there
/// and seal under them, run one at a time (two rekeys at once could seal the store
/// under one run's key while the other run's key lands in the file). Logins never take
/// it.
pub fn lock_key_dir(path: &Path) -> Result<std::fs::File> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let refuse = |e: std::io::Error| {
        StoreError::KeyFile(
            path.to_path_buf(),
            format!("cannot lock {}: {e}", dir.display()),
        )
    };
    // `store init` makes the directory of a first key (root's, 0700).
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(refuse)?;
    }
    let file = std::fs::File::open(dir).map_err(refuse)?;
    // SAFETY: flock takes a file descriptor we own, kept open by `file`.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) } != 0 {
        return Err(refuse(std::io::Error::last_os_error()));
    }
    Ok(file)
}

/// Where `store rekey` writes the new key until the store is re-sealed under it.
pub fn pending_key_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".new");
    PathBuf::from(p)
}

/// Puts the pending key (`PATH.new`) in place of the key at `path`, atomically, and
/// syncs the directory.
pub fn install_pending_key(path: &Path) -> Result<()> {
    let pending = pending_key_path(path);
    std::fs::rename(&pending, path)
        .and_then(|()| sync_dir(path.parent().unwrap_or(Path::new("/"))))
        .map_err(|e| {
            StoreError::KeyFile(
                path.to_path_buf(),
                format!("cannot replace it with {}: {e}", pending.display()),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SecretKey {
        SecretKey::from_bytes(b"12345678901234567890".to_vec())
    }

    #[test]
    fn a_sealed_key_opens_only_for_its_user_factor_and_host_key() {
        let key = HostKey::from_bytes([7; 32]);
        let sealed = key.seal("alice", "default", &secret()).unwrap();
        assert_eq!(sealed.len(), 1 + 24 + 20 + 16);
        assert!(!sealed.windows(20).any(|w| w == secret().as_bytes()));
        let opened = key.unseal("alice", "default", &sealed).unwrap();
        assert_eq!(opened.as_bytes(), secret().as_bytes());
        assert!(key.unseal("bob", "default", &sealed).is_none());
        assert!(key.unseal("alice", "spare", &sealed).is_none());
        // No shifting of bytes between user and name.
        let ab = key.seal("ab", "c", &secret()).unwrap();
        assert!(key.unseal("a", "bc", &ab).is_none());
        assert!(HostKey::from_bytes([8; 32])
            .unseal("alice", "default", &sealed)
            .is_none());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(key.unseal("alice", "default", &bad).is_none(), "byte {i}");
            assert!(key.unseal("alice", "default", &sealed[..i]).is_none());
        }
        // A fresh nonce per seal.
        assert_ne!(key.seal("alice", "default", &secret()).unwrap(), sealed);
    }

    #[test]
    fn the_key_file_is_made_once_and_checked() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = crate::store::TestDir::new("seal");
        let path = tmp.0.join("store.key");
        assert!(create_host_key(&path).unwrap());
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o400);
        assert_eq!(meta.len(), 32);
        let first = std::fs::read(&path).unwrap();
        assert!(!create_host_key(&path).unwrap(), "never overwritten");
        assert_eq!(std::fs::read(&path).unwrap(), first);
        let sealed = HostKey::load(&path)
            .unwrap()
            .seal("alice", "default", &secret())
            .unwrap();
        let ring = Keyring::new(&path);
        assert_eq!(
            ring.unseal("alice", "default", &sealed).unwrap().as_bytes(),
            secret().as_bytes()
        );
        let named = |e: StoreError| {
            let text = e.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            text
        };
        let other = Keyring::with_key(&path, HostKey::from_bytes([1; 32]));
        named(other.unseal("alice", "default", &sealed).unwrap_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(named(HostKey::load(&path).unwrap_err()).contains("chmod 400"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
        assert!(HostKey::load(&path).is_err());
        std::fs::remove_file(&path).unwrap();
        assert!(named(
            Keyring::new(&path)
                .unseal("alice", "default", &sealed)
                .unwrap_err()
        )
        .contains("missing"));
        std::fs::write(&path, [0u8; 31]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(named(HostKey::load(&path).unwrap_err()).contains("exactly 32 bytes"));
        assert!(create_host_key(&path).is_err(), "a bad key is not replaced");
    }
}
