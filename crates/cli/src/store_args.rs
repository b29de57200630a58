//! Command-line options of the document store (shared by subcommands).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use prophetkv_store::{KvDtype, RemoteConfig, StoreConfig};

/// Element type of stored keys and values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KvDtypeArg {
    /// Half precision (CPU default).
    F16,
    /// bfloat16 (GPU default).
    Bf16,
    /// Exact.
    F32,
}

/// Where documents and their caches are kept.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Registry and disk blobs.
    #[arg(long, env = "PROPHETKV_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Host memory tier budget, MiB (0 disables it).
    #[arg(long, env = "PROPHETKV_HOST_BUDGET_MB", default_value_t = 2048)]
    host_budget_mb: u64,
    /// Disk tier budget, MiB.
    #[arg(long, env = "PROPHETKV_DISK_BUDGET_MB", default_value_t = 20480)]
    disk_budget_mb: u64,
    /// Redis tier shared by replicas, e.g. redis://127.0.0.1:6379/ (off when unset).
    #[arg(long, env = "PROPHETKV_REDIS_URL")]
    redis_url: Option<String>,
    /// Redis tier budget, MiB.
    #[arg(long, env = "PROPHETKV_REDIS_BUDGET_MB", default_value_t = 8192)]
    redis_budget_mb: u64,
    /// Key prefix in Redis (one per deployment).
    #[arg(long, env = "PROPHETKV_REDIS_PREFIX", default_value = "prophetkv")]
    redis_prefix: String,
    /// Element type of stored K/V.
    #[arg(long, value_enum, env = "PROPHETKV_KV_DTYPE", default_value = "f16")]
    kv_dtype: KvDtypeArg,
}

impl StoreArgs {
    /// The store configuration these options describe.
    pub fn config(&self) -> StoreConfig {
        const MIB: u64 = 1 << 20;
        StoreConfig {
            data_dir: self.data_dir.clone(),
            host_budget: self.host_budget_mb * MIB,
            disk_budget: self.disk_budget_mb * MIB,
            remote: self.redis_url.as_ref().map(|url| RemoteConfig {
                url: url.clone(),
                budget: self.redis_budget_mb * MIB,
                prefix: self.redis_prefix.clone(),
            }),
            kv_dtype: match self.kv_dtype {
                KvDtypeArg::F16 => KvDtype::F16,
                KvDtypeArg::Bf16 => KvDtype::Bf16,
                KvDtypeArg::F32 => KvDtype::F32,
            },
        }
    }
}
