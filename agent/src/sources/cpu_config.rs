//! How the host's CPUs and memory are set up, from sysfs — the settings that starve GPUs
//! without any GPU counter showing it:
//!
//! ```text
//! devices/system/cpu/cpuN/cpufreq/scaling_governor   performance | powersave | schedutil …
//! devices/system/cpu/cpuN/cpufreq/scaling_driver     intel_pstate | acpi-cpufreq | amd-pstate-epp
//! devices/system/cpu/cpuN/cpufreq/scaling_cur_freq   kHz now
//! devices/system/cpu/cpuN/cpufreq/scaling_max_freq   kHz cap (an administrator's or a tool's)
//! devices/system/cpu/cpuN/cpufreq/cpuinfo_max_freq   kHz the hardware can reach
//! kernel/mm/transparent_hugepage/enabled             always [madvise] never
//! devices/system/edac/mc/mcN/ce_count, ue_count      memory errors corrected / uncorrected
//! ```
//!
//! Each file fails alone. Virtual machines often have no `cpufreq` at all: the governor is
//! then absent, not "unknown"; only a host where none of these can be read is reported
//! unavailable.

use std::fs;
use std::path::{Path, PathBuf};

use gpufleet_model::{CpuConfigSample, HostInfo, HostSample, UnixMs};

use super::HostPart;

pub struct CpuConfig {
    sysfs: PathBuf,
    /// The last reading and when it was taken: a 224-CPU host is over a thousand files, and
    /// governors, caps and EDAC counts change seldom, so they are read at the slow cadence
    /// ([`super::cadence::DEFAULT_SLOW_INTERVAL`]) and repeated in between.
    last: Option<(UnixMs, Result<CpuConfigSample, String>)>,
}

impl CpuConfig {
    pub fn new(sysfs_root: &Path) -> Self {
        CpuConfig {
            sysfs: sysfs_root.to_path_buf(),
            last: None,
        }
    }

    fn cpus(&self) -> Vec<PathBuf> {
        let dir = self.sysfs.join("devices/system/cpu");
        let mut out: Vec<(u32, PathBuf)> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_str()?.strip_prefix("cpu")?.parse().ok()?;
                Some((n, e.path().join("cpufreq")))
            })
            .collect();
        out.sort();
        out.into_iter().map(|(_, p)| p).collect()
    }
}

fn read(path: &Path) -> Option<String> {
    let s = fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn number(path: &Path) -> Option<u64> {
    read(path)?.parse().ok()
}

/// `always [madvise] never` → `madvise` (the bracketed choice).
pub fn selected(s: &str) -> Option<String> {
    let start = s.find('[')?;
    let end = s[start..].find(']')? + start;
    Some(s[start + 1..end].to_string())
}

impl HostPart for CpuConfig {
    fn name(&self) -> &'static str {
        "cpu_config"
    }

    fn info(&mut self, _info: &mut HostInfo) -> Result<(), String> {
        Ok(())
    }

    fn sample(&mut self, now: UnixMs, sample: &mut HostSample) -> Result<(), String> {
        let reread = super::cadence::DEFAULT_SLOW_INTERVAL.as_millis() as i64;
        let fresh = self
            .last
            .as_ref()
            .is_some_and(|(at, _)| (0..reread).contains(&(now.0 - at.0)));
        if !fresh {
            self.last = Some((now, self.read()));
        }
        let (_, reading) = self.last.as_ref().expect("just read");
        sample.cpu_config = Some(reading.clone()?);
        Ok(())
    }
}

impl CpuConfig {
    /// One full read of the CPUs' cpufreq files, THP and EDAC.
    fn read(&self) -> Result<CpuConfigSample, String> {
        let mut c = CpuConfigSample::default();
        let (mut cur_sum, mut cur_n) = (0u64, 0u64);
        for dir in self.cpus() {
            if let Some(g) = read(&dir.join("scaling_governor")) {
                *c.governors.entry(g).or_default() += 1;
            }
            if c.scaling_driver.is_empty()
                && let Some(d) = read(&dir.join("scaling_driver"))
            {
                c.scaling_driver = d;
            }
            if let Some(f) = number(&dir.join("scaling_cur_freq")) {
                cur_sum += f;
                cur_n += 1;
            }
            let hw = number(&dir.join("cpuinfo_max_freq"));
            let cap = number(&dir.join("scaling_max_freq"));
            if let Some(hw) = hw {
                c.freq_max_khz = Some(c.freq_max_khz.map_or(hw, |m| m.max(hw)));
            }
            if let Some(cap) = cap {
                c.scaling_max_khz = Some(c.scaling_max_khz.map_or(cap, |m| m.min(cap)));
                if hw.is_some_and(|hw| cap < hw) {
                    c.capped_cpus += 1;
                }
            }
        }
        c.freq_avg_khz = (cur_n > 0).then(|| cur_sum / cur_n);
        c.thp_enabled = read(&self.sysfs.join("kernel/mm/transparent_hugepage/enabled"))
            .and_then(|s| selected(&s))
            .unwrap_or_default();
        let mcs: Vec<PathBuf> = fs::read_dir(self.sysfs.join("devices/system/edac/mc"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("mc"))
            })
            .collect();
        for mc in &mcs {
            if let Some(n) = number(&mc.join("ce_count")) {
                c.edac_corrected_errors = Some(c.edac_corrected_errors.unwrap_or(0) + n);
            }
            if let Some(n) = number(&mc.join("ue_count")) {
                c.edac_uncorrected_errors = Some(c.edac_uncorrected_errors.unwrap_or(0) + n);
            }
        }
        if c == CpuConfigSample::default() {
            return Err(format!(
                "nothing readable under {}/devices/system/cpu/*/cpufreq, kernel/mm/transparent_hugepage \
                 or devices/system/edac (no cpufreq driver, as in many VMs, and no EDAC driver)",
                self.sysfs.display()
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sysfs/hgx-h100-8x-ndr")
    }

    #[test]
    fn thp_choice_is_the_bracketed_word() {
        for (text, want) in [
            ("always [madvise] never", Some("madvise")),
            ("[always] madvise never", Some("always")),
            ("always madvise [never]", Some("never")),
            ("always madvise never", None),
            ("[broken", None),
        ] {
            assert_eq!(selected(text).as_deref(), want, "{text}");
        }
    }

    #[test]
    fn reads_an_hgx_node_s_224_cpus() {
        let mut s = HostSample::default();
        CpuConfig::new(&fixture())
            .sample(UnixMs(1), &mut s)
            .unwrap();
        let c = s.cpu_config.unwrap();
        assert_eq!(c.governors.get("performance"), Some(&224));
        assert_eq!(c.main_governor(), Some(("performance", 224)));
        assert_eq!(c.scaling_driver, "intel_pstate");
        assert_eq!(c.freq_max_khz, Some(3_800_000));
        assert_eq!(c.scaling_max_khz, Some(3_800_000));
        assert_eq!(c.capped_cpus, 0);
        assert!(c.freq_avg_khz.unwrap() > 2_000_000);
        assert_eq!(c.thp_enabled, "madvise");
        assert_eq!(c.edac_corrected_errors, Some(0));
        assert_eq!(c.edac_uncorrected_errors, Some(0));
    }

    #[test]
    fn a_vm_without_cpufreq_or_edac_says_so() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("devices/system/cpu/cpu0")).unwrap();
        let e = CpuConfig::new(dir.path())
            .sample(UnixMs(1), &mut HostSample::default())
            .unwrap_err();
        assert!(e.contains("no cpufreq driver"), "{e}");
    }

    #[test]
    fn a_powersave_cpu_and_a_capped_one_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        for (i, gov, cap) in [(0, "performance", 3_800_000), (1, "powersave", 2_000_000)] {
            let d = dir
                .path()
                .join(format!("devices/system/cpu/cpu{i}/cpufreq"));
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("scaling_governor"), format!("{gov}\n")).unwrap();
            fs::write(d.join("cpuinfo_max_freq"), "3800000\n").unwrap();
            fs::write(d.join("scaling_max_freq"), format!("{cap}\n")).unwrap();
            fs::write(d.join("scaling_cur_freq"), "garbage\n").unwrap();
        }
        let mut s = HostSample::default();
        CpuConfig::new(dir.path())
            .sample(UnixMs(1), &mut s)
            .unwrap();
        let c = s.cpu_config.unwrap();
        assert_eq!(c.governors.len(), 2);
        assert_eq!(c.capped_cpus, 1);
        assert_eq!(c.scaling_max_khz, Some(2_000_000));
        assert_eq!(c.freq_avg_khz, None, "unreadable, absent");
    }
}
