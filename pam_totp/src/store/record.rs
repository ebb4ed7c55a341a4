//! One user's row of the SQLite store: everything kept about them in one value, so that
//! the store is a single two-column table. SQLite parses the whole schema on every new
//! connection and a login opens one: one small table and one short `SELECT` and
//! `UPDATE` are most of what a login costs.
//!
//! The encoding is private to this file: a format byte (the schema version), then the
//! fields in a fixed order, integers big-endian, byte strings with a length prefix.
//! Every read is checked; anything out of place is a corrupt row.

use super::{Factor, Result, StoreError, SCHEMA_VERSION};
use crate::otp::{Algorithm, OtpParams};
use crate::recovery::{HashedCode, SALT_LEN};
use crate::secret::SecretKey;
use crate::throttle::{PairFailures, UserFailures};
use zeroize::Zeroizing;

/// Sources whose failures one user's row keeps. A failure from one more source drops
/// the least restrictive entry; the per-user ceiling still counts every failure.
pub const MAX_SOURCES: usize = 64;

/// Longest source kept (a host name or tty); longer ones are cut there.
const MAX_SOURCE_BYTES: usize = 255;

/// Everything the store keeps about one user.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// The enrolled factor; its `last_step` and `last_used_at` are not used here (see
    /// the fields below, which outlive a reset).
    pub factor: Option<StoredFactor>,
    pub last_used_at: Option<i64>,
    /// The last time step accepted; kept across a reset, so that enrolling the same key
    /// again does not reopen codes that were used.
    pub last_step: Option<i64>,
    /// When the user was first seen mandatory and unenrolled (grace period).
    pub mandatory_since: Option<i64>,
    pub window: UserFailures,
    /// Failures per source, sorted by source.
    pub sources: Vec<(String, PairFailures)>,
    /// Recovery codes as salted hashes, with the time each was used.
    pub recovery_codes: Vec<(HashedCode, Option<i64>)>,
}

/// The enrolled factor as stored.
#[derive(Debug, Clone)]
pub struct StoredFactor {
    pub secret: SecretKey,
    pub params: OtpParams,
    pub created_at: i64,
    pub confirmed_at: Option<i64>,
}

impl Record {
    /// The factor as the decision logic sees it, with the replay state.
    pub fn factor(&self) -> Option<Factor> {
        self.factor.as_ref().map(|f| Factor {
            secret: f.secret.clone(),
            params: f.params,
            created_at: f.created_at,
            confirmed_at: f.confirmed_at,
            last_used_at: self.last_used_at,
            last_step: self.last_step,
        })
    }

    /// The failures of (user, `source`).
    pub fn pair(&self, source: &str) -> PairFailures {
        let source = cut(source);
        self.sources
            .binary_search_by(|(s, _)| s.as_str().cmp(source))
            .map(|i| self.sources[i].1)
            .unwrap_or_default()
    }

    /// Sets the failures of (user, `source`), making room when every slot is taken.
    pub fn set_pair(&mut self, source: &str, pair: PairFailures, now: i64) {
        let source = cut(source);
        match self
            .sources
            .binary_search_by(|(s, _)| s.as_str().cmp(source))
        {
            Ok(i) => self.sources[i].1 = pair,
            Err(i) => {
                self.sources.insert(i, (source.to_string(), pair));
                while self.sources.len() > MAX_SOURCES {
                    self.drop_least_restrictive(source, now);
                }
            }
        }
    }

    /// Forgets the failures of (user, `source`).
    pub fn clear_pair(&mut self, source: &str) {
        let source = cut(source);
        self.sources.retain(|(s, _)| s != source);
    }

    /// Drops the entry that refuses least: an unlocked one with the fewest failures,
    /// else the one whose lock ends first. `keep` (just recorded) stays.
    fn drop_least_restrictive(&mut self, keep: &str, now: i64) {
        let victim = self
            .sources
            .iter()
            .enumerate()
            .filter(|(_, (s, _))| s != keep)
            .min_by_key(|(_, (_, p))| (p.locked_until > now, p.locked_until, p.failures))
            .map(|(i, _)| i);
        match victim {
            Some(i) => {
                self.sources.remove(i);
            }
            None => self.sources.truncate(MAX_SOURCES),
        }
    }

    /// Unused recovery codes.
    pub fn recovery_codes_left(&self) -> u32 {
        self.recovery_codes
            .iter()
            .filter(|(_, used)| used.is_none())
            .count() as u32
    }

    /// The stored form: format byte, then the fields.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Writer(Zeroizing::new(Vec::with_capacity(128)));
        out.u8(SCHEMA_VERSION as u8);
        match &self.factor {
            None => out.u8(0),
            Some(f) => {
                out.u8(1);
                out.bytes(f.secret.as_bytes());
                out.u8(match f.params.algorithm {
                    Algorithm::Sha1 => 1,
                    Algorithm::Sha256 => 2,
                    Algorithm::Sha512 => 3,
                });
                out.u8(f.params.digits as u8);
                out.u64(f.params.period);
                out.i64(f.created_at);
                out.opt(f.confirmed_at);
            }
        }
        out.opt(self.last_used_at);
        out.opt(self.last_step);
        out.opt(self.mandatory_since);
        out.i64(self.window.window_start);
        out.u32(self.window.failures);
        out.u32(self.sources.len() as u32);
        for (source, pair) in &self.sources {
            out.bytes(source.as_bytes());
            out.u32(pair.failures);
            out.i64(pair.locked_until);
        }
        out.u32(self.recovery_codes.len() as u32);
        for (code, used_at) in &self.recovery_codes {
            out.raw(&code.salt);
            out.raw(&code.hash);
            out.opt(*used_at);
        }
        out.0
    }

    /// Reads a stored row of `user`.
    pub fn decode(user: &str, bytes: &[u8]) -> Result<Record> {
        let corrupt = || StoreError::Corrupt(format!("the row of {user:?} cannot be read"));
        let mut r = Reader(bytes);
        let format = r.u8().ok_or_else(corrupt)?;
        if i64::from(format) != SCHEMA_VERSION {
            return Err(StoreError::Schema {
                found: i64::from(format),
            });
        }
        let record = read_fields(&mut r).ok_or_else(corrupt)?;
        if !r.0.is_empty() {
            return Err(corrupt());
        }
        if let Some(f) = &record.factor {
            let p = &f.params;
            if !(6..=8).contains(&p.digits)
                || !(1..=3600).contains(&p.period)
                || f.secret.as_bytes().len() < 10
            {
                return Err(StoreError::Corrupt(format!(
                    "factor of {user:?} has bad parameters"
                )));
            }
        }
        Ok(record)
    }
}

fn read_fields(r: &mut Reader<'_>) -> Option<Record> {
    let factor = match r.u8()? {
        0 => None,
        1 => Some(StoredFactor {
            secret: SecretKey::from_bytes(r.bytes()?.to_vec()),
            params: {
                let algorithm = match r.u8()? {
                    1 => Algorithm::Sha1,
                    2 => Algorithm::Sha256,
                    3 => Algorithm::Sha512,
                    _ => return None,
                };
                OtpParams {
                    algorithm,
                    digits: u32::from(r.u8()?),
                    period: r.u64()?,
                }
            },
            created_at: r.i64()?,
            confirmed_at: r.opt()?,
        }),
        _ => return None,
    };
    let last_used_at = r.opt()?;
    let last_step = r.opt()?;
    let mandatory_since = r.opt()?;
    let window = UserFailures {
        window_start: r.i64()?,
        failures: r.u32()?,
    };
    let count = r.u32()? as usize;
    if count > MAX_SOURCES {
        return None;
    }
    let mut sources = Vec::with_capacity(count);
    for _ in 0..count {
        let source = String::from_utf8(r.bytes()?.to_vec()).ok()?;
        let pair = PairFailures {
            failures: r.u32()?,
            locked_until: r.i64()?,
        };
        sources.push((source, pair));
    }
    if !sources.windows(2).all(|w| w[0].0 < w[1].0) {
        return None;
    }
    let count = r.u32()? as usize;
    if count > 1000 {
        return None;
    }
    let mut recovery_codes = Vec::with_capacity(count);
    for _ in 0..count {
        let salt: [u8; SALT_LEN] = r.raw(SALT_LEN)?.try_into().ok()?;
        let hash: [u8; 32] = r.raw(32)?.try_into().ok()?;
        recovery_codes.push((HashedCode { salt, hash }, r.opt()?));
    }
    Some(Record {
        factor,
        last_used_at,
        last_step,
        mandatory_since,
        window,
        sources,
        recovery_codes,
    })
}

/// A source as stored: at most [`MAX_SOURCE_BYTES`], cut on a character boundary.
fn cut(source: &str) -> &str {
    if source.len() <= MAX_SOURCE_BYTES {
        return source;
    }
    let mut end = MAX_SOURCE_BYTES;
    while !source.is_char_boundary(end) {
        end -= 1;
    }
    &source[..end]
}

struct Writer(Zeroizing<Vec<u8>>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn opt(&mut self, v: Option<i64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.i64(v);
            }
        }
    }
    fn raw(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.raw(v);
    }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Record {
        Record {
            factor: Some(StoredFactor {
                secret: SecretKey::from_bytes(b"12345678901234567890".to_vec()),
                params: OtpParams {
                    algorithm: Algorithm::Sha256,
                    digits: 8,
                    period: 60,
                },
                created_at: 1_700_000_000,
                confirmed_at: Some(1_700_000_001),
            }),
            last_used_at: Some(1_700_000_100),
            last_step: Some(28_333_335),
            mandatory_since: None,
            window: UserFailures {
                window_start: 1_700_000_050,
                failures: 3,
            },
            sources: vec![
                (
                    "192.0.2.1".into(),
                    PairFailures {
                        failures: 2,
                        locked_until: 0,
                    },
                ),
                (
                    "pts/1".into(),
                    PairFailures {
                        failures: 5,
                        locked_until: 1_700_000_200,
                    },
                ),
            ],
            recovery_codes: vec![(
                HashedCode {
                    salt: [7; SALT_LEN],
                    hash: [9; 32],
                },
                Some(5),
            )],
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let r = full();
        let bytes = r.encode();
        let back = Record::decode("alice", &bytes).unwrap();
        assert_eq!(back.encode().as_slice(), bytes.as_slice());
        let f = back.factor().unwrap();
        assert_eq!(f.secret.as_bytes(), b"12345678901234567890");
        assert_eq!(f.params.algorithm, Algorithm::Sha256);
        assert_eq!((f.params.digits, f.params.period), (8, 60));
        assert_eq!(
            (f.last_step, f.last_used_at),
            (Some(28_333_335), Some(1_700_000_100))
        );
        assert_eq!(back.pair("pts/1").failures, 5);
        assert_eq!(back.pair("elsewhere"), PairFailures::default());
        assert_eq!(back.recovery_codes_left(), 0);
        let empty = Record::default().encode();
        assert!(Record::decode("bob", &empty).unwrap().factor.is_none());
    }

    #[test]
    fn damaged_rows_are_refused() {
        let bytes = full().encode();
        for len in 0..bytes.len() {
            assert!(
                Record::decode("alice", &bytes[..len]).is_err(),
                "cut at {len}"
            );
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(Record::decode("alice", &longer).is_err());
        let mut other_format = bytes.to_vec();
        other_format[0] = 9;
        assert!(matches!(
            Record::decode("alice", &other_format),
            Err(StoreError::Schema { found: 9 })
        ));
    }

    #[test]
    fn sources_are_capped_dropping_the_least_restrictive() {
        let mut r = Record::default();
        let now = 1000;
        r.set_pair(
            "locked",
            PairFailures {
                failures: 9,
                locked_until: now + 60,
            },
            now,
        );
        for i in 0..MAX_SOURCES + 10 {
            let pair = PairFailures {
                failures: 1 + (i % 3) as u32,
                locked_until: 0,
            };
            r.set_pair(&format!("src{i:03}"), pair, now);
            assert!(r.sources.len() <= MAX_SOURCES);
        }
        assert_eq!(r.pair("locked").failures, 9, "a locked source is kept");
        assert_eq!(
            r.pair(&format!("src{:03}", MAX_SOURCES + 9)).failures,
            1 + ((MAX_SOURCES + 9) % 3) as u32
        );
        assert!(r.sources.windows(2).all(|w| w[0].0 < w[1].0));
        let long = "x".repeat(1000);
        r.set_pair(
            &long,
            PairFailures {
                failures: 1,
                locked_until: 0,
            },
            now,
        );
        assert_eq!(r.pair(&long).failures, 1);
        r.clear_pair(&long);
        assert_eq!(r.pair(&long).failures, 0);
    }
}
