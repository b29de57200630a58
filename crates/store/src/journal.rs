//! The registry's journal: every change, appended and synced before the
//! database commits it, so that a registry file damaged at rest (truncated,
//! overwritten) is rebuilt with no registered document lost.
//!
//! One JSON object per line. A line cut short by a crash is the last one
//! and is ignored (its change was never acknowledged: the database commits
//! after the journal). The journal is rewritten from the live registry when
//! it has grown well beyond it, at open.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::registry::DocumentRecord;
use crate::{Result, StoreError};

/// One change to the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A record and its token ids, inserted or replaced.
    Put {
        /// The record.
        record: DocumentRecord,
        /// Its token ids.
        ids: Vec<u32>,
    },
    /// A record's new state, its token ids unchanged.
    Update {
        /// The record.
        record: DocumentRecord,
    },
    /// A record removed.
    Remove {
        /// Owner.
        tenant: String,
        /// Id.
        id: String,
    },
}

/// The registry's contents as the journal tells them: `(tenant, id)` to the
/// record and its ids.
pub type Replayed = BTreeMap<(String, String), (DocumentRecord, Vec<u32>)>;

/// An append-only file of [`Change`]s.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Changes in the file (for deciding when to compact).
    lines: usize,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::io(path, e)
}

impl Journal {
    /// Opens (or creates) the journal at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io(path))?;
        let (mut lines, mut read, mut whole) = (0, 0u64, 0u64);
        let mut reader = BufReader::new(&file);
        loop {
            let buf = reader.fill_buf().map_err(io(path))?;
            if buf.is_empty() {
                break;
            }
            lines += buf.iter().filter(|&&b| b == b'\n').count();
            if let Some(last) = buf.iter().rposition(|&b| b == b'\n') {
                whole = read + last as u64 + 1;
            }
            let n = buf.len();
            read += n as u64;
            reader.consume(n);
        }
        if whole < read {
            // A line a crash cut short: never acknowledged, and the next
            // change must not be appended to it.
            file.set_len(whole).map_err(io(path))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            lines,
        })
    }

    /// Whether the journal holds no change.
    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// The registry's contents as the journal tells them.
    pub fn replay(&self) -> Result<Replayed> {
        let file = File::open(&self.path).map_err(io(&self.path))?;
        replay(BufReader::new(file), &self.path)
    }

    /// Appends `change` and syncs it to disk; on error the journal is as it was.
    pub fn append(&mut self, change: &Change) -> Result<()> {
        let mut line = serde_json::to_vec(change).map_err(StoreError::registry)?;
        line.push(b'\n');
        let len = self.file.metadata().map_err(io(&self.path))?.len();
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Cut a partial line (disk full) so the next append starts clean.
            let _ = self.file.set_len(len);
            return Err(StoreError::io(&self.path, e));
        }
        self.lines += 1;
        Ok(())
    }

    /// Whether the journal holds many more changes than `live` records.
    pub fn wants_compaction(&self, live: usize) -> bool {
        self.lines > 2 * live + 1024
    }

    /// Replaces the journal with one `Put` per record of `contents`, through
    /// a synced temporary file renamed over it (a crash leaves one or the other).
    pub fn rewrite(&mut self, contents: &Replayed) -> Result<()> {
        let tmp = self.path.with_extension("journal.tmp");
        {
            let mut out = std::io::BufWriter::new(File::create(&tmp).map_err(io(&tmp))?);
            for (record, ids) in contents.values() {
                let change = Change::Put {
                    record: record.clone(),
                    ids: ids.clone(),
                };
                serde_json::to_writer(&mut out, &change).map_err(StoreError::registry)?;
                out.write_all(b"\n").map_err(io(&tmp))?;
            }
            let file = out
                .into_inner()
                .map_err(|e| StoreError::io(&tmp, e.into_error()))?;
            file.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        if let Some(dir) = self.path.parent() {
            // The rename itself must survive a crash.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        self.lines = contents.len();
        Ok(())
    }
}

/// Applies every line of a journal; a line that does not parse is skipped
/// (the last one when a crash cut it short; any other is reported).
fn replay(reader: impl BufRead, path: &Path) -> Result<Replayed> {
    let mut state = Replayed::new();
    let mut bad = 0;
    for line in reader.split(b'\n') {
        let line = line.map_err(io(path))?;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Change>(&line) {
            Ok(change) => apply(&mut state, change),
            Err(_) => bad += 1,
        }
    }
    if bad > 0 {
        tracing::warn!(path = %path.display(), bad, "journal lines that do not parse were skipped");
    }
    Ok(state)
}

fn apply(state: &mut Replayed, change: Change) {
    match change {
        Change::Put { record, ids } => {
            state.insert((record.tenant.clone(), record.id.clone()), (record, ids));
        }
        Change::Update { record } => {
            if let Some(entry) = state.get_mut(&(record.tenant.clone(), record.id.clone())) {
                entry.0 = record;
            }
        }
        Change::Remove { tenant, id } => {
            state.remove(&(tenant, id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, text: &str) -> DocumentRecord {
        serde_json::from_value(serde_json::json!({
            "tenant": "t", "id": id, "name": id, "text": text, "metadata": null,
            "tokens": 1, "created": 1, "ready": false, "key": ""
        }))
        .unwrap()
    }

    #[test]
    fn replay_applies_puts_updates_and_removes_in_order_and_a_torn_last_line_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.journal");
        {
            let mut journal = Journal::open(&path).unwrap();
            assert!(journal.is_empty() && journal.replay().unwrap().is_empty());
            let a = record("a", "alpha");
            journal
                .append(&Change::Put {
                    record: a.clone(),
                    ids: vec![1, 2],
                })
                .unwrap();
            journal
                .append(&Change::Put {
                    record: record("b", "beta"),
                    ids: vec![3],
                })
                .unwrap();
            let ready = DocumentRecord { ready: true, ..a };
            journal.append(&Change::Update { record: ready }).unwrap();
            journal
                .append(&Change::Remove {
                    tenant: "t".into(),
                    id: "b".into(),
                })
                .unwrap();
        }
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"put\":{\"record\":").unwrap();
        let mut journal = Journal::open(&path).unwrap();
        journal
            .append(&Change::Put {
                record: record("c", "gamma"),
                ids: vec![4],
            })
            .unwrap();
        let replayed = journal.replay().unwrap();
        assert_eq!(replayed.len(), 2);
        let (a, ids) = &replayed[&("t".to_string(), "a".to_string())];
        assert!(a.ready);
        assert_eq!(ids, &[1, 2]);
        assert_eq!(journal.lines, 5, "the torn line is cut, the next one kept");
    }

    #[test]
    fn a_rewrite_keeps_exactly_the_live_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.journal");
        let mut journal = Journal::open(&path).unwrap();
        for i in 0..10 {
            let r = record("a", &format!("version {i}"));
            journal
                .append(&Change::Put {
                    record: r,
                    ids: vec![i],
                })
                .unwrap();
        }
        let before = journal.replay().unwrap();
        journal.rewrite(&before).unwrap();
        journal
            .append(&Change::Put {
                record: record("c", "gamma"),
                ids: vec![9],
            })
            .unwrap();
        let reopened = Journal::open(&path).unwrap();
        let after = reopened.replay().unwrap();
        assert_eq!(reopened.lines, 2);
        assert_eq!(after.len(), 2);
        assert_eq!(after[&("t".into(), "a".into())].0.text, "version 9");
    }
}
