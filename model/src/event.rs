//! Things that happened at a point in time (see `event.proto`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::UnixMs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Xid,
    Drift,
    Saturation,
    GpuLost,
    Nvml,
    /// A hardware or driver error from the kernel log other than an Xid (NVSwitch SXid, PCIe
    /// AER, storage, NIC transmit timeout, hung task): `code` says which ([`crate::kernel_log`]).
    Kernel,
    #[default]
    Agent,
}

/// Ordered: `Info < Warning < Critical`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    #[default]
    Info,
    Warning,
    Critical,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Event {
    pub timestamp: UnixMs,
    pub kind: EventKind,
    pub severity: Severity,
    /// Stable code, e.g. `drift.driver_version`, `saturation.gpu_memory`, `xid.79`.
    pub code: String,
    pub message: String,
    pub gpu_index: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gpu_uuid: String,
    pub xid: Option<u32>,
    /// `nvml`, `kmsg`, `local-detection`, `simulated`, `agent`.
    pub source: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
    pub nvml_event_type: Option<u64>,
}

impl Event {
    pub fn new(
        timestamp: UnixMs,
        kind: EventKind,
        severity: Severity,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Event {
            timestamp,
            kind,
            severity,
            code: code.into(),
            message: message.into(),
            ..Default::default()
        }
    }

    pub fn on_gpu(mut self, index: u32, uuid: &str) -> Self {
        self.gpu_index = Some(index);
        self.gpu_uuid = uuid.to_string();
        self
    }

    pub fn from_source(mut self, source: &str) -> Self {
        self.source = source.to_string();
        self
    }

    pub fn detail(mut self, key: &str, value: impl ToString) -> Self {
        self.details.insert(key.to_string(), value.to_string());
        self
    }
}
