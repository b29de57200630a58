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
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> EvalError + '_ {
    move |source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    }
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
        if path.is_file() {
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                match serde_json::from_str::<Outcome>(line) {
                    Ok(o) => {
                        done.insert((o.id.clone(), o.arm.label()), o);
                    }
                    // A crash mid-write leaves a torn last line: redo that task.
                    Err(_) if i + 1 == lines.len() => {}
                    Err(e) => {
                        return Err(EvalError::Invalid(format!(
                            "{} line {} is corrupt: {e}",
                            path.display(),
                            i + 1
                        )))
                    }
                }
            }
            if !text.is_empty() && !text.ends_with('\n') {
                // Drop the torn line so that appends start on a fresh one.
                let keep: String = lines[..lines.len() - 1]
                    .iter()
                    .map(|l| format!("{l}\n"))
                    .collect();
                std::fs::write(&path, keep).map_err(io(&path))?;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        Ok(Self { path, file, done })
    }

    /// The outcomes recorded in `dir` so far, read without opening the
    /// journal for writing (a torn last line is skipped).
    pub fn read_outcomes(dir: &Path) -> Result<Vec<Outcome>> {
        let path = dir.join(RUNS);
        if !path.is_file() {
            return Ok(Vec::new());
        }
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let lines: Vec<&str> = text.lines().collect();
        let mut out = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            match serde_json::from_str::<Outcome>(line) {
                Ok(o) => out.push(o),
                Err(_) if i + 1 == lines.len() => {}
                Err(e) => {
                    return Err(EvalError::Invalid(format!(
                        "{} line {} is corrupt: {e}",
                        path.display(),
                        i + 1
                    )))
                }
            }
        }
        Ok(out)
    }

    /// Whether `arm` already ran on task `id`.
    pub fn is_done(&self, id: &str, arm: &Arm) -> bool {
        self.done.contains_key(&(id.to_string(), arm.label()))
    }

    /// Appends `outcomes` and syncs them to disk.
    pub fn record(&mut self, outcomes: &[Outcome]) -> Result<()> {
        let mut text = String::new();
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
