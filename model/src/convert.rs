//! The wire boundary: validated conversion between protobuf messages and domain types.
//! Domain → wire is infallible; wire → domain checks what a peer could get wrong (missing
//! required parts, absurd sizes) and says what is wrong.

use gpufleet_proto::v1 as pb;

use crate::*;

/// Field-by-field copies for the messages whose fields match the domain one to one.
mod fields;
/// The configurable limits ([`WireLimits`], `[limits]` in the collector's config).
mod limits;
/// Semantic checks after decoding: impossible readings, duplicate GPUs, oversized records.
pub mod sanity;

pub use limits::WireLimits;

/// Limits on what one message may carry. Generous for real fleets, small enough that a
/// corrupt or hostile message cannot make the collector allocate without bound. The defaults
/// of [`WireLimits`], which the collector's `[limits]` config changes.
pub const MAX_GPUS_PER_NODE: usize = 64;
pub const MAX_SAMPLES_PER_BATCH: usize = 3_600;
pub const MAX_EVENTS_PER_BATCH: usize = 10_000;
pub const MAX_HOSTNAME_LEN: usize = 253;
/// Versions, machine and boot ids, source names.
pub const MAX_ID_LEN: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("message is missing required part `{0}`")]
    Missing(&'static str),
    #[error(
        "`{field}` has {got} entries, more than the limit of {limit} (limits.{key} in the \
         collector's config)"
    )]
    TooMany {
        field: &'static str,
        got: usize,
        limit: usize,
        /// The [`WireLimits`] key that sets `limit`.
        key: &'static str,
    },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn limit(
    field: &'static str,
    got: usize,
    limit: usize,
    key: &'static str,
) -> Result<(), ConvertError> {
    if got > limit {
        return Err(ConvertError::TooMany {
            field,
            got,
            limit,
            key,
        });
    }
    Ok(())
}

// ---- identity -------------------------------------------------------------------------

impl From<NodeIdentity> for pb::NodeIdentity {
    fn from(v: NodeIdentity) -> Self {
        pb::NodeIdentity {
            hostname: v.hostname,
            machine_id: v.machine_id,
            boot_id: v.boot_id,
        }
    }
}

impl TryFrom<pb::NodeIdentity> for NodeIdentity {
    type Error = ConvertError;
    fn try_from(v: pb::NodeIdentity) -> Result<Self, ConvertError> {
        validate_node_name(&v.hostname)?;
        Ok(NodeIdentity {
            hostname: v.hostname,
            machine_id: v.machine_id,
            boot_id: v.boot_id,
        })
    }
}

/// A node name must be usable as a key, a label value and a CLI argument.
pub fn validate_node_name(name: &str) -> Result<(), ConvertError> {
    let bad = |reason: &str| ConvertError::Invalid {
        field: "hostname",
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > MAX_HOSTNAME_LEN {
        return Err(bad("longer than 253 bytes"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(bad(&format!(
            "{name:?} has characters other than letters, digits, '-', '_' and '.'"
        )));
    }
    Ok(())
}

// ---- inventory ------------------------------------------------------------------------

impl From<Inventory> for pb::Inventory {
    fn from(v: Inventory) -> Self {
        pb::Inventory {
            read_at_unix_ms: v.read_at.0,
            driver: Some(v.driver.into()),
            gpus: v.gpus.into_iter().map(Into::into).collect(),
            host: Some(v.host.into()),
        }
    }
}

impl TryFrom<pb::Inventory> for Inventory {
    type Error = ConvertError;
    fn try_from(v: pb::Inventory) -> Result<Self, ConvertError> {
        Inventory::from_wire(v, &WireLimits::default())
    }
}

impl Inventory {
    /// [`TryFrom`] under `limits` instead of the defaults.
    pub fn from_wire(v: pb::Inventory, limits: &WireLimits) -> Result<Self, ConvertError> {
        limit(
            "inventory.gpus",
            v.gpus.len(),
            limits.max_gpus_per_node,
            "max_gpus_per_node",
        )?;
        sanity::inventory_sizes(&v)?;
        let inv = Inventory {
            read_at: UnixMs(v.read_at_unix_ms),
            driver: v.driver.map(Into::into).unwrap_or_default(),
            gpus: v.gpus.into_iter().map(Into::into).collect(),
            host: v.host.map(Into::into).unwrap_or_default(),
        };
        sanity::check_inventory(&inv)?;
        Ok(inv)
    }
}

// ---- samples --------------------------------------------------------------------------

impl From<GpuStatus> for pb::GpuStatus {
    fn from(v: GpuStatus) -> Self {
        match v {
            GpuStatus::Ok => pb::GpuStatus::Ok,
            GpuStatus::Lost => pb::GpuStatus::Lost,
            GpuStatus::Unreadable => pb::GpuStatus::Unreadable,
        }
    }
}

impl From<pb::GpuStatus> for GpuStatus {
    /// Unknown (newer) statuses read as `Unreadable`: not OK, but nothing claimed.
    fn from(v: pb::GpuStatus) -> Self {
        match v {
            pb::GpuStatus::Ok => GpuStatus::Ok,
            pb::GpuStatus::Lost => GpuStatus::Lost,
            pb::GpuStatus::Unreadable | pb::GpuStatus::Unspecified => GpuStatus::Unreadable,
        }
    }
}

impl From<Sample> for pb::Sample {
    fn from(v: Sample) -> Self {
        pb::Sample {
            timestamp_unix_ms: v.timestamp.0,
            gpus: v.gpus.into_iter().map(Into::into).collect(),
            host: Some(v.host.into()),
        }
    }
}

impl TryFrom<pb::Sample> for Sample {
    type Error = ConvertError;
    fn try_from(v: pb::Sample) -> Result<Self, ConvertError> {
        Sample::from_wire(v, &WireLimits::default())
    }
}

impl Sample {
    /// [`TryFrom`] under `limits` instead of the defaults.
    pub fn from_wire(v: pb::Sample, limits: &WireLimits) -> Result<Self, ConvertError> {
        limit(
            "sample.gpus",
            v.gpus.len(),
            limits.max_gpus_per_node,
            "max_gpus_per_node",
        )?;
        if v.timestamp_unix_ms <= 0 {
            return Err(ConvertError::Invalid {
                field: "sample.timestamp_unix_ms",
                reason: format!("{} is not a time after 1970", v.timestamp_unix_ms),
            });
        }
        sanity::gpu_sample_sizes(&v)?;
        let mut sample = Sample {
            timestamp: UnixMs(v.timestamp_unix_ms),
            gpus: v.gpus.into_iter().map(Into::into).collect(),
            host: v.host.map(Into::into).unwrap_or_default(),
        };
        sanity::check_sample(&mut sample)?;
        Ok(sample)
    }
}

// ---- events ---------------------------------------------------------------------------

impl From<EventKind> for pb::EventKind {
    fn from(v: EventKind) -> Self {
        match v {
            EventKind::Xid => pb::EventKind::Xid,
            EventKind::Drift => pb::EventKind::Drift,
            EventKind::Saturation => pb::EventKind::Saturation,
            EventKind::GpuLost => pb::EventKind::GpuLost,
            EventKind::Nvml => pb::EventKind::Nvml,
            EventKind::Agent => pb::EventKind::Agent,
            EventKind::Kernel => pb::EventKind::Kernel,
        }
    }
}

impl From<pb::EventKind> for EventKind {
    fn from(v: pb::EventKind) -> Self {
        match v {
            pb::EventKind::Xid => EventKind::Xid,
            pb::EventKind::Drift => EventKind::Drift,
            pb::EventKind::Saturation => EventKind::Saturation,
            pb::EventKind::GpuLost => EventKind::GpuLost,
            pb::EventKind::Nvml => EventKind::Nvml,
            pb::EventKind::Kernel => EventKind::Kernel,
            pb::EventKind::Agent | pb::EventKind::Unspecified => EventKind::Agent,
        }
    }
}

impl From<Severity> for pb::Severity {
    fn from(v: Severity) -> Self {
        match v {
            Severity::Info => pb::Severity::Info,
            Severity::Warning => pb::Severity::Warning,
            Severity::Critical => pb::Severity::Critical,
        }
    }
}

impl From<pb::Severity> for Severity {
    fn from(v: pb::Severity) -> Self {
        match v {
            pb::Severity::Critical => Severity::Critical,
            pb::Severity::Warning => Severity::Warning,
            pb::Severity::Info | pb::Severity::Unspecified => Severity::Info,
        }
    }
}

/// Reads a wire enum, mapping numbers this build does not know to the enum's default.
fn wire_enum<T: TryFrom<i32> + Default>(v: i32) -> T {
    T::try_from(v).unwrap_or_default()
}

impl From<Event> for pb::Event {
    fn from(v: Event) -> Self {
        pb::Event {
            timestamp_unix_ms: v.timestamp.0,
            kind: pb::EventKind::from(v.kind) as i32,
            severity: pb::Severity::from(v.severity) as i32,
            code: v.code,
            message: v.message,
            gpu_index: v.gpu_index,
            gpu_uuid: v.gpu_uuid,
            xid: v.xid,
            source: v.source,
            details: v.details.into_iter().collect(),
            nvml_event_type: v.nvml_event_type,
        }
    }
}

impl From<pb::Event> for Event {
    fn from(v: pb::Event) -> Self {
        Event {
            timestamp: UnixMs(v.timestamp_unix_ms),
            kind: wire_enum::<pb::EventKind>(v.kind).into(),
            severity: wire_enum::<pb::Severity>(v.severity).into(),
            code: v.code,
            message: v.message,
            gpu_index: v.gpu_index,
            gpu_uuid: v.gpu_uuid,
            xid: v.xid,
            source: v.source,
            details: v.details.into_iter().collect(),
            nvml_event_type: v.nvml_event_type,
        }
    }
}

// ---- findings -------------------------------------------------------------------------

impl From<Evidence> for pb::Evidence {
    fn from(v: Evidence) -> Self {
        pb::Evidence {
            field: v.field,
            value: v.value,
            threshold: v.threshold,
            duration_ms: v.duration_ms,
        }
    }
}

impl From<pb::Evidence> for Evidence {
    fn from(v: pb::Evidence) -> Self {
        Evidence {
            field: v.field,
            value: v.value,
            threshold: v.threshold,
            duration_ms: v.duration_ms,
        }
    }
}

impl From<Finding> for pb::Finding {
    fn from(v: Finding) -> Self {
        pb::Finding {
            rule_id: v.rule_id,
            title: v.title,
            severity: pb::Severity::from(v.severity) as i32,
            node: v.node,
            gpu_index: v.gpu_index,
            gpu_uuid: v.gpu_uuid,
            summary: v.summary,
            evidence: v.evidence.into_iter().map(Into::into).collect(),
            performance_ratio: v.performance_ratio,
            action: v.action,
            since_unix_ms: v.since.0,
            fleet: v.fleet.map(|f| pb::FleetScope {
                group: f.group,
                group_nodes: f.group_nodes,
                nodes: f.nodes,
                gpus: f.gpus,
            }),
            folded_into: v.folded_into,
        }
    }
}

impl From<pb::Finding> for Finding {
    fn from(v: pb::Finding) -> Self {
        Finding {
            rule_id: v.rule_id,
            title: v.title,
            severity: wire_enum::<pb::Severity>(v.severity).into(),
            node: v.node,
            gpu_index: v.gpu_index,
            gpu_uuid: v.gpu_uuid,
            summary: v.summary,
            evidence: v.evidence.into_iter().map(Into::into).collect(),
            performance_ratio: v.performance_ratio,
            action: v.action,
            since: UnixMs(v.since_unix_ms),
            fleet: v.fleet.map(|f| crate::finding::FleetScope {
                group: f.group,
                group_nodes: f.group_nodes,
                nodes: f.nodes,
                gpus: f.gpus,
            }),
            folded_into: v.folded_into,
        }
    }
}

impl From<FindingState> for pb::FindingState {
    fn from(v: FindingState) -> Self {
        match v {
            FindingState::Pending => pb::FindingState::Pending,
            FindingState::Firing => pb::FindingState::Firing,
            FindingState::Resolved => pb::FindingState::Resolved,
        }
    }
}

impl From<pb::FindingState> for FindingState {
    fn from(v: pb::FindingState) -> Self {
        match v {
            pb::FindingState::Firing => FindingState::Firing,
            pb::FindingState::Resolved => FindingState::Resolved,
            pb::FindingState::Pending | pb::FindingState::Unspecified => FindingState::Pending,
        }
    }
}

impl From<FindingRecord> for pb::FindingRecord {
    fn from(v: FindingRecord) -> Self {
        pb::FindingRecord {
            finding: Some(v.finding.into()),
            state: pb::FindingState::from(v.state) as i32,
            fired_at_unix_ms: v.fired_at.0,
            resolved_at_unix_ms: v.resolved_at.map(|t| t.0),
        }
    }
}

impl From<pb::FindingRecord> for FindingRecord {
    fn from(v: pb::FindingRecord) -> Self {
        FindingRecord {
            finding: v.finding.map(Into::into).unwrap_or_default(),
            state: wire_enum::<pb::FindingState>(v.state).into(),
            fired_at: UnixMs(v.fired_at_unix_ms),
            resolved_at: v.resolved_at_unix_ms.map(UnixMs),
        }
    }
}

// ---- batches --------------------------------------------------------------------------

/// A batch as the collector works with it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    pub sequence: u64,
    pub samples: Vec<Sample>,
    pub events: Vec<Event>,
    pub inventory: Option<Inventory>,
    pub dropped_samples: u64,
    pub dropped_events: u64,
}

impl From<Batch> for pb::Batch {
    fn from(v: Batch) -> Self {
        pb::Batch {
            sequence: v.sequence,
            samples: v.samples.into_iter().map(Into::into).collect(),
            events: v.events.into_iter().map(Into::into).collect(),
            inventory: v.inventory.map(Into::into),
            dropped_samples: v.dropped_samples,
            dropped_events: v.dropped_events,
        }
    }
}

impl TryFrom<pb::Batch> for Batch {
    type Error = ConvertError;
    fn try_from(v: pb::Batch) -> Result<Self, ConvertError> {
        Batch::from_wire(v, &WireLimits::default())
    }
}

impl Batch {
    /// [`TryFrom`] under `limits` instead of the defaults.
    pub fn from_wire(v: pb::Batch, limits: &WireLimits) -> Result<Self, ConvertError> {
        limit(
            "batch.samples",
            v.samples.len(),
            limits.max_batch_samples,
            "max_batch_samples",
        )?;
        limit(
            "batch.events",
            v.events.len(),
            limits.max_batch_events,
            "max_batch_events",
        )?;
        for e in &v.events {
            sanity::record_size("batch.events[]", e, sanity::MAX_EVENT_BYTES)?;
        }
        if v.sequence == 0 {
            return Err(ConvertError::Invalid {
                field: "batch.sequence",
                reason: "sequence numbers start at 1".into(),
            });
        }
        if v.sequence > i64::MAX as u64 {
            return Err(ConvertError::Invalid {
                field: "batch.sequence",
                reason: format!("{} does not fit in 63 bits", v.sequence),
            });
        }
        Ok(Batch {
            sequence: v.sequence,
            samples: v
                .samples
                .into_iter()
                .map(|s| Sample::from_wire(s, limits))
                .collect::<Result<_, _>>()?,
            events: v.events.into_iter().map(Into::into).collect(),
            inventory: v
                .inventory
                .map(|i| Inventory::from_wire(i, limits))
                .transpose()?,
            dropped_samples: v.dropped_samples,
            dropped_events: v.dropped_events,
        })
    }
}

/// A validated `Hello`.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    pub protocol_version: u32,
    pub node: NodeIdentity,
    pub agent_version: String,
    pub session_id: String,
    pub inventory: Inventory,
    pub gpu_source: String,
    /// Checked with [`crate::labels::check_labels`].
    pub labels: crate::Labels,
}

impl From<Hello> for pb::Hello {
    fn from(v: Hello) -> Self {
        pb::Hello {
            protocol_version: v.protocol_version,
            node: Some(v.node.into()),
            agent_version: v.agent_version,
            session_id: v.session_id,
            inventory: Some(v.inventory.into()),
            gpu_source: v.gpu_source,
            labels: v.labels.into_iter().collect(),
        }
    }
}

impl TryFrom<pb::Hello> for Hello {
    type Error = ConvertError;
    fn try_from(v: pb::Hello) -> Result<Self, ConvertError> {
        Hello::from_wire(v, &WireLimits::default())
    }
}

impl Hello {
    /// [`TryFrom`] under `limits` instead of the defaults.
    pub fn from_wire(v: pb::Hello, limits: &WireLimits) -> Result<Self, ConvertError> {
        let max = limits.max_string_bytes;
        let node = v.node.ok_or(ConvertError::Missing("hello.node"))?;
        let inventory = v
            .inventory
            .ok_or(ConvertError::Missing("hello.inventory"))?;
        for (field, value) in [
            ("hello.agent_version", &v.agent_version),
            ("hello.gpu_source", &v.gpu_source),
            ("hello.node.machine_id", &node.machine_id),
            ("hello.node.boot_id", &node.boot_id),
            ("hello.session_id", &v.session_id),
        ] {
            if value.len() > max {
                return Err(ConvertError::Invalid {
                    field,
                    reason: format!(
                        "{} bytes, more than {max} (limits.max_string_bytes in the collector's \
                         config)",
                        value.len()
                    ),
                });
            }
        }
        if v.session_id.is_empty() {
            return Err(ConvertError::Invalid {
                field: "hello.session_id",
                reason: "empty: an agent names its session".into(),
            });
        }
        limit(
            "hello.labels",
            v.labels.len(),
            limits.max_labels,
            "max_labels",
        )?;
        let labels: crate::Labels = v.labels.into_iter().collect();
        crate::labels::check_label_names(&labels).map_err(|e| ConvertError::Invalid {
            field: "hello.labels",
            reason: e.to_string(),
        })?;
        Ok(Hello {
            protocol_version: v.protocol_version,
            node: node.try_into()?,
            agent_version: v.agent_version,
            session_id: v.session_id,
            inventory: Inventory::from_wire(inventory, limits)?,
            gpu_source: v.gpu_source,
            labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_gpu_sample() -> GpuSample {
        GpuSample {
            index: 3,
            uuid: "GPU-1".into(),
            status: GpuStatus::Ok,
            temperature_gpu_celsius: Some(0),
            power_usage_milliwatts: Some(350_000),
            clock_event_reasons: Some(0x40),
            gpm_tensor_active_percent: Some(0.0),
            gpm_sm_active_percent: Some(87.5),
            gpm_nvlink_rx_bytes_per_second: Some(120_000_000_000),
            nvlinks: vec![NvLinkSample {
                link: 1,
                active: Some(false),
                ..Default::default()
            }],
            processes: vec![GpuProcess {
                pid: 42,
                name: "python".into(),
                used_memory_bytes: None,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn sample_round_trips_and_keeps_absent_apart_from_zero() {
        let s = Sample {
            timestamp: UnixMs(1_700_000_000_000),
            gpus: vec![full_gpu_sample()],
            host: HostSample {
                cpu_percent: Some(12.5),
                ..Default::default()
            },
        };
        let wire: pb::Sample = s.clone().into();
        assert_eq!(wire.gpus[0].temperature_gpu_celsius, Some(0));
        assert_eq!(wire.gpus[0].temperature_memory_celsius, None);
        let back = Sample::try_from(wire).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn driver_stack_and_daemons_round_trip_and_absent_stays_absent() {
        let mut inv = Inventory::default();
        inv.host.driver_stack = Some(DriverStackInfo {
            modules: vec![KernelModuleInfo {
                name: "nvidia_peermem".into(),
                version: "550.54.15".into(),
                state: "Live".into(),
            }],
            kernel_driver_version: "550.54.15".into(),
            libcuda_version: "550.90.07".into(),
            libnvidia_ml_version: "550.90.07".into(),
            fabricmanager_version: String::new(),
            nvswitch_count: 4,
        });
        let back = Inventory::try_from(pb::Inventory::from(inv.clone())).unwrap();
        assert_eq!(back, inv);
        let none = Inventory::try_from(pb::Inventory::from(Inventory::default())).unwrap();
        assert_eq!(none.host.driver_stack, None);

        let s = Sample {
            timestamp: UnixMs(1_700_000_000_000),
            gpus: vec![],
            host: HostSample {
                driver_daemons: Some(DriverDaemons {
                    persistenced: false,
                    fabricmanager: true,
                }),
                ..Default::default()
            },
        };
        assert_eq!(Sample::try_from(pb::Sample::from(s.clone())).unwrap(), s);
    }

    #[test]
    fn host_parts_round_trip_and_unknown_or_absent_stays_so() {
        let mut inv = Inventory::default();
        inv.host.pcie_devices = vec![
            PcieDeviceInfo {
                bdf: "0000:1a:00.0".into(),
                kind: PcieDeviceKind::Gpu,
                vendor_id: 0x10de,
                device_id: 0x2330,
                class_code: 0x030200,
                numa_node: Some(0),
                max_link_speed_mts: Some(32_000),
                max_link_width: Some(16),
                upstream: vec!["0000:15:01.0".into(), "0000:16:00.0".into()],
                ..Default::default()
            },
            PcieDeviceInfo {
                bdf: "0000:17:01.0".into(),
                kind: PcieDeviceKind::Bridge,
                acs: Acs::Control(0x001d),
                ..Default::default()
            },
            PcieDeviceInfo {
                bdf: "0000:17:02.0".into(),
                kind: PcieDeviceKind::Bridge,
                acs: Acs::NotCapable,
                ..Default::default()
            },
            PcieDeviceInfo {
                bdf: "0000:17:03.0".into(),
                kind: PcieDeviceKind::Bridge,
                acs: Acs::Unknown,
                ..Default::default()
            },
        ];
        let back = Inventory::try_from(pb::Inventory::from(inv.clone())).unwrap();
        assert_eq!(back, inv);
        // A newer agent's kind or ACS state this collector does not know reads as unknown.
        let mut wire = pb::Inventory::from(inv);
        wire.host.as_mut().unwrap().pcie_devices[0].kind = 99;
        wire.host.as_mut().unwrap().pcie_devices[1].acs = 7;
        let back = Inventory::try_from(wire).unwrap();
        assert_eq!(back.host.pcie_devices[0].kind, PcieDeviceKind::Unknown);
        assert_eq!(back.host.pcie_devices[1].acs, Acs::Unknown);

        let s = Sample {
            timestamp: UnixMs(1_700_000_000_000),
            gpus: vec![],
            host: HostSample {
                os: Some(OsSample {
                    file_handles: Some(12_000),
                    file_handles_max: Some(9_223_372_036_854_775_807),
                    pages_swapped_in: Some(0),
                    pages_swapped_out: None,
                    oom_kills: Some(3),
                    uninterruptible: Some(1),
                    stuck: vec![StuckProcess {
                        pid: 4242,
                        comm: "python3".into(),
                        blocked_seconds: 95,
                        wchan: "nfs_wait_bit_killable".into(),
                    }],
                }),
                ethernet: vec![EthernetPort {
                    name: "eth0".into(),
                    operstate: "up".into(),
                    speed_mbps: Some(100_000),
                    duplex: "full".into(),
                    carrier_changes: Some(2),
                    pci_address: "0000:2a:00.0".into(),
                    mtu: Some(9000),
                }],
                pcie_devices: vec![PcieDeviceSample {
                    bdf: "0000:1a:00.0".into(),
                    link_speed_mts: Some(32_000),
                    link_width: Some(16),
                    aer_correctable: Some(0),
                    aer_nonfatal: None,
                    aer_fatal: Some(2),
                }],
                ..Default::default()
            },
        };
        assert_eq!(Sample::try_from(pb::Sample::from(s.clone())).unwrap(), s);
        let none = Sample {
            timestamp: UnixMs(1_700_000_000_000),
            gpus: vec![],
            host: HostSample::default(),
        };
        let back = Sample::try_from(pb::Sample::from(none)).unwrap();
        assert_eq!((back.host.os, back.host.ethernet.len()), (None, 0));
    }

    #[test]
    fn storage_round_trips_and_absent_stays_absent() {
        let mut inv = Inventory::default();
        inv.host.storage = Some(StorageInfo {
            nvme: vec![StorageNvmeInfo {
                name: "nvme0".into(),
                model: "SAMSUNG MZ1L21T9HCLS-00A07".into(),
                serial: "S666NE0T812345".into(),
                firmware_rev: "GDC7302Q".into(),
                transport: "pcie".into(),
                address: "0000:c4:00.0".into(),
            }],
        });
        let back = Inventory::try_from(pb::Inventory::from(inv.clone())).unwrap();
        assert_eq!(back, inv);
        let none = Inventory::try_from(pb::Inventory::from(Inventory::default())).unwrap();
        assert_eq!(none.host.storage, None);

        let s = Sample {
            timestamp: UnixMs(1_700_000_000_000),
            gpus: vec![],
            host: HostSample {
                storage: Some(StorageSample {
                    mounts: vec![
                        StorageMountSample {
                            mount_point: "/datasets".into(),
                            mounted: true,
                            fstype: "nfs4".into(),
                            source: "storage01:/export/datasets".into(),
                            was_writable: true,
                            statfs_latency_ms: Some(0.0),
                            total_bytes: Some(0),
                            available_bytes: Some(0),
                            ..Default::default()
                        },
                        StorageMountSample {
                            mount_point: "/checkpoints".into(),
                            unresponsive: true,
                            ..Default::default()
                        },
                    ],
                    nvme: vec![StorageNvmeSample {
                        name: "nvme0".into(),
                        state: "live".into(),
                        temperature_millicelsius: Some(-5_150),
                        temperature_alarm: Some(false),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            },
        };
        let wire = pb::Sample::from(s.clone());
        let m = &wire.host.as_ref().unwrap().storage.as_ref().unwrap().mounts;
        assert_eq!(
            (m[0].statfs_latency_ms, m[1].statfs_latency_ms),
            (Some(0.0), None)
        );
        assert_eq!(Sample::try_from(wire).unwrap(), s);
    }

    #[test]
    fn batch_limits_are_enforced() {
        let wire = pb::Batch {
            sequence: 1,
            samples: vec![pb::Sample::default(); MAX_SAMPLES_PER_BATCH + 1],
            ..Default::default()
        };
        assert!(matches!(
            Batch::try_from(wire),
            Err(ConvertError::TooMany {
                field: "batch.samples",
                ..
            })
        ));
        let zero_seq = pb::Batch::default();
        assert!(Batch::try_from(zero_seq).is_err());
    }

    #[test]
    fn hello_requires_identity_and_inventory() {
        let ok = Hello {
            protocol_version: 1,
            node: NodeIdentity {
                hostname: "gpu-node-1".into(),
                ..Default::default()
            },
            agent_version: "0.1.0".into(),
            session_id: "abc".into(),
            inventory: Inventory::default(),
            gpu_source: "simulated".into(),
            labels: [("pool".to_string(), "training".to_string())].into(),
        };
        assert_eq!(Hello::try_from(pb::Hello::from(ok.clone())).unwrap(), ok);
        for (name, mutate) in [
            (
                "no node",
                Box::new(|h: &mut pb::Hello| h.node = None) as Box<dyn Fn(&mut pb::Hello)>,
            ),
            (
                "no inventory",
                Box::new(|h: &mut pb::Hello| h.inventory = None),
            ),
            (
                "empty session",
                Box::new(|h: &mut pb::Hello| h.session_id.clear()),
            ),
            (
                "bad hostname",
                Box::new(|h: &mut pb::Hello| h.node.as_mut().unwrap().hostname = "a b".into()),
            ),
            (
                "bad label",
                Box::new(|h: &mut pb::Hello| {
                    h.labels.insert("pool".into(), "two words".into());
                }),
            ),
        ] {
            let mut wire = pb::Hello::from(ok.clone());
            mutate(&mut wire);
            assert!(Hello::try_from(wire).is_err(), "{name}");
        }
    }

    /// Each configurable limit refuses one past it, naming its key; the defaults let it by.
    #[test]
    fn configured_limits_are_enforced_and_named() {
        let small = WireLimits {
            max_gpus_per_node: 4,
            max_batch_samples: 2,
            max_batch_events: 1,
            max_string_bytes: 8,
            max_labels: 1,
        };
        let mut hello = pb::Hello::from(Hello {
            protocol_version: 1,
            node: NodeIdentity {
                hostname: "n".into(),
                ..Default::default()
            },
            agent_version: "0.1".into(),
            session_id: "s".into(),
            inventory: Inventory::default(),
            gpu_source: "nvml".into(),
            labels: Default::default(),
        });
        hello.inventory.as_mut().unwrap().gpus = (0..8)
            .map(|i| pb::GpuInfo {
                index: i,
                uuid: format!("GPU-{i}"),
                ..Default::default()
            })
            .collect();
        let long_version = {
            let mut h = hello.clone();
            h.inventory = Some(pb::Inventory::default());
            h.agent_version = "0.1.0-rc.1".into();
            h
        };
        let two_labels = {
            let mut h = long_version.clone();
            h.agent_version = "0.1".into();
            h.labels = [("a".into(), "1".into()), ("b".into(), "2".into())].into();
            h
        };
        for (case, wire, key) in [
            ("8 GPUs", hello, "limits.max_gpus_per_node"),
            ("10-byte version", long_version, "limits.max_string_bytes"),
            ("2 labels", two_labels, "limits.max_labels"),
        ] {
            let e = Hello::from_wire(wire.clone(), &small)
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{case}: {e}");
            assert!(Hello::try_from(wire).is_ok(), "{case} under the defaults");
        }
        let batch = |samples: usize, events: usize| pb::Batch {
            sequence: 1,
            samples: (0..samples)
                .map(|i| pb::Sample {
                    timestamp_unix_ms: 1 + i as i64,
                    ..Default::default()
                })
                .collect(),
            events: vec![pb::Event::default(); events],
            ..Default::default()
        };
        for (case, wire, key) in [
            ("3 samples", batch(3, 0), "max_batch_samples"),
            ("2 events", batch(0, 2), "max_batch_events"),
        ] {
            match Batch::from_wire(wire.clone(), &small) {
                Err(ConvertError::TooMany { key: k, .. }) => assert_eq!(k, key, "{case}"),
                other => panic!("{case}: {other:?}"),
            }
            assert!(Batch::try_from(wire).is_ok(), "{case} under the defaults");
        }
        assert!(Batch::from_wire(batch(2, 1), &small).is_ok());
    }

    #[test]
    fn unknown_enum_numbers_degrade_gracefully() {
        let mut wire = pb::Event::from(Event::default());
        wire.kind = 999;
        wire.severity = 999;
        let e = Event::from(wire);
        assert_eq!(e.kind, EventKind::Agent);
        assert_eq!(e.severity, Severity::Info);
        let mut g = pb::GpuSample::from(full_gpu_sample());
        g.status = 77;
        assert_eq!(GpuSample::from(g).status, GpuStatus::Unreadable);
    }
}
