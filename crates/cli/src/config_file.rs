//! `config/default.toml`: the serve configuration file (see that file for
//! what each key means). Missing keys take the defaults below.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub server: ServerSection,
    pub model: ModelSection,
    pub reuse: ReuseSection,
    pub engine: EngineSection,
    pub store: StoreSection,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    pub host: String,
    pub port: u16,
    pub api_keys: Vec<String>,
    pub max_body_mb: usize,
    pub shutdown_grace_secs: u64,
    pub header_read_timeout_secs: u64,
    pub body_read_timeout_secs: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            api_keys: Vec::new(),
            max_body_mb: 8,
            shutdown_grace_secs: 30,
            header_read_timeout_secs: 30,
            body_read_timeout_secs: 60,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    pub path: PathBuf,
    pub name: String,
    pub dtype: String,
    pub device: String,
    pub instruction: String,
    /// Text every document is cached behind ("": none; docs/DESIGN.md).
    pub preamble: String,
    pub chat_template: String,
    /// A shape whose random weights are served instead of `path` ("": none).
    pub random_weights: String,
    pub random_seed: u64,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            path: crate::generate::DEFAULT_MODEL.into(),
            name: "gemma-3-270m".into(),
            dtype: "mixed-bf16".into(),
            device: "cpu".into(),
            instruction: "Read the documents below and answer the question at the end.\n\n".into(),
            preamble: String::new(),
            chat_template: String::new(),
            random_weights: String::new(),
            random_seed: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReuseSection {
    pub strategy: String,
    pub recompute_ratio: f64,
    pub fusion: String,
    pub spread: Option<usize>,
}

impl Default for ReuseSection {
    fn default() -> Self {
        Self {
            strategy: "prophetkv".into(),
            recompute_ratio: 0.2,
            fusion: "auto".into(),
            spread: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    pub max_batch: usize,
    pub max_queue: usize,
    pub max_prefills_per_step: usize,
    pub chat_max_tokens: usize,
    pub max_documents: usize,
    pub max_document_tokens: usize,
}

impl Default for EngineSection {
    fn default() -> Self {
        Self {
            max_batch: 16,
            max_queue: 64,
            max_prefills_per_step: 2,
            chat_max_tokens: 256,
            max_documents: prophetkv_engine::validate::DEFAULT_MAX_DOCUMENTS,
            max_document_tokens: 0,
        }
    }
}

/// Documents one tenant may keep registered unless configured otherwise.
pub const DEFAULT_TENANT_MAX_DOCUMENTS: u64 = 100_000;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    pub data_dir: PathBuf,
    pub device_budget_mb: u64,
    pub host_budget_mb: u64,
    pub disk_budget_mb: u64,
    pub redis_url: String,
    pub redis_budget_mb: u64,
    pub redis_prefix: String,
    pub kv_dtype: String,
    pub tenant_max_documents: u64,
    pub tenant_max_tokens: u64,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            data_dir: "data".into(),
            device_budget_mb: 2048,
            host_budget_mb: 2048,
            disk_budget_mb: 20480,
            redis_url: String::new(),
            redis_budget_mb: 8192,
            redis_prefix: "prophetkv".into(),
            kv_dtype: "f16".into(),
            tenant_max_documents: DEFAULT_TENANT_MAX_DOCUMENTS,
            tenant_max_tokens: 0,
        }
    }
}

impl FileConfig {
    /// Reads `path`, or the defaults when no file is given.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_default_file_equals_the_built_in_defaults() {
        let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/default.toml");
        let parsed = FileConfig::load(Some(&file)).unwrap();
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", FileConfig::default())
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml::from_str::<FileConfig>("[server]\nprot = 1").is_err());
    }
}
