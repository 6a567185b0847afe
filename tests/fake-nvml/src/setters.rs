//! NVML's state-changing functions, as stubs that log their call and succeed without doing
//! anything. They exist so that the read-only test sees any call the agent makes to one.

use std::ffi::{c_int, c_uint};

use nvml_wrapper_sys::bindings::*;

use crate::nvml_exports;

nvml_exports! {
    fn nvmlDeviceClearAccountingPids(_device: nvmlDevice_t) { Ok(()) }
    fn nvmlDeviceClearCpuAffinity(_device: nvmlDevice_t) { Ok(()) }
    fn nvmlDeviceClearEccErrorCounts(_device: nvmlDevice_t, _counter_type: nvmlEccCounterType_t) { Ok(()) }
    fn nvmlDeviceClearFieldValues(_device: nvmlDevice_t, _values_count: c_int, _values: *mut nvmlFieldValue_t) { Ok(()) }
    fn nvmlDeviceCreateGpuInstance(_device: nvmlDevice_t, _profile_id: c_uint, _gpu_instance: *mut nvmlGpuInstance_t) { Ok(()) }
    fn nvmlDeviceFreezeNvLinkUtilizationCounter(_device: nvmlDevice_t, _link: c_uint, _counter: c_uint, _freeze: nvmlEnableState_t) { Ok(()) }
    fn nvmlDeviceModifyDrainState(_pci_info: *mut nvmlPciInfo_t, _new_state: nvmlEnableState_t) { Ok(()) }
    fn nvmlDeviceRemoveGpu_v2(_pci_info: *mut nvmlPciInfo_t, _gpu_state: nvmlDetachGpuState_t, _link_state: nvmlPcieLinkState_t) { Ok(()) }
    fn nvmlDeviceResetApplicationsClocks(_device: nvmlDevice_t) { Ok(()) }
    fn nvmlDeviceResetGpuLockedClocks(_device: nvmlDevice_t) { Ok(()) }
    fn nvmlDeviceResetMemoryLockedClocks(_device: nvmlDevice_t) { Ok(()) }
    fn nvmlDeviceResetNvLinkErrorCounters(_device: nvmlDevice_t, _link: c_uint) { Ok(()) }
    fn nvmlDeviceResetNvLinkUtilizationCounter(_device: nvmlDevice_t, _link: c_uint, _counter: c_uint) { Ok(()) }
    fn nvmlDeviceSetAPIRestriction(_device: nvmlDevice_t, _api_type: nvmlRestrictedAPI_t, _is_restricted: nvmlEnableState_t) { Ok(()) }
    fn nvmlDeviceSetAccountingMode(_device: nvmlDevice_t, _mode: nvmlEnableState_t) { Ok(()) }
    fn nvmlDeviceSetApplicationsClocks(_device: nvmlDevice_t, _mem_clock_m_hz: c_uint, _graphics_clock_m_hz: c_uint) { Ok(()) }
    fn nvmlDeviceSetAutoBoostedClocksEnabled(_device: nvmlDevice_t, _enabled: nvmlEnableState_t) { Ok(()) }
    fn nvmlDeviceSetClockOffsets(_device: nvmlDevice_t, _info: *mut nvmlClockOffset_t) { Ok(()) }
    fn nvmlDeviceSetComputeMode(_device: nvmlDevice_t, _mode: nvmlComputeMode_t) { Ok(()) }
    fn nvmlDeviceSetCpuAffinity(_device: nvmlDevice_t) { Ok(()) }
    fn nvmlDeviceSetDefaultAutoBoostedClocksEnabled(_device: nvmlDevice_t, _enabled: nvmlEnableState_t, _flags: c_uint) { Ok(()) }
    fn nvmlDeviceSetDefaultFanSpeed_v2(_device: nvmlDevice_t, _fan: c_uint) { Ok(()) }
    fn nvmlDeviceSetDriverModel(_device: nvmlDevice_t, _driver_model: nvmlDriverModel_t, _flags: c_uint) { Ok(()) }
    fn nvmlDeviceSetEccMode(_device: nvmlDevice_t, _ecc: nvmlEnableState_t) { Ok(()) }
    fn nvmlDeviceSetFanControlPolicy(_device: nvmlDevice_t, _fan: c_uint, _policy: nvmlFanControlPolicy_t) { Ok(()) }
    fn nvmlDeviceSetFanSpeed_v2(_device: nvmlDevice_t, _fan: c_uint, _speed: c_uint) { Ok(()) }
    fn nvmlDeviceSetGpcClkVfOffset(_device: nvmlDevice_t, _offset: c_int) { Ok(()) }
    fn nvmlDeviceSetGpuLockedClocks(_device: nvmlDevice_t, _min_gpu_clock_m_hz: c_uint, _max_gpu_clock_m_hz: c_uint) { Ok(()) }
    fn nvmlDeviceSetGpuOperationMode(_device: nvmlDevice_t, _mode: nvmlGpuOperationMode_t) { Ok(()) }
    fn nvmlDeviceSetMemClkVfOffset(_device: nvmlDevice_t, _offset: c_int) { Ok(()) }
    fn nvmlDeviceSetMemoryLockedClocks(_device: nvmlDevice_t, _min_mem_clock_m_hz: c_uint, _max_mem_clock_m_hz: c_uint) { Ok(()) }
    fn nvmlDeviceSetMigMode(_device: nvmlDevice_t, _mode: c_uint, _activation_status: *mut nvmlReturn_t) { Ok(()) }
    fn nvmlDeviceSetNvLinkUtilizationControl(_device: nvmlDevice_t, _link: c_uint, _counter: c_uint, _control: *mut nvmlNvLinkUtilizationControl_t, _reset: c_uint) { Ok(()) }
    fn nvmlDeviceSetPersistenceMode(_device: nvmlDevice_t, _mode: nvmlEnableState_t) { Ok(()) }
    fn nvmlDeviceSetPowerManagementLimit(_device: nvmlDevice_t, _limit: c_uint) { Ok(()) }
    fn nvmlDeviceSetPowerManagementLimit_v2(_device: nvmlDevice_t, _power_value: *mut nvmlPowerValue_v2_t) { Ok(()) }
    fn nvmlDeviceSetPowerMizerMode_v1(_device: nvmlDevice_t, _power_mizer_mode: *mut nvmlDevicePowerMizerModes_v1_t) { Ok(()) }
    fn nvmlDeviceSetTemperatureThreshold(_device: nvmlDevice_t, _threshold_type: nvmlTemperatureThresholds_t, _temp: *mut c_int) { Ok(()) }
    fn nvmlDeviceSetVirtualizationMode(_device: nvmlDevice_t, _virtual_mode: nvmlGpuVirtualizationMode_t) { Ok(()) }
    fn nvmlDeviceValidateInforom(_device: nvmlDevice_t) { Ok(()) }
    fn nvmlGpmSetStreamingEnabled(_device: nvmlDevice_t, _state: c_uint) { Ok(()) }
    fn nvmlSystemSetNvlinkBwMode(_nvlink_bw_mode: c_uint) { Ok(()) }
    fn nvmlUnitSetLedState(_unit: nvmlUnit_t, _color: nvmlLedColor_t) { Ok(()) }
    fn nvmlGpuInstanceDestroy(_gpu_instance: nvmlGpuInstance_t) { Ok(()) }
    fn nvmlComputeInstanceDestroy(_compute_instance: nvmlComputeInstance_t) { Ok(()) }
}
