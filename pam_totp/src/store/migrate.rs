//! Older SQLite stores, rewritten as schema 4 by `totp-admin store init` (and nothing
//! else: a login on an older store fails closed, saying to run it). Each migration runs
//! inside the caller's `BEGIN IMMEDIATE` transaction: it takes effect whole or not at all.
//!
//! - Schema 1: a table each for users (one factor per user, its key in clear), throttle
//!   rows and recovery codes.
//! - Schema 2: one table `users(user, record)`, everything about a user in one opaque
//!   record (its decoder is kept here, and only here).
//! - Schema 3: the tables of schema 4 but `remembered`, which is added.
//!
//! From schema 1 and 2 the old tables are renamed out of the way, schema 4 made, the rows copied (each key
//! sealed under the host key as the `default` factor), and the old tables dropped.

use super::seal::Keyring;
use super::{hashed_code, Result, StoreError};
use crate::otp::Algorithm;
use crate::recovery::{HashedCode, SALT_LEN};
use crate::secret::SecretKey;
use rusqlite::{params, Connection};

/// The name an old store's one factor gets.
const FACTOR: &str = super::DEFAULT_FACTOR;

/// A factor as an old store kept it.
struct OldFactor {
    secret: SecretKey,
    algorithm: String,
    digits: i64,
    period: i64,
    created_at: i64,
    last_used_at: Option<i64>,
    last_step: Option<i64>,
}

/// Writes one migrated factor, its key sealed for `user`.
fn insert_factor(c: &Connection, keys: &Keyring, user: &str, f: &OldFactor) -> Result<()> {
    let sealed = keys.seal(user, FACTOR, &f.secret)?;
    c.execute(
        "INSERT INTO factors (user, name, sealed_key, algorithm, digits, period, created_at,
                              last_used_at, last_step)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            user,
            FACTOR,
            sealed,
            f.algorithm,
            f.digits,
            f.period,
            f.created_at,
            f.last_used_at,
            f.last_step
        ],
    )?;
    Ok(())
}

/// Schema 3 to 4: the table of remembered sources (`[policy] remember_source`).
pub(super) fn from_v3(c: &Connection) -> Result<()> {
    c.execute_batch(
        "CREATE TABLE remembered(
           user TEXT NOT NULL,
           source TEXT NOT NULL,
           until INTEGER NOT NULL,
           PRIMARY KEY(user, source)
         );",
    )?;
    Ok(())
}

/// Schema 1 to 4. `schema`: schema 4's tables; `now`: when throttle rows were last
/// counted (schema 1 did not keep it).
pub(super) fn from_v1(c: &Connection, keys: &Keyring, schema: &str, now: i64) -> Result<()> {
    c.execute_batch(
        "ALTER TABLE users RENAME TO users_v1;
         ALTER TABLE throttle RENAME TO throttle_v1;
         ALTER TABLE recovery_codes RENAME TO recovery_codes_v1;",
    )?;
    c.execute_batch(schema)?;
    // A user whose factor was removed keeps its last step (see `retired_step`).
    c.execute_batch(
        "INSERT INTO users (user, mandatory_since, window_start, window_failures, retired_step)
             SELECT user, mandatory_since, window_start, window_failures,
                    CASE WHEN secret IS NULL THEN last_step END
             FROM users_v1;
         INSERT INTO recovery_codes (user, salt, hash, used_at)
             SELECT user, salt, hash, used_at FROM recovery_codes_v1;",
    )?;
    c.execute(
        "INSERT INTO throttle (user, source, failures, locked_until, last_failure_at)
         SELECT user, source, failures, locked_until, ?1 FROM throttle_v1",
        [now],
    )?;
    {
        let mut stmt = c.prepare(
            "SELECT user, secret, algorithm, digits, period, created_at, last_used_at, last_step
             FROM users_v1 WHERE secret IS NOT NULL ORDER BY user",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let user: String = r.get(0)?;
            let corrupt =
                || StoreError::Corrupt(format!("the schema-1 factor of {user:?} is incomplete"));
            let factor = OldFactor {
                secret: SecretKey::from_bytes(r.get(1)?),
                algorithm: r.get::<_, Option<String>>(2)?.ok_or_else(corrupt)?,
                digits: r.get::<_, Option<i64>>(3)?.ok_or_else(corrupt)?,
                period: r.get::<_, Option<i64>>(4)?.ok_or_else(corrupt)?,
                created_at: r.get::<_, Option<i64>>(5)?.unwrap_or(0),
                last_used_at: r.get(6)?,
                last_step: r.get(7)?,
            };
            insert_factor(c, keys, &user, &factor)?;
        }
    }
    c.execute_batch("DROP TABLE users_v1; DROP TABLE throttle_v1; DROP TABLE recovery_codes_v1;")?;
    Ok(())
}

/// Schema 2 to 4.
pub(super) fn from_v2(c: &Connection, keys: &Keyring, schema: &str, now: i64) -> Result<()> {
    c.execute_batch("ALTER TABLE users RENAME TO users_v2;")?;
    c.execute_batch(schema)?;
    let mut records = Vec::new();
    {
        let mut stmt = c.prepare("SELECT user, record FROM users_v2 ORDER BY user")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let user: String = r.get(0)?;
            let bytes = zeroize::Zeroizing::new(r.get::<_, Vec<u8>>(1)?);
            let record = decode_v2(&bytes).ok_or_else(|| {
                StoreError::Corrupt(format!("the row of {user:?} cannot be read"))
            })?;
            records.push((user, record));
        }
    }
    for (user, r) in &records {
        let retired = if r.factor.is_none() {
            r.last_step
        } else {
            None
        };
        c.execute(
            "INSERT INTO users (user, mandatory_since, window_start, window_failures, retired_step)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                user,
                r.mandatory_since,
                r.window_start,
                r.window_failures,
                retired
            ],
        )?;
        for (source, failures, locked_until) in &r.sources {
            c.execute(
                "INSERT INTO throttle (user, source, failures, locked_until, last_failure_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![user, source, failures, locked_until, now],
            )?;
        }
        for (code, used_at) in &r.recovery_codes {
            c.execute(
                "INSERT INTO recovery_codes (user, salt, hash, used_at) VALUES (?1, ?2, ?3, ?4)",
                params![user, &code.salt[..], &code.hash[..], used_at],
            )?;
        }
        if let Some(f) = &r.factor {
            insert_factor(c, keys, user, f)?;
        }
    }
    c.execute_batch("DROP TABLE users_v2;")?;
    Ok(())
}

/// A schema-2 record.
struct RecordV2 {
    factor: Option<OldFactor>,
    last_step: Option<i64>,
    mandatory_since: Option<i64>,
    window_start: i64,
    window_failures: u32,
    /// (source, failures, locked_until)
    sources: Vec<(String, u32, i64)>,
    recovery_codes: Vec<(HashedCode, Option<i64>)>,
}

/// Schema 2's record: a format byte (2), then the fields in a fixed order, integers
/// big-endian, byte strings with a 32-bit length prefix, optional integers with a 0/1
/// flag byte. `None` for anything out of place.
fn decode_v2(bytes: &[u8]) -> Option<RecordV2> {
    let mut r = Reader(bytes);
    if r.u8()? != 2 {
        return None;
    }
    let factor = match r.u8()? {
        0 => None,
        1 => {
            let secret = SecretKey::from_bytes(r.bytes()?.to_vec());
            let algorithm = match r.u8()? {
                1 => Algorithm::Sha1,
                2 => Algorithm::Sha256,
                3 => Algorithm::Sha512,
                _ => return None,
            };
            let digits = i64::from(r.u8()?);
            let period = i64::try_from(r.u64()?).ok()?;
            let created_at = r.i64()?;
            let _confirmed_at = r.opt()?;
            Some(OldFactor {
                secret,
                algorithm: algorithm.as_str().to_string(),
                digits,
                period,
                created_at,
                last_used_at: None,
                last_step: None,
            })
        }
        _ => return None,
    };
    let last_used_at = r.opt()?;
    let last_step = r.opt()?;
    let mandatory_since = r.opt()?;
    let window_start = r.i64()?;
    let window_failures = r.u32()?;
    let mut sources = Vec::new();
    for _ in 0..r.count(64)? {
        let source = String::from_utf8(r.bytes()?.to_vec()).ok()?;
        sources.push((source, r.u32()?, r.i64()?));
    }
    let mut recovery_codes = Vec::new();
    for _ in 0..r.count(1000)? {
        let salt = r.raw(SALT_LEN)?.to_vec();
        let hash = r.raw(32)?.to_vec();
        let code = hashed_code("", salt, hash).ok()?;
        recovery_codes.push((code, r.opt()?));
    }
    if !r.0.is_empty() {
        return None;
    }
    Some(RecordV2 {
        factor: factor.map(|f| OldFactor {
            last_used_at,
            last_step,
            ..f
        }),
        last_step,
        mandatory_since,
        window_start,
        window_failures,
        sources,
        recovery_codes,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn raw(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.raw(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.raw(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.raw(8)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.raw(8)?.try_into().ok()?))
    }
    fn opt(&mut self) -> Option<Option<i64>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.i64()?)),
            _ => None,
        }
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.raw(n)
    }
    /// A count of items, at most `max`.
    fn count(&mut self, max: u32) -> Option<u32> {
        Some(self.u32()?).filter(|&n| n <= max)
    }
}

#[cfg(test)]
mod tests;
