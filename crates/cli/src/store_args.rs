//! Command-line options of the document store (shared by subcommands). Each
//! overrides the config file's `[store]` value when given.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use prophetkv_store::{KvDtype, RemoteConfig, StoreConfig, TenantQuota};

use crate::config_file::StoreSection;

/// Where documents and their caches are kept.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Registry and disk blobs [default: data].
    #[arg(long, env = "PROPHETKV_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Host memory tier budget, MiB; 0 disables it [default: 2048].
    #[arg(long, env = "PROPHETKV_HOST_BUDGET_MB")]
    host_budget_mb: Option<u64>,
    /// Disk tier budget, MiB [default: 20480].
    #[arg(long, env = "PROPHETKV_DISK_BUDGET_MB")]
    disk_budget_mb: Option<u64>,
    /// Redis tier shared by replicas, e.g. redis://127.0.0.1:6379/ [default: none].
    #[arg(long, env = "PROPHETKV_REDIS_URL")]
    redis_url: Option<String>,
    /// Redis tier budget, MiB [default: 8192].
    #[arg(long, env = "PROPHETKV_REDIS_BUDGET_MB")]
    redis_budget_mb: Option<u64>,
    /// Key prefix in Redis, one per deployment [default: prophetkv].
    #[arg(long, env = "PROPHETKV_REDIS_PREFIX")]
    redis_prefix: Option<String>,
    /// Element type of stored K/V: f16, bf16 or f32 [default: f16].
    #[arg(long, env = "PROPHETKV_KV_DTYPE")]
    kv_dtype: Option<String>,
    /// Most documents one tenant may keep registered; 0: no limit [default: 100000].
    #[arg(long, env = "PROPHETKV_TENANT_MAX_DOCUMENTS")]
    tenant_max_documents: Option<u64>,
    /// Most tokens over all of one tenant's documents; 0: no limit [default: 0].
    #[arg(long, env = "PROPHETKV_TENANT_MAX_TOKENS")]
    tenant_max_tokens: Option<u64>,
}

impl StoreArgs {
    /// Each tenant's storage quota: these options over `file`'s values.
    pub fn quota(&self, file: &StoreSection) -> TenantQuota {
        TenantQuota {
            max_documents: self
                .tenant_max_documents
                .unwrap_or(file.tenant_max_documents),
            max_tokens: self.tenant_max_tokens.unwrap_or(file.tenant_max_tokens),
        }
    }

    /// These options over `file`'s values.
    pub fn config(&self, file: StoreSection) -> anyhow::Result<StoreConfig> {
        const MIB: u64 = 1 << 20;
        let redis_url = self.redis_url.clone().unwrap_or(file.redis_url);
        let kv_dtype = match self.kv_dtype.clone().unwrap_or(file.kv_dtype).as_str() {
            "f16" => KvDtype::F16,
            "bf16" => KvDtype::Bf16,
            "f32" => KvDtype::F32,
            other => bail!("kv_dtype must be f16, bf16 or f32, got {other:?}"),
        };
        Ok(StoreConfig {
            data_dir: self.data_dir.clone().unwrap_or(file.data_dir),
            host_budget: self.host_budget_mb.unwrap_or(file.host_budget_mb) * MIB,
            disk_budget: self.disk_budget_mb.unwrap_or(file.disk_budget_mb) * MIB,
            remote: (!redis_url.is_empty()).then(|| RemoteConfig {
                url: redis_url,
                budget: self.redis_budget_mb.unwrap_or(file.redis_budget_mb) * MIB,
                prefix: self.redis_prefix.clone().unwrap_or(file.redis_prefix),
            }),
            kv_dtype,
        })
    }
}
