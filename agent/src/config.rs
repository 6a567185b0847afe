//! `gpufleet-agent`'s configuration file (`/etc/gpufleet/agent.toml`): one key per flag of
//! `gpufleet-agent run` (same name, `-` as `_`), node labels as a table. The binary lays the
//! environment and flags over it ([`gpufleet_model::config_file`]); `docs/config.md` lists
//! the keys.

use std::path::PathBuf;
use std::time::Duration;

use gpufleet_model::Labels;
use gpufleet_model::config_file::{Listen, LogFormat};
use serde::{Deserialize, Serialize};

/// Read when present and no `--config` is given.
pub const DEFAULT_PATH: &str = "/etc/gpufleet/agent.toml";
pub const DEFAULT_MODEL: &str = "h100-sxm-80gb";
pub const DEFAULT_BUFFER_SAMPLES: usize = 3600;
pub const DEFAULT_SEED: u64 = 1;

/// Everything `gpufleet-agent run` is told, resolved from defaults, file, environment, flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvml_lib: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulate: Option<u32>,
    pub model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario: Option<PathBuf>,
    pub seed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// Where sysfs and procfs are mounted (the host parts read under them).
    pub sysfs_root: PathBuf,
    pub procfs_root: PathBuf,
    /// The host's root filesystem (driver libraries, package database).
    pub host_root: PathBuf,
    /// Mount points the storage part watches (empty: `/` and every network filesystem).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub watch_mounts: Vec<PathBuf>,
    /// The kernel log (`/dev/kmsg`, or a file of records for tests).
    pub kmsg_path: PathBuf,
    pub collector: String,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub slow_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub inventory_interval: Duration,
    pub buffer_samples: usize,
    /// Cap on the on-disk spool under `state_dir` (bytes; 0: no spool, memory only).
    pub spool_max_bytes: u64,
    pub saturation_hold: u32,
    pub metrics_listen: Listen,
    pub log_format: LogFormat,
    /// CA certificate (PEM) that signed the collector's: TLS (docs/security.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// This node's client certificate and key (PEM), for mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// File holding this node's token (`gpufleet token create NODE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// `--label` as a table: `[labels]` then `pool = "training"`.
    pub labels: Labels,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            node_name: None,
            nvml_lib: None,
            simulate: None,
            model: DEFAULT_MODEL.into(),
            scenario: None,
            seed: DEFAULT_SEED,
            state_dir: None,
            sysfs_root: "/sys".into(),
            procfs_root: "/proc".into(),
            host_root: "/".into(),
            watch_mounts: Vec::new(),
            kmsg_path: crate::sources::nvml::kmsg::DEV_KMSG.into(),
            collector: gpufleet_proto::DEFAULT_COLLECTOR_URL.into(),
            interval: crate::DEFAULT_SAMPLE_INTERVAL,
            slow_interval: crate::sources::cadence::DEFAULT_SLOW_INTERVAL,
            inventory_interval: crate::sampler::DEFAULT_INVENTORY_INTERVAL,
            buffer_samples: DEFAULT_BUFFER_SAMPLES,
            spool_max_bytes: crate::spool::DEFAULT_SPOOL_MAX_BYTES,
            saturation_hold: crate::detect::DEFAULT_SATURATION_HOLD,
            metrics_listen: Listen::Off,
            log_format: LogFormat::Human,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            token_file: None,
            labels: Labels::new(),
        }
    }
}

/// The shortest sample interval the agent accepts (the collector clamps what it pushes to the
/// same): below it NVML polling alone would eat a core.
pub const MIN_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

impl AgentConfig {
    /// Values each fine alone but unusable: a zero interval (it burns a core), an empty
    /// buffer, a collector address that is not one. Says which key and flag.
    pub fn check(&self) -> Result<(), String> {
        if self.interval < MIN_SAMPLE_INTERVAL {
            return Err(format!(
                "interval {:?} is too short (`interval` / --interval): the agent samples at most every {:?}",
                self.interval, MIN_SAMPLE_INTERVAL
            ));
        }
        if self.inventory_interval < Duration::from_secs(1) {
            return Err(format!(
                "inventory_interval {:?} is too short (`inventory_interval` / --inventory-interval): at least 1s",
                self.inventory_interval
            ));
        }
        if let Some(p) = self.watch_mounts.iter().find(|p| !p.is_absolute()) {
            return Err(format!(
                "watch_mounts entry {:?} is not an absolute path (`watch_mounts` / --watch-mount): name the mount point as the host sees it, e.g. /datasets",
                p.display().to_string()
            ));
        }
        if self.buffer_samples == 0 {
            return Err(
                "buffer_samples is 0 (`buffer_samples` / --buffer-samples): keep at least one sample for when the collector is away"
                    .into(),
            );
        }
        if self.spool_max_bytes != 0 && self.spool_max_bytes < crate::spool::MIN_SPOOL_MAX_BYTES {
            return Err(format!(
                "spool_max_bytes {} is too small (`spool_max_bytes` / --spool-max-bytes): at least {} bytes, or 0 for no spool",
                self.spool_max_bytes,
                crate::spool::MIN_SPOOL_MAX_BYTES
            ));
        }
        gpufleet_proto::collector_url(&self.collector)
            .map(|_| ())
            .map_err(|e| format!("{e} (`collector` / --collector)"))?;
        self.credentials(None)
            .check()
            .map_err(|e| format!("{e} (`tls_ca`, `tls_cert`, `tls_key`)"))
    }

    /// How the uplink proves who it is: the TLS files and the token, from `token_file` or else
    /// `env_token` (`GPUFLEET_TOKEN`).
    pub fn credentials(&self, env_token: Option<String>) -> gpufleet_proto::client::Credentials {
        use gpufleet_proto::client::{Credentials, TokenSource};
        Credentials {
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            token: match (&self.token_file, env_token) {
                (Some(f), _) => TokenSource::File(f.clone()),
                (None, Some(t)) => TokenSource::Value(t),
                (None, None) => TokenSource::None,
            },
        }
    }
}
