//! Whether a node's error counters moved between two consecutive samples: PCIe replays,
//! uncorrectable ECC errors (aggregate),
//! NVLink errors, NIC errors and drops, InfiniBand error counters, PCIe AER, and Ethernet
//! ports' carrier changes and link speeds. The fleet state
//! numbers its samples by it ([`super::NodeState::counter_epochs`]), so a rule learns in one
//! comparison that none of these counters moved over its window — on a healthy fleet, every
//! node — without reading the window's oldest sample, which is cold in memory.
//!
//! Only the counters listed here may be judged that way (`Recent::counters_still` in
//! `diagnose/rules/window.rs`). A device, port or link that appears, goes or changes place
//! counts as a move.

use gpufleet_model::{
    EthernetPort, GpuSample, IbPortSample, NicSample, NvLinkSample, PcieDeviceSample, Sample,
};

/// `a` and `b` have the same value of every listed counter, on the same GPUs, links, NICs,
/// ports and devices in the same order.
pub fn same(a: &Sample, b: &Sample) -> bool {
    same_list(&a.gpus, &b.gpus, same_gpu)
        && same_list(&a.host.nics, &b.host.nics, same_nic)
        && same_list(&a.host.ib_ports, &b.host.ib_ports, same_ib)
        && same_list(&a.host.pcie_devices, &b.host.pcie_devices, same_pcie)
        && same_list(&a.host.ethernet, &b.host.ethernet, same_eth)
}

fn same_eth(a: &EthernetPort, b: &EthernetPort) -> bool {
    a.name == b.name && (a.speed_mbps, a.carrier_changes) == (b.speed_mbps, b.carrier_changes)
}

fn same_list<T>(a: &[T], b: &[T], same: fn(&T, &T) -> bool) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
}

fn same_gpu(a: &GpuSample, b: &GpuSample) -> bool {
    a.index == b.index
        && a.pcie_replay_count == b.pcie_replay_count
        && a.ecc_uncorrected_aggregate == b.ecc_uncorrected_aggregate
        && same_list(&a.nvlinks, &b.nvlinks, same_link)
}

fn same_link(a: &NvLinkSample, b: &NvLinkSample) -> bool {
    (
        a.link,
        a.replay_errors,
        a.recovery_errors,
        a.crc_flit_errors,
        a.crc_data_errors,
    ) == (
        b.link,
        b.replay_errors,
        b.recovery_errors,
        b.crc_flit_errors,
        b.crc_data_errors,
    )
}

fn same_nic(a: &NicSample, b: &NicSample) -> bool {
    a.name == b.name
        && (a.rx_errors, a.tx_errors, a.rx_dropped, a.tx_dropped)
            == (b.rx_errors, b.tx_errors, b.rx_dropped, b.tx_dropped)
}

fn same_ib(a: &IbPortSample, b: &IbPortSample) -> bool {
    a.port == b.port
        && a.device == b.device
        && (
            a.symbol_errors,
            a.rcv_errors,
            a.local_link_integrity_errors,
            a.excessive_buffer_overrun_errors,
            a.link_downed,
        ) == (
            b.symbol_errors,
            b.rcv_errors,
            b.local_link_integrity_errors,
            b.excessive_buffer_overrun_errors,
            b.link_downed,
        )
}

fn same_pcie(a: &PcieDeviceSample, b: &PcieDeviceSample) -> bool {
    a.bdf == b.bdf
        && (a.aer_fatal, a.aer_nonfatal, a.aer_correctable)
            == (b.aer_fatal, b.aer_nonfatal, b.aer_correctable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::testutil::{healthy_gpu, healthy_host};

    fn sample() -> Sample {
        let mut s = Sample {
            timestamp: gpufleet_model::UnixMs(1),
            gpus: (0..2).map(healthy_gpu).collect(),
            host: healthy_host(),
        };
        s.gpus[1].nvlinks = (0..4)
            .map(|link| NvLinkSample {
                link,
                active: Some(true),
                replay_errors: Some(0),
                recovery_errors: Some(0),
                crc_flit_errors: Some(0),
                crc_data_errors: Some(0),
            })
            .collect();
        s.host.nics = vec![NicSample {
            name: "eth0".into(),
            rx_errors: Some(0),
            tx_dropped: Some(0),
            ..Default::default()
        }];
        s.host.ib_ports = vec![IbPortSample {
            device: "mlx5_0".into(),
            port: 1,
            symbol_errors: Some(0),
            link_downed: Some(0),
            ..Default::default()
        }];
        s.host.ethernet = vec![EthernetPort {
            name: "eth0".into(),
            operstate: "up".into(),
            speed_mbps: Some(100_000),
            carrier_changes: Some(1),
            ..Default::default()
        }];
        s.host.pcie_devices = vec![PcieDeviceSample {
            bdf: "0000:18:00.0".into(),
            aer_correctable: Some(0),
            ..Default::default()
        }];
        s
    }

    #[test]
    fn every_listed_counter_and_every_shape_change_is_a_move() {
        let a = sample();
        let mut b = a.clone();
        // Gauges and data counters are not error counters.
        b.timestamp.0 += 1000;
        b.gpus[0].power_usage_milliwatts = Some(1);
        b.host
            .nics
            .iter_mut()
            .for_each(|n| n.rx_bytes_per_second += 1);
        b.host.ib_ports[0].rcv_data_bytes = Some(1 << 40);
        assert!(same(&a, &b));
        type Edit = fn(&mut Sample);
        let moves: &[(&str, Edit)] = &[
            ("pcie replay", |s| s.gpus[0].pcie_replay_count = Some(7)),
            ("ecc aggregate", |s| {
                s.gpus[0].ecc_uncorrected_aggregate = Some(1)
            }),
            ("nvlink replay", |s| {
                s.gpus[1].nvlinks[2].replay_errors = Some(1)
            }),
            ("nvlink recovery", |s| {
                s.gpus[1].nvlinks[0].recovery_errors = Some(1)
            }),
            ("nvlink crc flit", |s| {
                s.gpus[1].nvlinks[3].crc_flit_errors = Some(1)
            }),
            ("nvlink crc data", |s| {
                s.gpus[1].nvlinks[1].crc_data_errors = None
            }),
            ("a link gone", |s| {
                s.gpus[1].nvlinks.pop();
            }),
            ("a GPU gone", |s| {
                s.gpus.pop();
            }),
            ("nic rx errors", |s| s.host.nics[0].rx_errors = Some(3)),
            ("nic tx dropped", |s| s.host.nics[0].tx_dropped = Some(3)),
            ("ib symbol errors", |s| {
                s.host.ib_ports[0].symbol_errors = Some(1)
            }),
            ("ib rcv errors", |s| s.host.ib_ports[0].rcv_errors = Some(1)),
            ("ib integrity", |s| {
                s.host.ib_ports[0].local_link_integrity_errors = Some(1)
            }),
            ("ib overrun", |s| {
                s.host.ib_ports[0].excessive_buffer_overrun_errors = Some(1)
            }),
            ("ib link downed", |s| {
                s.host.ib_ports[0].link_downed = Some(1)
            }),
            ("ib port renamed", |s| {
                s.host.ib_ports[0].device = "mlx5_9".into()
            }),
            ("aer fatal", |s| s.host.pcie_devices[0].aer_fatal = Some(1)),
            ("aer nonfatal", |s| {
                s.host.pcie_devices[0].aer_nonfatal = Some(1)
            }),
            ("aer correctable", |s| {
                s.host.pcie_devices[0].aer_correctable = Some(1)
            }),
            ("a device gone", |s| s.host.pcie_devices.clear()),
            ("ethernet speed", |s| {
                s.host.ethernet[0].speed_mbps = Some(25_000)
            }),
            ("ethernet carrier", |s| {
                s.host.ethernet[0].carrier_changes = Some(2)
            }),
            ("ethernet port gone", |s| s.host.ethernet.clear()),
        ];
        for (what, edit) in moves {
            let mut c = a.clone();
            edit(&mut c);
            assert!(!same(&a, &c), "{what}");
        }
    }
}
