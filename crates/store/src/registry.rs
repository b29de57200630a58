//! The document registry: an embedded redb database, and its journal.
//!
//! redb was chosen over SQLite because it is pure Rust (no C build, no
//! system library), ACID with copy-on-write pages (a crash leaves the last
//! committed state, never a torn one), and the registry needs only two
//! key-value tables, not SQL. Keys are `tenant \0 id`, so a tenant's
//! documents are one contiguous range and no lookup can cross tenants.
//!
//! Every change is first appended to the [`Journal`] beside the database.
//! At open the database's page checksums are verified; a file that fails
//! them, cannot be opened, or lost its records (truncated to nothing) is
//! moved aside and rebuilt from the journal, so no registered document is
//! lost to damage at rest.

use std::path::Path;
use std::sync::Mutex;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::journal::{Change, Journal, Replayed};
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
    /// Held while a change is journalled and committed, so both see the
    /// changes in one order.
    journal: Mutex<Journal>,
}

fn row_key(tenant: &str, id: &str) -> String {
    format!("{tenant}\0{id}")
}

fn encode_ids(ids: &[u32]) -> Vec<u8> {
    ids.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn decode_ids(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The database at `path` with its tables, if it opens and passes redb's
/// integrity check; otherwise why not.
fn open_checked(path: &Path) -> std::result::Result<Database, String> {
    let mut db = Database::create(path).map_err(|e| e.to_string())?;
    match db.check_integrity() {
        Ok(true) => {}
        Ok(false) => return Err("it failed its integrity check (redb repaired it)".into()),
        Err(e) => return Err(e.to_string()),
    }
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    txn.open_table(DOCUMENTS).map_err(|e| e.to_string())?;
    txn.open_table(TOKENS).map_err(|e| e.to_string())?;
    txn.commit().map_err(|e| e.to_string())?;
    Ok(db)
}

/// A new database at `path` holding `contents`; a damaged file there is
/// kept beside it as `<name>.damaged-<unix seconds>`.
fn rebuild(path: &Path, contents: &Replayed) -> Result<Database> {
    if path.exists() {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let aside = path.with_extension(format!("redb.damaged-{stamp}"));
        std::fs::rename(path, &aside).map_err(|e| StoreError::io(path, e))?;
    }
    let db = Database::create(path).map_err(StoreError::registry)?;
    let txn = db.begin_write().map_err(StoreError::registry)?;
    {
        let mut docs = txn.open_table(DOCUMENTS).map_err(StoreError::registry)?;
        let mut tokens = txn.open_table(TOKENS).map_err(StoreError::registry)?;
        for ((tenant, id), (record, ids)) in contents {
            let key = row_key(tenant, id);
            let json = serde_json::to_vec(record).map_err(StoreError::registry)?;
            docs.insert(key.as_str(), json.as_slice())
                .map_err(StoreError::registry)?;
            tokens
                .insert(key.as_str(), encode_ids(ids).as_slice())
                .map_err(StoreError::registry)?;
        }
    }
    txn.commit().map_err(StoreError::registry)?;
    Ok(db)
}

impl Registry {
    /// Opens (or creates) the registry at `path` with its journal beside it
    /// (`registry.journal`), rebuilding a damaged database from the journal.
    pub fn open(path: &Path) -> Result<Self> {
        let journal = Journal::open(&path.with_extension("journal"))?;
        let db = match open_checked(path) {
            Ok(db) if journal.is_empty() || count(&db)? > 0 => db,
            Ok(db) => {
                drop(db);
                let contents = journal.replay()?;
                tracing::warn!(
                    path = %path.display(), documents = contents.len(),
                    "the registry holds no document but its journal does: rebuilding it"
                );
                rebuild(path, &contents)?
            }
            Err(reason) => {
                let contents = journal.replay()?;
                tracing::error!(
                    path = %path.display(), %reason, documents = contents.len(),
                    "the registry is damaged: rebuilt from its journal, the damaged file kept beside it"
                );
                rebuild(path, &contents)?
            }
        };
        let registry = Self {
            db,
            journal: Mutex::new(journal),
        };
        registry.compact_journal()?;
        Ok(registry)
    }

    /// Rewrites the journal from the database when it is empty beside a
    /// database with records (one made before journals), or much longer
    /// than the database.
    fn compact_journal(&self) -> Result<()> {
        let mut journal = self.lock();
        let live = count(&self.db)?;
        if (journal.is_empty() && live > 0) || journal.wants_compaction(live) {
            journal.rewrite(&self.contents()?)?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Journal> {
        // A panic while holding it cannot leave the journal torn (appends
        // cut partial lines), so a poisoned lock is still usable.
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Everything the database holds.
    fn contents(&self) -> Result<Replayed> {
        let txn = self.db.begin_read().map_err(StoreError::registry)?;
        let docs = txn.open_table(DOCUMENTS).map_err(StoreError::registry)?;
        let tokens = txn.open_table(TOKENS).map_err(StoreError::registry)?;
        let mut out = Replayed::new();
        for row in docs.iter().map_err(StoreError::registry)? {
            let (key, value) = row.map_err(StoreError::registry)?;
            let record: DocumentRecord =
                serde_json::from_slice(value.value()).map_err(StoreError::registry)?;
            let ids = tokens
                .get(key.value())
                .map_err(StoreError::registry)?
                .map(|v| decode_ids(v.value()))
                .unwrap_or_default();
            out.insert((record.tenant.clone(), record.id.clone()), (record, ids));
        }
        Ok(out)
    }

    /// Commits `txn` after journalling `change`. Should the commit fail
    /// after the journal took the change, the journal is told what the
    /// database still holds for that row, so the two agree again.
    fn commit(
        &self,
        journal: &mut Journal,
        txn: redb::WriteTransaction,
        change: &Change,
        (tenant, id): (&str, &str),
    ) -> Result<()> {
        journal.append(change)?;
        if let Err(e) = txn.commit() {
            let undo = match (self.get(tenant, id), self.ids(tenant, id)) {
                (Ok(Some(record)), Ok(Some(ids))) => Some(Change::Put { record, ids }),
                (Ok(None), _) => Some(Change::Remove {
                    tenant: tenant.to_string(),
                    id: id.to_string(),
                }),
                _ => None,
            };
            if let Some(undo) = undo {
                if let Err(j) = journal.append(&undo) {
                    tracing::error!(%j, "the journal could not take back a change the registry refused");
                }
            }
            return Err(StoreError::registry(e));
        }
        Ok(())
    }

    /// Inserts or replaces a record and its token ids, atomically.
    pub fn put(&self, record: &DocumentRecord, ids: &[u32]) -> Result<()> {
        let key = row_key(&record.tenant, &record.id);
        let json = serde_json::to_vec(record).map_err(StoreError::registry)?;
        let mut journal = self.lock();
        let txn = self.db.begin_write().map_err(StoreError::registry)?;
        {
            let mut docs = txn.open_table(DOCUMENTS).map_err(StoreError::registry)?;
            docs.insert(key.as_str(), json.as_slice())
                .map_err(StoreError::registry)?;
            let mut tokens = txn.open_table(TOKENS).map_err(StoreError::registry)?;
            tokens
                .insert(key.as_str(), encode_ids(ids).as_slice())
                .map_err(StoreError::registry)?;
        }
        let change = Change::Put {
            record: record.clone(),
            ids: ids.to_vec(),
        };
        self.commit(&mut journal, txn, &change, (&record.tenant, &record.id))
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
        let mut journal = self.lock();
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
        if !replaced {
            return Ok(false);
        }
        let change = Change::Update {
            record: after.clone(),
        };
        self.commit(&mut journal, txn, &change, (&after.tenant, &after.id))?;
        Ok(true)
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
        Ok(Some(decode_ids(v.value())))
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

    /// How many documents `tenant` has and their tokens in all, read from
    /// the token rows alone (4 bytes per token; no record is decoded).
    pub fn usage(&self, tenant: &str) -> Result<(u64, u64)> {
        let txn = self.db.begin_read().map_err(StoreError::registry)?;
        let tokens = txn.open_table(TOKENS).map_err(StoreError::registry)?;
        let (start, end) = (format!("{tenant}\0"), format!("{tenant}\u{1}"));
        let (mut documents, mut total) = (0u64, 0u64);
        for row in tokens
            .range::<&str>(start.as_str()..end.as_str())
            .map_err(StoreError::registry)?
        {
            let (_, v) = row.map_err(StoreError::registry)?;
            documents += 1;
            total += v.value().len() as u64 / 4;
        }
        Ok((documents, total))
    }

    /// Removes `id` from `tenant`; returns the removed record.
    pub fn remove(&self, tenant: &str, id: &str) -> Result<Option<DocumentRecord>> {
        let key = row_key(tenant, id);
        let mut journal = self.lock();
        let txn = self.db.begin_write().map_err(StoreError::registry)?;
        let removed = {
            let mut docs = txn.open_table(DOCUMENTS).map_err(StoreError::registry)?;
            let removed = docs.remove(key.as_str()).map_err(StoreError::registry)?;
            let removed: Option<DocumentRecord> = match removed {
                Some(v) => Some(serde_json::from_slice(v.value()).map_err(StoreError::registry)?),
                None => None,
            };
            let mut tokens = txn.open_table(TOKENS).map_err(StoreError::registry)?;
            tokens.remove(key.as_str()).map_err(StoreError::registry)?;
            removed
        };
        if removed.is_none() {
            return Ok(None);
        }
        let change = Change::Remove {
            tenant: tenant.to_string(),
            id: id.to_string(),
        };
        self.commit(&mut journal, txn, &change, (tenant, id))?;
        Ok(removed)
    }
}

/// Records in the database.
fn count(db: &Database) -> Result<usize> {
    let txn = db.begin_read().map_err(StoreError::registry)?;
    let docs = txn.open_table(DOCUMENTS).map_err(StoreError::registry)?;
    let n = docs.len().map_err(StoreError::registry)?;
    Ok(n as usize)
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
