//! Task files: JSONL, one task a line (DESIGN.md §7).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{EvalError, Result};

/// How a prediction is scored against `answers`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Match {
    /// Correct when any answer occurs in the prediction (the format's default).
    #[default]
    Any,
    /// Correct when every answer occurs (multi-value tasks).
    All,
}

impl Match {
    fn is_any(&self) -> bool {
        *self == Match::Any
    }
}

/// One task: the prompt is BOS, `prefix`, each document as its own segment,
/// then `question`, which ends where the answer starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Unique within its file.
    pub id: String,
    /// The kind of task (groups results).
    pub task: String,
    /// Text after BOS, before the documents.
    pub prefix: String,
    /// The documents, each with its own header and trailing blank line.
    pub documents: Vec<String>,
    /// The question, ending where the answer starts.
    pub question: String,
    /// Accepted answers.
    pub answers: Vec<String>,
    /// Scoring rule; absent means `any`.
    #[serde(default, rename = "match", skip_serializing_if = "Match::is_any")]
    pub match_mode: Match,
}

impl Task {
    fn check(&self) -> std::result::Result<(), String> {
        if self.id.is_empty() {
            return Err("empty id".into());
        }
        if self.documents.is_empty() {
            return Err("no documents".into());
        }
        if let Some(i) = self.documents.iter().position(String::is_empty) {
            return Err(format!("document {i} is empty"));
        }
        if self.question.is_empty() {
            return Err("empty question".into());
        }
        if self.answers.is_empty() || self.answers.iter().any(|a| a.trim().is_empty()) {
            return Err("answers must be a non-empty list of non-empty strings".into());
        }
        Ok(())
    }
}

/// Reads a task file; any malformed line is an error naming it, and ids
/// must be unique.
pub fn load_tasks(path: &Path) -> Result<Vec<Task>> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut tasks: Vec<Task> = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| EvalError::TaskLine {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let task: Task = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        task.check().map_err(bad)?;
        if !ids.insert(task.id.clone()) {
            return Err(bad(format!("duplicate id {:?}", task.id)));
        }
        tasks.push(task);
    }
    if tasks.is_empty() {
        return Err(EvalError::Invalid(format!(
            "{} holds no tasks",
            path.display()
        )));
    }
    Ok(tasks)
}

/// Writes `tasks` as JSONL (to a temporary file first, then renamed, so a
/// reader never sees half a file).
pub fn write_tasks(path: &Path, tasks: &[Task]) -> Result<()> {
    let io = |source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("jsonl.tmp");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
    for t in tasks {
        let line = serde_json::to_string(t).map_err(|e| EvalError::Invalid(e.to_string()))?;
        writeln!(f, "{line}").map_err(io)?;
    }
    f.flush().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str) -> String {
        format!(
            r#"{{"id": "{id}", "task": "t", "prefix": "p", "documents": ["d"], "question": "q", "answers": ["a"]}}"#
        )
    }

    #[test]
    fn a_file_in_the_shared_format_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        std::fs::write(&path, format!("{}\n\n{}\n", line("a"), line("b"))).unwrap();
        let tasks = load_tasks(&path).unwrap();
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[1].match_mode, Match::Any);
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        for (bad, reason) in [
            ("{not json", "line 2"),
            (
                r#"{"id": "x", "task": "t", "prefix": "", "documents": [], "question": "q", "answers": ["a"]}"#,
                "no documents",
            ),
            (
                r#"{"id": "x", "task": "t", "prefix": "", "documents": ["d"], "question": "q", "answers": []}"#,
                "answers",
            ),
            (&line("a"), "duplicate id"),
        ] {
            std::fs::write(&path, format!("{}\n{bad}\n", line("a"))).unwrap();
            let err = load_tasks(&path).unwrap_err().to_string();
            assert!(err.contains("line 2") && err.contains(reason), "{err}");
        }
    }

    #[test]
    fn written_tasks_read_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut task: Task = serde_json::from_str(&line("a")).unwrap();
        task.match_mode = Match::All;
        write_tasks(&path, std::slice::from_ref(&task)).unwrap();
        assert_eq!(load_tasks(&path).unwrap(), vec![task]);
    }
}
