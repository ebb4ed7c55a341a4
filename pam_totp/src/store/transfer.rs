//! What `totp-admin store copy` moves between stores: each enrolled user's factors as
//! stored (keys, parameters, times, last accepted steps) and recovery codes (salted
//! hashes, with the time each was used). Throttle counters stay behind.

use super::{Factor, Result, StoreError};
use crate::recovery::{HashedCode, SALT_LEN};

/// One enrolled user, exactly as a store holds them.
#[derive(Debug, Clone)]
pub struct EnrolledUser {
    pub user: String,
    /// Every factor, `default` first; keys unsealed (the destination seals them again
    /// under its own host key).
    pub factors: Vec<Factor>,
    /// Each code's stored form and the unix time it was used, if it was.
    pub recovery_codes: Vec<(HashedCode, Option<i64>)>,
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
