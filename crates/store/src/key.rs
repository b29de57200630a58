//! Content addresses of document caches.

use std::fmt;

/// `blake3(model fingerprint, anchor ids, document ids)`: the same text under
/// the same model and anchor has the same key, so it is computed once.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The key of `document` cached after `anchor` under the model `fingerprint`.
    pub fn new(fingerprint: &str, anchor: &[u32], document: &[u32]) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(b"prophetkv-kv-v1");
        h.update(&(fingerprint.len() as u64).to_le_bytes());
        h.update(fingerprint.as_bytes());
        for ids in [anchor, document] {
            h.update(&(ids.len() as u64).to_le_bytes());
            for id in ids {
                h.update(&id.to_le_bytes());
            }
        }
        Self(*h.finalize().as_bytes())
    }

    /// Where a tenant's copy of this cache is stored. Blobs are not shared
    /// across tenants, so no timing or listing can reveal another tenant's text.
    pub fn scoped(&self, tenant: &str) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(b"prophetkv-tenant-v1");
        h.update(&(tenant.len() as u64).to_le_bytes());
        h.update(tenant.as_bytes());
        h.update(&self.0);
        Self(*h.finalize().as_bytes())
    }

    /// Lower-case hex.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses [`CacheKey::hex`] output.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(out))
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", &self.hex()[..16])
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_depends_on_every_input_and_round_trips_through_hex() {
        let k = CacheKey::new("m", &[2, 5], &[7, 8, 9]);
        assert_eq!(k, CacheKey::new("m", &[2, 5], &[7, 8, 9]));
        assert_ne!(k, CacheKey::new("m2", &[2, 5], &[7, 8, 9]));
        assert_ne!(k, CacheKey::new("m", &[2], &[5, 7, 8, 9]));
        assert_ne!(k, CacheKey::new("m", &[2, 5], &[7, 8]));
        assert_eq!(CacheKey::from_hex(&k.hex()), Some(k));
        assert_ne!(k.scoped("a"), k.scoped("b"));
    }
}
