//! The `KEY.meta` sidecar: what ffkit knows about an entry besides its value.
//!
//! JSON with the contract's fields: `key`, `created_at` and `expires_at`
//! (epoch seconds; `expires_at` is `null` for entries that never expire),
//! `ttl` (seconds, 0 = never) and `size` (value bytes). Epoch seconds keep
//! the file easy to use from shell (`jq '.expires_at'`).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub key: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub ttl: u64,
    pub size: u64,
}

impl Meta {
    /// An entry written at `now` (whole seconds, rounded down) that expires
    /// `ttl` seconds after `expiry_base` (now rounded up), so that it lives
    /// at least `ttl` seconds: `--ttl 1` written at .97 s lives until the
    /// second after next, not 0.03 s.
    pub fn new(key: &str, now: i64, expiry_base: i64, ttl: u64, size: u64) -> Self {
        let expires_at =
            (ttl > 0).then(|| expiry_base.saturating_add(ttl.min(i64::MAX as u64) as i64));
        Meta {
            key: key.to_string(),
            created_at: now,
            expires_at,
            ttl,
            size,
        }
    }

    /// An entry is expired from its `expires_at` second on.
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parses a sidecar; any damage (truncation, wrong types, missing fields)
    /// is an error naming the problem.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("damaged sidecar: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_expiry() {
        let m = Meta::new("k", 1000, 1000, 300, 5);
        assert_eq!(m.expires_at, Some(1300));
        assert!(!m.is_expired(1299) && m.is_expired(1300));
        assert_eq!(Meta::parse(&m.to_json()).unwrap(), m);
        let never = Meta::new("k", 1000, 1001, 0, 5);
        let rounded = Meta::new("k", 1000, 1001, 1, 5);
        assert_eq!(rounded.created_at, 1000);
        assert_eq!(rounded.expires_at, Some(1002));
        assert_eq!(never.expires_at, None);
        assert!(!never.is_expired(i64::MAX));
        let s = String::from_utf8(never.to_json()).unwrap();
        assert!(s.contains("\"expires_at\":null"), "{s}");
    }

    #[test]
    fn damaged_sidecars_are_errors() {
        for bad in [
            &b""[..],
            b"{",
            b"{\"key\":1}",
            b"{\"key\":\"k\",\"created_at\":\"x\",\"expires_at\":null,\"ttl\":0,\"size\":0}",
        ] {
            assert!(Meta::parse(bad).is_err());
        }
    }
}
