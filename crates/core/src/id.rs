//! Job ids and lease tokens.
//!
//! A job id is a ULID: 48 bits of milliseconds then 80 bits that increase monotonically within a
//! millisecond, written as 26 Crockford base-32 characters. Ids made by one engine sort in the order the
//! jobs were created, so the id doubles as the FIFO tie-breaker and the pagination cursor. Ids made on
//! different nodes in the same millisecond differ in their random part and never collide in practice.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

use rand::RngExt;
use ulid::{Generator, Ulid};

use crate::clock::Timestamp;

/// A job's id: server-made, unique, time-sortable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(Ulid);

impl JobId {
    /// The creation time encoded in the id.
    pub fn timestamp(&self) -> Timestamp {
        self.0.timestamp_ms() as Timestamp
    }

    /// The id whose 128 bits are `n` (for tests that need ids in a known order).
    #[cfg(test)]
    pub(crate) fn from_u128(n: u128) -> JobId {
        JobId(Ulid(n))
    }

    /// The inverse of [`JobId::from_u128`].
    #[cfg(test)]
    pub(crate) fn to_u128(self) -> u128 {
        self.0.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; ulid::ULID_LEN];
        f.write_str(self.0.array_to_str(&mut buf))
    }
}

/// The text was not a job id.
#[derive(Debug, Clone, thiserror::Error)]
#[error("not a job id (expected 26 Crockford base-32 characters, the first at most 7)")]
pub struct ParseJobIdError;

impl FromStr for JobId {
    type Err = ParseJobIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // 26 base-32 digits hold 130 bits, a ULID 128: a first digit above 7 would be decoded into
        // another id (`8ZZ…` as `0ZZ…`), so it is no id at all.
        if s.len() != ulid::ULID_LEN || !matches!(s.as_bytes()[0], b'0'..=b'7') {
            return Err(ParseJobIdError);
        }
        Ulid::from_string(s).map(JobId).map_err(|_| ParseJobIdError)
    }
}

/// Makes monotonically increasing job ids from the injected clock's time.
#[derive(Debug, Default)]
pub(crate) struct IdGenerator {
    inner: Generator,
}

impl IdGenerator {
    pub(crate) fn next(&mut self, now: Timestamp) -> JobId {
        let at = UNIX_EPOCH + Duration::from_millis(now.max(0) as u64);
        let id = match self.inner.generate_from_datetime(at) {
            Ok(id) => id,
            // 2^80 ids in one millisecond: borrow from the next millisecond rather than fail.
            Err(overflow) => overflow.commit_overflow_increment(),
        };
        JobId(id)
    }
}

/// A lease token: new for every claim, unguessable, and the only proof that a worker holds a job.
pub type LeaseToken = String;

/// Makes a fresh random lease token (128 bits, hex).
pub(crate) fn new_lease_token() -> LeaseToken {
    let bits: u128 = rand::rng().random();
    format!("{bits:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_reads_back_as_itself_and_nothing_else_reads_as_an_id() {
        let id = IdGenerator::default().next(1_700_000_000_000);
        assert_eq!(id.to_string().parse::<JobId>().ok(), Some(id));
        assert_eq!(
            id.to_string().to_lowercase().parse::<JobId>().ok(),
            Some(id)
        );
        assert!(
            "7ZZZZZZZZZZZZZZZZZZZZZZZZZ".parse::<JobId>().is_ok(),
            "the largest ULID"
        );
        for bad in [
            "8ZZZZZZZZZZZZZZZZZZZZZZZZZ",
            "ZZZZZZZZZZZZZZZZZZZZZZZZZZ",
            "01JAAAAAAAAAAAAAAAAAAAAAA",
            "01JAAAAAAAAAAAAAAAAAAAAAAAA",
            "01JAAAAAAAAAAAAAAAAAAAAAAU",
            "",
        ] {
            assert!(bad.parse::<JobId>().is_err(), "{bad}");
        }
    }
}
