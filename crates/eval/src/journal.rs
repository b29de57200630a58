//! The run directory's journal: every finished task's outcomes are appended
//! to `runs.jsonl` at once, so an interrupted eval resumes where it stopped.
//! `config.json` pins what the outcomes were measured with; a directory of
//! a different run is refused rather than mixed.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::run::{Arm, Outcome};
use crate::{EvalError, Result};

const CONFIG: &str = "config.json";
const RUNS: &str = "runs.jsonl";

/// Outcomes so far, and the file new ones are appended to.
pub struct Journal {
    path: PathBuf,
    file: File,
    done: HashMap<(String, String), Outcome>,
    /// The file ends with a complete line that lacks its newline.
    needs_newline: bool,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> EvalError + '_ {
    move |source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a journal file holds. Every complete line must parse; the last line
/// may be torn by a crash (cut short, even inside a character), and then it
/// lies outside the valid prefix.
struct JournalFile {
    outcomes: Vec<Outcome>,
    /// Bytes up to the end of the last line that parsed.
    valid_bytes: u64,
    /// Bytes in the file.
    total_bytes: u64,
    /// The valid prefix ends with a line that parsed but lacks its newline.
    ends_open: bool,
}

fn read_journal(path: &Path) -> Result<JournalFile> {
    if !path.is_file() {
        return Ok(JournalFile {
            outcomes: Vec::new(),
            valid_bytes: 0,
            total_bytes: 0,
            ends_open: false,
        });
    }
    let bytes = std::fs::read(path).map_err(io(path))?;
    let mut outcomes = Vec::new();
    let mut valid = 0usize;
    let mut ends_open = false;
    let mut start = 0usize;
    let mut line_no = 0;
    while start < bytes.len() {
        line_no += 1;
        let end = bytes[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| start + i);
        let line = &bytes[start..end.unwrap_or(bytes.len())];
        match (serde_json::from_slice::<Outcome>(line), end) {
            (Ok(o), Some(end)) => {
                outcomes.push(o);
                valid = end + 1;
                start = end + 1;
            }
            // The last line, complete but for its newline: keep it and let
            // the next append add the newline.
            (Ok(o), None) => {
                outcomes.push(o);
                valid = bytes.len();
                ends_open = true;
                break;
            }
            (Err(_), None) => break,
            (Err(e), Some(_)) => {
                return Err(EvalError::Invalid(format!(
                    "{} line {line_no} is corrupt: {e}",
                    path.display()
                )))
            }
        }
    }
    Ok(JournalFile {
        outcomes,
        valid_bytes: valid as u64,
        total_bytes: bytes.len() as u64,
        ends_open,
    })
}

impl Journal {
    /// Opens (or starts) the journal in `dir` for a run described by `config`.
    pub fn open(dir: &Path, config: &impl Serialize) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let config = serde_json::to_value(config).map_err(|e| EvalError::Invalid(e.to_string()))?;
        let config_path = dir.join(CONFIG);
        if config_path.is_file() {
            let text = std::fs::read_to_string(&config_path).map_err(io(&config_path))?;
            let stored: Value = serde_json::from_str(&text).map_err(|e| {
                EvalError::Invalid(format!("{} is corrupt: {e}", config_path.display()))
            })?;
            if stored != config {
                return Err(EvalError::Invalid(format!(
                    "{} holds results of a different run (tasks, model or options differ); use another --out",
                    dir.display()
                )));
            }
        } else {
            let text = serde_json::to_string_pretty(&config)
                .map_err(|e| EvalError::Invalid(e.to_string()))?;
            std::fs::write(&config_path, text).map_err(io(&config_path))?;
        }
        let path = dir.join(RUNS);
        let mut done = HashMap::new();
        let journal = read_journal(&path)?;
        for o in journal.outcomes {
            done.insert((o.id.clone(), o.arm.label()), o);
        }
        if journal.valid_bytes < journal.total_bytes {
            // Cut a torn last line (the task is redone), so that appends start
            // on a fresh line; truncation cannot lose the lines before it.
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io(&path))?;
            f.set_len(journal.valid_bytes).map_err(io(&path))?;
            f.sync_data().map_err(io(&path))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        Ok(Self {
            path,
            file,
            done,
            needs_newline: journal.ends_open,
        })
    }

    /// The outcomes recorded in `dir` so far, read without opening the
    /// journal for writing (a torn last line is skipped).
    pub fn read_outcomes(dir: &Path) -> Result<Vec<Outcome>> {
        Ok(read_journal(&dir.join(RUNS))?.outcomes)
    }

    /// Whether `arm` already ran on task `id`.
    pub fn is_done(&self, id: &str, arm: &Arm) -> bool {
        self.done.contains_key(&(id.to_string(), arm.label()))
    }

    /// Appends `outcomes` and syncs them to disk.
    pub fn record(&mut self, outcomes: &[Outcome]) -> Result<()> {
        let mut text = String::new();
        if self.needs_newline {
            text.push('\n');
            self.needs_newline = false;
        }
        for o in outcomes {
            text.push_str(
                &serde_json::to_string(o).map_err(|e| EvalError::Invalid(e.to_string()))?,
            );
            text.push('\n');
        }
        self.file
            .write_all(text.as_bytes())
            .map_err(io(&self.path))?;
        self.file.sync_data().map_err(io(&self.path))?;
        for o in outcomes {
            self.done.insert((o.id.clone(), o.arm.label()), o.clone());
        }
        Ok(())
    }

    /// The outcome of `arm` on task `id`, if it ran.
    pub fn get(&self, id: &str, arm: &Arm) -> Option<&Outcome> {
        self.done.get(&(id.to_string(), arm.label()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prophetkv_reuse::StrategyKind;

    fn outcome(id: &str, prediction: &str) -> Outcome {
        Outcome {
            id: id.into(),
            task: "k".into(),
            arm: Arm {
                strategy: StrategyKind::Full,
                ratio: None,
            },
            prediction: prediction.into(),
            correct: true,
            recall: None,
            gold_logprob: None,
            ttft_ms: 1.0,
            context_tokens: 10,
            eligible: 0,
            selected: 0,
            layer_rows: 0,
            probe_ms: 0.0,
            recompute_ms: 0.0,
        }
    }

    #[test]
    fn a_line_torn_inside_a_character_is_redone_and_nothing_before_it_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), &"config").unwrap();
        j.record(&[outcome("a", "Zürich")]).unwrap();
        j.record(&[outcome("b", "Zürich")]).unwrap();
        drop(j);
        let path = dir.path().join(RUNS);
        let bytes = std::fs::read(&path).unwrap();
        let cut = bytes.len() - 1 - bytes.iter().rev().position(|&b| b == 0xC3).unwrap();
        std::fs::write(&path, &bytes[..cut + 1]).unwrap(); // ends inside "ü"
        let mut j = Journal::open(dir.path(), &"config").unwrap();
        assert!(j.is_done("a", &outcome("a", "").arm));
        assert!(!j.is_done("b", &outcome("b", "").arm));
        j.record(&[outcome("b", "Zürich")]).unwrap();
        assert_eq!(Journal::read_outcomes(dir.path()).unwrap().len(), 2);
    }

    #[test]
    fn a_complete_last_line_without_its_newline_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), &"config").unwrap();
        j.record(&[outcome("a", "x")]).unwrap();
        drop(j);
        let path = dir.path().join(RUNS);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.trim_end()).unwrap();
        let mut j = Journal::open(dir.path(), &"config").unwrap();
        assert!(j.is_done("a", &outcome("a", "").arm));
        j.record(&[outcome("b", "y")]).unwrap();
        let ids: Vec<String> = Journal::read_outcomes(dir.path())
            .unwrap()
            .into_iter()
            .map(|o| o.id)
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(Journal::open(dir.path(), &"other").is_err());
    }
}
