//! Blobs in Redis, shared by every replica, within a byte budget.
//!
//! Layout under a key prefix: `<prefix>:kv:<hex>` holds a blob,
//! `<prefix>:sizes` maps hex to size, `<prefix>:lru` orders hex by last use,
//! `<prefix>:bytes` is the total. Puts and evictions run as Lua scripts, so
//! replicas updating the same Redis keep the accounting exact.
//!
//! The store is synchronous (its callers are the engine's worker thread and
//! the ingest command), so this tier uses redis's blocking connection with
//! timeouts; a broken connection is dropped and re-opened on the next call.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::{Connection, Script};

use super::{BlobTier, Tier};
use crate::key::CacheKey;
use crate::{Result, StoreError};

/// Where the remote tier lives and how much it may hold.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Byte budget of all blobs under the prefix.
    pub budget: u64,
    /// Key prefix, shared by the replicas of one deployment.
    pub prefix: String,
}

const PUT: &str = r#"
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then redis.call('DECRBY', KEYS[4], old) end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
local used = redis.call('INCRBY', KEYS[4], ARGV[4])
local budget = tonumber(ARGV[5])
local evicted = 0
while used > budget do
  local victim = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
  if not victim or victim == ARGV[1] then break end
  local size = redis.call('HGET', KEYS[2], victim) or 0
  redis.call('DEL', ARGV[6] .. victim)
  redis.call('HDEL', KEYS[2], victim)
  redis.call('ZREM', KEYS[3], victim)
  used = redis.call('DECRBY', KEYS[4], size)
  evicted = evicted + 1
end
return evicted
"#;

const REMOVE: &str = r#"
local size = redis.call('HGET', KEYS[2], ARGV[1])
if size then redis.call('DECRBY', KEYS[4], size) end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"#;

/// The Redis tier.
pub struct RemoteTier {
    client: redis::Client,
    conn: Mutex<Option<Connection>>,
    config: RemoteConfig,
    put_script: Script,
    remove_script: Script,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl RemoteTier {
    /// Connects to `config.url` (failing now if Redis cannot be reached).
    pub fn connect(config: RemoteConfig) -> Result<Self> {
        let client = redis::Client::open(config.url.as_str()).map_err(StoreError::redis)?;
        let tier = Self {
            client,
            conn: Mutex::new(None),
            config,
            put_script: Script::new(PUT),
            remove_script: Script::new(REMOVE),
        };
        tier.with_conn(|c| redis::cmd("PING").query::<String>(c))?;
        Ok(tier)
    }

    fn keys(&self, key: &CacheKey) -> [String; 4] {
        let p = &self.config.prefix;
        [
            format!("{p}:kv:{}", key.hex()),
            format!("{p}:sizes"),
            format!("{p}:lru"),
            format!("{p}:bytes"),
        ]
    }

    fn with_conn<T>(&self, op: impl Fn(&mut Connection) -> redis::RedisResult<T>) -> Result<T> {
        let mut slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let c = self
                .client
                .get_connection_with_timeout(Duration::from_secs(2))
                .map_err(StoreError::redis)?;
            c.set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(StoreError::redis)?;
            c.set_write_timeout(Some(Duration::from_secs(5)))
                .map_err(StoreError::redis)?;
            *slot = Some(c);
        }
        let Some(conn) = slot.as_mut() else {
            return Err(StoreError::Redis("no connection".into()));
        };
        op(conn).map_err(|e| {
            // Drop a connection that failed; the next call reconnects.
            *slot = None;
            StoreError::redis(e)
        })
    }

    /// The blob under `key`, if present (marks it recently used).
    fn read(&self, key: &CacheKey) -> Result<Option<Vec<u8>>> {
        let [blob, _, lru, _] = self.keys(key);
        let bytes: Option<Vec<u8>> = self.with_conn(|c| redis::cmd("GET").arg(&blob).query(c))?;
        if bytes.is_some() {
            self.with_conn(|c| {
                redis::cmd("ZADD")
                    .arg(&lru)
                    .arg("XX")
                    .arg(now_ms())
                    .arg(key.hex())
                    .query::<i64>(c)
            })?;
        }
        Ok(bytes)
    }

    /// Stores `bytes` under `key`, evicting least-recently-used blobs past the
    /// budget. A blob larger than the whole budget is not stored.
    fn write(&self, key: &CacheKey, bytes: &[u8]) -> Result<()> {
        if bytes.len() as u64 > self.config.budget {
            return Ok(());
        }
        let prefix = format!("{}:kv:", self.config.prefix);
        let evicted = self.run_script(&self.put_script, key, |inv| {
            inv.arg(bytes)
                .arg(now_ms())
                .arg(bytes.len())
                .arg(self.config.budget)
                .arg(&prefix);
        })?;
        if evicted > 0 {
            tracing::debug!(evicted, "remote tier evicted blobs");
        }
        Ok(())
    }

    /// Runs a bookkeeping script with the four keys of `key` and its hex as
    /// the first argument; `args` appends the rest.
    fn run_script(
        &self,
        script: &Script,
        key: &CacheKey,
        args: impl Fn(&mut redis::ScriptInvocation<'_>),
    ) -> Result<i64> {
        let keys = self.keys(key);
        self.with_conn(|c| {
            let mut inv = script.prepare_invoke();
            for k in &keys {
                inv.key(k);
            }
            inv.arg(key.hex());
            args(&mut inv);
            inv.invoke(c)
        })
    }
}

/// Redis evicts with its own script, server-side; nothing comes back to
/// demote. Redis out of reach degrades to misses (see [`BlobTier::required`]).
impl BlobTier for RemoteTier {
    fn tier(&self) -> Tier {
        Tier::Remote
    }

    fn get_blob(&self, key: &CacheKey) -> Result<Option<Vec<u8>>> {
        self.read(key)
    }

    fn contains_blob(&self, key: &CacheKey) -> Result<bool> {
        let [blob, ..] = self.keys(key);
        self.with_conn(|c| redis::cmd("EXISTS").arg(&blob).query::<bool>(c))
    }

    fn put_blob(&self, key: &CacheKey, bytes: &[u8]) -> Result<Vec<(CacheKey, Vec<u8>)>> {
        self.write(key, bytes)?;
        Ok(Vec::new())
    }

    fn remove_blob(&self, key: &CacheKey) -> Result<()> {
        self.run_script(&self.remove_script, key, |_| {})?;
        Ok(())
    }

    fn stored_bytes(&self) -> Result<u64> {
        let total = format!("{}:bytes", self.config.prefix);
        let v: Option<i64> = self.with_conn(|c| redis::cmd("GET").arg(&total).query(c))?;
        Ok(v.unwrap_or(0).max(0) as u64)
    }

    fn required(&self) -> bool {
        false
    }
}
