//! What `totp-admin store copy` moves between stores: each enrolled user's factor as
//! stored (secret, parameters, times, last accepted step) and recovery codes (salted
//! hashes, with the time each was used). Throttle counters stay behind.

use super::{factor_from_row, store_error, Factor, Result, StoreError, FACTOR_COLUMNS};
use crate::recovery::{HashedCode, SALT_LEN};
use rusqlite::{params, Connection};

/// One enrolled user, exactly as a store holds them.
#[derive(Debug, Clone)]
pub struct EnrolledUser {
    pub user: String,
    pub factor: Factor,
    /// Each code's stored form and the unix time it was used, if it was.
    pub recovery_codes: Vec<(HashedCode, Option<i64>)>,
}

/// Every enrolled user of a SQLite store, sorted by name.
pub(super) fn export(c: &Connection) -> Result<Vec<EnrolledUser>> {
    let sql =
        format!("SELECT user, {FACTOR_COLUMNS} FROM users WHERE secret IS NOT NULL ORDER BY user");
    let mut stmt = c.prepare(&sql)?;
    let rows = stmt.query_map([], |r| {
        let user: String = r.get(0)?;
        let factor = factor_from_row(&user, r, 1)?;
        Ok((user, factor))
    });
    let mut out = Vec::new();
    for row in rows.map_err(store_error)? {
        let (user, factor) = row.map_err(store_error)?;
        let Some(factor) = factor else { continue };
        out.push(EnrolledUser {
            recovery_codes: recovery_codes(c, &user)?,
            user,
            factor,
        });
    }
    Ok(out)
}

fn recovery_codes(c: &Connection, user: &str) -> Result<Vec<(HashedCode, Option<i64>)>> {
    let mut stmt =
        c.prepare("SELECT salt, hash, used_at FROM recovery_codes WHERE user = ?1 ORDER BY salt")?;
    let rows = stmt.query_map(params![user], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, Option<i64>>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (salt, hash, used_at) = row?;
        out.push((hashed_code(user, salt, hash)?, used_at));
    }
    Ok(out)
}

/// A stored recovery code, checked for length.
pub fn hashed_code(user: &str, salt: Vec<u8>, hash: Vec<u8>) -> Result<HashedCode> {
    match (<[u8; SALT_LEN]>::try_from(salt), <[u8; 32]>::try_from(hash)) {
        (Ok(salt), Ok(hash)) => Ok(HashedCode { salt, hash }),
        _ => Err(StoreError::Corrupt(format!(
            "a recovery code of {user:?} has the wrong length"
        ))),
    }
}

/// Writes one copied user into a SQLite store, replacing what it held for them.
/// A later last step already recorded here is kept: a copy never reopens used codes.
pub(super) fn import(c: &Connection, u: &EnrolledUser) -> Result<()> {
    let f = &u.factor;
    c.execute(
        "INSERT INTO users (user, secret, algorithm, digits, period, created_at, confirmed_at,
                            last_used_at, last_step)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (user) DO UPDATE SET secret = ?2, algorithm = ?3, digits = ?4, period = ?5,
             created_at = ?6, confirmed_at = ?7, last_used_at = ?8,
             last_step = max(coalesce(last_step, ?9), coalesce(?9, last_step))",
        params![
            u.user,
            f.secret.as_bytes(),
            f.params.algorithm.as_str(),
            f.params.digits,
            f.params.period as i64,
            f.created_at,
            f.confirmed_at,
            f.last_used_at,
            f.last_step
        ],
    )?;
    c.execute(
        "DELETE FROM recovery_codes WHERE user = ?1",
        params![u.user],
    )?;
    let mut stmt = c.prepare(
        "INSERT INTO recovery_codes (user, salt, hash, used_at) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (code, used_at) in &u.recovery_codes {
        stmt.execute(params![u.user, &code.salt[..], &code.hash[..], used_at])?;
    }
    Ok(())
}
