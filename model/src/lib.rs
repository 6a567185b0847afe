//! Domain types shared by the agent and the collector: what a node is (inventory), what it
//! reads (samples), what happened (events) and what is wrong (findings).
//!
//! Units are in field names; a reading that could not be taken is `None`, never `0`.
//! Protobuf types never leave [`convert`]: everything else works with these types.

pub mod clock_events;
pub mod config_file;
pub mod convert;
pub mod event;
pub mod exposition;
pub mod finding;
pub mod inventory;
pub mod kernel_log;
pub mod labels;
pub mod pcie;
pub mod sample;
pub mod storage;
pub mod time;
pub mod xid;

pub use event::{Event, EventKind, Severity};
pub use finding::{Evidence, Finding, FindingRecord, FindingState, FleetScope};
pub use inventory::{
    Acs, DiskInfo, DriverInfo, DriverStackInfo, GpuInfo, GpuInventory, HostInfo, IbDeviceInfo,
    Inventory, KernelModuleInfo, NicInfo, NodeIdentity, PcieDeviceInfo, PcieDeviceKind,
};
pub use labels::{Labels, Selector};
pub use sample::{
    CpuConfigSample, DiskSample, DriverDaemons, EthernetPort, GpuProcess, GpuSample, GpuStatus,
    HostSample, IbPortSample, NicSample, NvLinkSample, OsSample, PcieDeviceSample, Sample,
    StuckProcess, hundredths,
};
pub use storage::{
    StorageInfo, StorageMountSample, StorageNvmeInfo, StorageNvmeSample, StorageSample,
};
pub use time::UnixMs;
