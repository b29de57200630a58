//! One blob file per cache under `<dir>/`, within a byte budget.
//!
//! Writes go to a temporary file that is fsynced and renamed into place, so a
//! crash leaves either the old state or the whole new blob; leftover
//! temporary files are deleted when the tier opens. Least-recently-used blobs
//! are evicted past the budget, after being offered to the caller (to demote).

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{BlobTier, Tier};
use crate::key::CacheKey;
use crate::{Result, StoreError};

const EXT: &str = "kv";

struct Index {
    /// Size and last-use tick of every blob.
    entries: HashMap<CacheKey, (u64, u64)>,
    used: u64,
    tick: u64,
}

/// Blob files on local disk.
pub struct DiskTier {
    dir: PathBuf,
    budget: u64,
    index: Mutex<Index>,
}

impl DiskTier {
    /// Opens `dir` (created if missing), indexing the blobs already there.
    pub fn open(dir: &Path, budget: u64) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let mut entries = HashMap::new();
        let mut used = 0;
        for entry in fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
            let path = entry.map_err(|e| StoreError::io(dir, e))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.contains(".tmp") {
                // An interrupted write: never complete, never served.
                let _ = fs::remove_file(&path);
                continue;
            }
            let key = name.strip_suffix(".kv").and_then(CacheKey::from_hex);
            if let Some(key) = key {
                let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                used += size;
                entries.insert(key, (size, 0));
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            budget,
            index: Mutex::new(Index {
                entries,
                used,
                tick: 0,
            }),
        })
    }

    fn path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("{}.{EXT}", key.hex()))
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        // A panic while holding the lock cannot leave the index inconsistent
        // with anything but a cached size, so a poisoned lock is still usable.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The blob under `key`, if present.
    fn read(&self, key: &CacheKey) -> Result<Option<Vec<u8>>> {
        {
            let mut index = self.index();
            index.tick += 1;
            let tick = index.tick;
            match index.entries.get_mut(key) {
                Some(e) => e.1 = tick,
                None => return Ok(None),
            }
        }
        let path = self.path(key);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.forget(key);
                Ok(None)
            }
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    /// Writes `bytes` under `key` atomically, then evicts least-recently-used
    /// blobs past the budget and returns them. A blob larger than the whole
    /// budget is not stored.
    fn write(&self, key: &CacheKey, bytes: &[u8]) -> Result<Vec<(CacheKey, Vec<u8>)>> {
        let size = bytes.len() as u64;
        if size > self.budget {
            return Ok(Vec::new());
        }
        let path = self.path(key);
        let tmp = self
            .dir
            .join(format!("{}.tmp{}", key.hex(), std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(&self.dir)?.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io(path, e));
        }
        let victims = {
            let mut index = self.index();
            index.tick += 1;
            let tick = index.tick;
            if let Some((old, _)) = index.entries.insert(*key, (size, tick)) {
                index.used -= old;
            }
            index.used += size;
            let mut victims = Vec::new();
            while index.used > self.budget {
                let Some((&victim, &(vsize, _))) = index
                    .entries
                    .iter()
                    .filter(|(k, _)| *k != key)
                    .min_by_key(|(_, (_, t))| *t)
                else {
                    break;
                };
                index.entries.remove(&victim);
                index.used -= vsize;
                victims.push(victim);
            }
            victims
        };
        let mut evicted = Vec::with_capacity(victims.len());
        for victim in victims {
            let vpath = self.path(&victim);
            if let Ok(bytes) = fs::read(&vpath) {
                evicted.push((victim, bytes));
            }
            let _ = fs::remove_file(&vpath);
        }
        Ok(evicted)
    }

    /// Deletes the blob under `key`.
    fn delete(&self, key: &CacheKey) -> Result<()> {
        self.forget(key);
        match fs::remove_file(self.path(key)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(self.path(key), e)),
        }
    }

    fn forget(&self, key: &CacheKey) {
        let mut index = self.index();
        if let Some((size, _)) = index.entries.remove(key) {
            index.used -= size;
        }
    }

    /// The file a key's blob lives in (for tests and tools).
    pub fn blob_path(&self, key: &CacheKey) -> PathBuf {
        self.path(key)
    }
}

impl BlobTier for DiskTier {
    fn tier(&self) -> Tier {
        Tier::Disk
    }

    fn get_blob(&self, key: &CacheKey) -> Result<Option<Vec<u8>>> {
        self.read(key)
    }

    fn contains_blob(&self, key: &CacheKey) -> Result<bool> {
        Ok(self.index().entries.contains_key(key))
    }

    fn put_blob(&self, key: &CacheKey, bytes: &[u8]) -> Result<Vec<(CacheKey, Vec<u8>)>> {
        self.write(key, bytes)
    }

    fn remove_blob(&self, key: &CacheKey) -> Result<()> {
        self.delete(key)
    }

    fn stored_bytes(&self) -> Result<u64> {
        Ok(self.index().used)
    }
}
