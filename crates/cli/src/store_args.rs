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
    /// Device (GPU) memory tier budget, MiB, used when the model runs on a
    /// GPU; 0 disables it [default: 2048].
    #[arg(long, env = "PROPHETKV_DEVICE_BUDGET_MB")]
    device_budget_mb: Option<u64>,
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

    /// These options over `file`'s values, for a model on `device` (`cpu`,
    /// `cuda`, `cuda:N`): the device tier is on only for a GPU (on the CPU
    /// it would be a second copy in the host tier's memory).
    pub fn config(&self, file: StoreSection, device: &str) -> anyhow::Result<StoreConfig> {
        const MIB: u64 = 1 << 20;
        let redis_url = self.redis_url.clone().unwrap_or(file.redis_url);
        let kv_dtype = match self.kv_dtype.clone().unwrap_or(file.kv_dtype).as_str() {
            "f16" => KvDtype::F16,
            "bf16" => KvDtype::Bf16,
            "f32" => KvDtype::F32,
            other => bail!("kv_dtype must be f16, bf16 or f32, got {other:?}"),
        };
        let on_cpu = matches!(device.trim(), "" | "cpu");
        let device_budget_mb = if on_cpu {
            0
        } else {
            self.device_budget_mb.unwrap_or(file.device_budget_mb)
        };
        Ok(StoreConfig {
            data_dir: self.data_dir.clone().unwrap_or(file.data_dir),
            device_budget: device_budget_mb * MIB,
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        store: StoreArgs,
    }

    fn config(flags: &[&str], device: &str) -> StoreConfig {
        let cli = Cli::try_parse_from(std::iter::once("prophetkv").chain(flags.iter().copied()))
            .expect("flags parse");
        cli.store
            .config(StoreSection::default(), device)
            .expect("a valid config")
    }

    #[test]
    fn the_device_tier_takes_its_budget_on_a_gpu_only() {
        const MIB: u64 = 1 << 20;
        assert_eq!(config(&[], "cuda").device_budget, 2048 * MIB);
        let flag = ["--device-budget-mb", "64"];
        assert_eq!(config(&flag, "cuda:1").device_budget, 64 * MIB);
        assert_eq!(config(&flag, "cpu").device_budget, 0);
        assert_eq!(config(&[], "").device_budget, 0);
    }
}
