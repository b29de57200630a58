//! The document registry: an embedded redb database.
//!
//! redb was chosen over SQLite because it is pure Rust (no C build, no
//! system library), ACID with copy-on-write pages (a crash leaves the last
//! committed state, never a torn one), and the registry needs only two
//! key-value tables, not SQL. Keys are `tenant \0 id`, so a tenant's
//! documents are one contiguous range and no lookup can cross tenants.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::{Result, StoreError};

const DOCUMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("documents");
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");

/// A registered document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentRecord {
    /// Id, unique within the tenant.
    pub id: String,
    /// Owner.
    pub tenant: String,
    /// Human-readable name (file name, title).
    pub name: String,
    /// Free-form JSON metadata.
    pub metadata: serde_json::Value,
    /// Token count.
    pub tokens: usize,
    /// Content key (hex) of its KV under the model and anchor it was registered with.
    pub key: String,
    /// Registration time, seconds since the Unix epoch.
    pub created: u64,
    /// The text, kept so any cache can be rebuilt.
    pub text: String,
    /// True once its KV has been computed and stored.
    pub ready: bool,
}

/// The registry database.
pub struct Registry {
    db: Database,
}

fn row_key(tenant: &str, id: &str) -> String {
    format!("{tenant}\0{id}")
}

impl Registry {
    /// Opens (or creates) the registry at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path).map_err(StoreError::registry)?;
        let txn = db.begin_write().map_err(StoreError::registry)?;
        txn.open_table(DOCUMENTS).map_err(StoreError::registry)?;
        txn.open_table(TOKENS).map_err(StoreError::registry)?;
        txn.commit().map_err(StoreError::registry)?;
        Ok(Self { db })
    }

    /// Inserts or replaces a record and its token ids, atomically.
    pub fn put(&self, record: &DocumentRecord, ids: &[u32]) -> Result<()> {
        let key = row_key(&record.tenant, &record.id);
        let json = serde_json::to_vec(record).map_err(StoreError::registry)?;
        let ids: Vec<u8> = ids.iter().flat_map(|x| x.to_le_bytes()).collect();
        let txn = self.db.begin_write().map_err(StoreError::registry)?;
        {
            let mut docs = txn.open_table(DOCUMENTS).map_err(StoreError::registry)?;
            docs.insert(key.as_str(), json.as_slice())
                .map_err(StoreError::registry)?;
            let mut tokens = txn.open_table(TOKENS).map_err(StoreError::registry)?;
            tokens
                .insert(key.as_str(), ids.as_slice())
                .map_err(StoreError::registry)?;
        }
        txn.commit().map_err(StoreError::registry)
    }

    /// Replaces `before` with `after` only if the stored record is still
    /// exactly `before` (not deleted or re-registered meanwhile), in one
    /// transaction. Returns whether it was replaced.
    pub fn update_if_unchanged(
        &self,
        before: &DocumentRecord,
        after: &DocumentRecord,
    ) -> Result<bool> {
        let key = row_key(&before.tenant, &before.id);
        let expected = serde_json::to_vec(before).map_err(StoreError::registry)?;
        let json = serde_json::to_vec(after).map_err(StoreError::registry)?;
        let txn = self.db.begin_write().map_err(StoreError::registry)?;
        let replaced = {
            let mut docs = txn.open_table(DOCUMENTS).map_err(StoreError::registry)?;
            let unchanged = docs
                .get(key.as_str())
                .map_err(StoreError::registry)?
                .is_some_and(|v| v.value() == expected.as_slice());
            if unchanged {
                docs.insert(key.as_str(), json.as_slice())
                    .map_err(StoreError::registry)?;
            }
            unchanged
        };
        txn.commit().map_err(StoreError::registry)?;
        Ok(replaced)
    }

    /// The record of `id` in `tenant`.
    pub fn get(&self, tenant: &str, id: &str) -> Result<Option<DocumentRecord>> {
        let txn = self.db.begin_read().map_err(StoreError::registry)?;
        let docs = txn.open_table(DOCUMENTS).map_err(StoreError::registry)?;
        let Some(v) = docs
            .get(row_key(tenant, id).as_str())
            .map_err(StoreError::registry)?
        else {
            return Ok(None);
        };
        serde_json::from_slice(v.value())
            .map(Some)
            .map_err(StoreError::registry)
    }

    /// The token ids of `id` in `tenant`.
    pub fn ids(&self, tenant: &str, id: &str) -> Result<Option<Vec<u32>>> {
        let txn = self.db.begin_read().map_err(StoreError::registry)?;
        let tokens = txn.open_table(TOKENS).map_err(StoreError::registry)?;
        let Some(v) = tokens
            .get(row_key(tenant, id).as_str())
            .map_err(StoreError::registry)?
        else {
            return Ok(None);
        };
        let ids = v
            .value()
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Some(ids))
    }

    /// Every record of `tenant`, ordered by id.
    pub fn list(&self, tenant: &str) -> Result<Vec<DocumentRecord>> {
        self.list_after(tenant, None, usize::MAX)
    }

    /// At most `limit` records of `tenant` with ids after `after`, ordered
    /// by id; only those rows are read.
    pub fn list_after(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DocumentRecord>> {
        use std::ops::Bound;
        let txn = self.db.begin_read().map_err(StoreError::registry)?;
        let docs = txn.open_table(DOCUMENTS).map_err(StoreError::registry)?;
        let from = match after {
            Some(id) => row_key(tenant, id),
            None => format!("{tenant}\0"),
        };
        let start = if after.is_some() {
            Bound::Excluded(from.as_str())
        } else {
            Bound::Included(from.as_str())
        };
        let end = format!("{tenant}\u{1}");
        let mut out = Vec::new();
        for row in docs
            .range::<&str>((start, Bound::Excluded(end.as_str())))
            .map_err(StoreError::registry)?
            .take(limit)
        {
            let (_, v) = row.map_err(StoreError::registry)?;
            out.push(serde_json::from_slice(v.value()).map_err(StoreError::registry)?);
        }
        Ok(out)
    }

    /// Removes `id` from `tenant`; returns the removed record.
    pub fn remove(&self, tenant: &str, id: &str) -> Result<Option<DocumentRecord>> {
        let key = row_key(tenant, id);
        let txn = self.db.begin_write().map_err(StoreError::registry)?;
        let removed = {
            let mut docs = txn.open_table(DOCUMENTS).map_err(StoreError::registry)?;
            let removed = docs.remove(key.as_str()).map_err(StoreError::registry)?;
            let removed = match removed {
                Some(v) => Some(serde_json::from_slice(v.value()).map_err(StoreError::registry)?),
                None => None,
            };
            let mut tokens = txn.open_table(TOKENS).map_err(StoreError::registry)?;
            tokens.remove(key.as_str()).map_err(StoreError::registry)?;
            removed
        };
        txn.commit().map_err(StoreError::registry)?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(text: &str) -> DocumentRecord {
        serde_json::from_value(serde_json::json!({
            "tenant": "t", "id": "d", "name": "d", "text": text, "metadata": null,
            "tokens": 1, "created": 1, "ready": false, "key": ""
        }))
        .unwrap()
    }

    #[test]
    fn a_document_deleted_or_re_registered_meanwhile_is_not_marked_ready() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(&dir.path().join("r.redb")).unwrap();
        let before = record("old");
        let mut ready = before.clone();
        ready.ready = true;
        reg.put(&before, &[1]).unwrap();
        reg.put(&record("new"), &[2]).unwrap(); // re-registered with new text
        assert!(!reg.update_if_unchanged(&before, &ready).unwrap());
        assert_eq!(reg.get("t", "d").unwrap().unwrap().text, "new");
        reg.put(&before, &[1]).unwrap();
        assert!(reg.update_if_unchanged(&before, &ready).unwrap());
        assert!(reg.get("t", "d").unwrap().unwrap().ready);
    }
}
