//! Xids from the kernel log (`/dev/kmsg`). NVML only reports Xids while its event set is
//! registered; the kernel's ring buffer also holds the ones from before the agent started, and
//! the fallen-off-the-bus lines that come without an Xid.
//!
//! `/dev/kmsg` hands out one record per `read`, `prio,seq,ts_usec,flags;message`, and opening it
//! starts at the oldest record still in the ring buffer, so the first read replays it. The
//! reader remembers the last sequence number and never reports a record twice. A log that
//! cannot be read (no permission, no such file) is not an error: the reader is inert and says
//! why. Reading is kept apart from parsing ([`parse_record`]) so the parser is tested on text.

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use gpufleet_model::{Event, EventKind, Severity, UnixMs, xid};

/// The default kernel log device.
pub const DEV_KMSG: &str = "/dev/kmsg";

/// Most records handled per [`KmsgReader::read`] call, so one call stays short even when the
/// whole ring buffer is replayed.
const MAX_RECORDS_PER_READ: usize = 20_000;

/// `O_NONBLOCK` on Linux (x86, x86-64, arm, arm64, riscv, s390x, powerpc); the `libc` crate is
/// not a dependency of the agent for this one constant.
const O_NONBLOCK: i32 = 0o4000;
/// `EPIPE` from `/dev/kmsg`: records were overwritten before we read them.
const EPIPE: i32 = 32;

/// Where a GPU's PCI bus id (NVML form, `00000000:18:00.0`) leads: its index and UUID.
pub type GpuByPci = HashMap<String, (u32, String)>;

/// One `/dev/kmsg` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    /// Microseconds since boot.
    pub ts_usec: u64,
    pub message: String,
}

enum Input {
    /// `/dev/kmsg` (or a device like it), opened non-blocking.
    Device(File),
    /// A text file of records, one per line, re-read on every call (for tests).
    TextFile(PathBuf),
    /// Nothing can be read; the reason is in `unavailable`.
    None,
}

pub struct KmsgReader {
    input: Input,
    unavailable: Option<String>,
    last_seq: Option<u64>,
    /// Wall-clock time of boot, to date records; `None`: records are dated when read.
    boot: Option<UnixMs>,
    /// Records lost because the ring buffer wrapped before we read them (EPIPE).
    overrun: u64,
}

impl KmsgReader {
    /// Opens a kernel log device such as `/dev/kmsg`. Never fails: a log that cannot be read
    /// gives an inert reader whose [`unavailable`](Self::unavailable) says why.
    pub fn open(path: impl AsRef<Path>) -> Self {
        use std::os::unix::fs::OpenOptionsExt;
        let path = path.as_ref();
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(O_NONBLOCK)
            .open(path);
        match opened {
            Ok(file) => KmsgReader::with_input(Input::Device(file), boot_time()),
            Err(e) => KmsgReader::inert(format!(
                "cannot read the kernel log {} ({e}); Xids are seen only through NVML events, \
                 and not those from before the agent started",
                path.display()
            )),
        }
    }

    /// Reads records from a text file, one `prio,seq,ts_usec,flags;message` per line (for
    /// tests and replays). The file is read again on every call, so lines appended later are
    /// picked up; records are dated from `boot`.
    pub fn from_text_file(path: impl Into<PathBuf>, boot: UnixMs) -> Self {
        KmsgReader::with_input(Input::TextFile(path.into()), Some(boot))
    }

    /// A reader that reads nothing.
    pub fn inert(reason: impl Into<String>) -> Self {
        KmsgReader {
            input: Input::None,
            unavailable: Some(reason.into()),
            last_seq: None,
            boot: None,
            overrun: 0,
        }
    }

    fn with_input(input: Input, boot: Option<UnixMs>) -> Self {
        KmsgReader {
            input,
            unavailable: None,
            last_seq: None,
            boot,
            overrun: 0,
        }
    }

    /// Why nothing is read, if so.
    pub fn unavailable(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    /// Records lost because the kernel's ring buffer wrapped before they were read.
    pub fn overrun(&self) -> u64 {
        self.overrun
    }

    /// Opens `path`: a kernel log device such as `/dev/kmsg`, or a regular file of records,
    /// one per line (a replay or a test fixture; dated from this host's boot).
    pub fn open_path(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        if std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
            KmsgReader::from_text_file(path, boot_time().unwrap_or_else(UnixMs::now))
        } else {
            KmsgReader::open(path)
        }
    }

    /// Xid events in the records that arrived since the last call (on the first call: the
    /// whole ring buffer). `gpus` maps PCI bus ids to GPUs; an Xid on an unknown address is
    /// reported without a GPU.
    pub fn read(&mut self, now: UnixMs, gpus: &GpuByPci) -> Vec<Event> {
        let boot = self.boot;
        self.read_new()
            .iter()
            .filter_map(|r| record_event(r, boot, now, gpus))
            .collect()
    }

    /// The records that arrived since the last call, each once (on the first call: the whole
    /// ring buffer).
    pub fn read_new(&mut self) -> Vec<Record> {
        let mut out = Vec::new();
        for r in self.read_records() {
            if self.last_seq.is_some_and(|last| r.seq <= last) {
                continue;
            }
            self.last_seq = Some(r.seq);
            out.push(r);
        }
        out
    }

    /// When a record was logged: boot time plus its timestamp, or `now` when boot time is
    /// unknown.
    pub fn dated(&self, r: &Record, now: UnixMs) -> UnixMs {
        self.boot
            .map_or(now, |b| b.plus_ms((r.ts_usec / 1000) as i64))
    }

    fn read_records(&mut self) -> Vec<Record> {
        match &mut self.input {
            Input::None => Vec::new(),
            Input::TextFile(path) => match std::fs::read_to_string(&*path) {
                Ok(text) => text.lines().filter_map(parse_record).collect(),
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "kernel log file not readable");
                    Vec::new()
                }
            },
            Input::Device(file) => {
                let mut out = Vec::new();
                // A record is at most ~8 KiB (the kernel's CONSOLE_EXT_LOG_MAX).
                let mut buf = vec![0u8; 8192];
                while out.len() < MAX_RECORDS_PER_READ {
                    match file.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if let Some(r) = parse_record(&String::from_utf8_lossy(&buf[..n])) {
                                out.push(r);
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) if e.raw_os_error() == Some(EPIPE) => self.overrun += 1,
                        Err(e) => {
                            self.unavailable = Some(format!("reading the kernel log failed: {e}"));
                            self.input = Input::None;
                            break;
                        }
                    }
                }
                out
            }
        }
    }
}

/// Wall-clock time of boot from `/proc/uptime` (kernel log timestamps count from boot).
fn boot_time() -> Option<UnixMs> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(UnixMs::now().plus_ms(-((secs * 1000.0) as i64)))
}

/// Parses one record: `prio,seq,ts_usec,flags[,...];message`, possibly followed by
/// continuation lines (` KEY=value`), which are dropped.
pub fn parse_record(text: &str) -> Option<Record> {
    let (header, rest) = text.split_once(';')?;
    let mut fields = header.split(',');
    let _prio: u32 = fields.next()?.trim().parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let ts_usec = fields.next()?.parse().ok()?;
    let message = rest.split('\n').next().unwrap_or("").to_string();
    Some(Record {
        seq,
        ts_usec,
        message,
    })
}

fn record_event(r: &Record, boot: Option<UnixMs>, now: UnixMs, gpus: &GpuByPci) -> Option<Event> {
    let k = xid::parse_kernel_line(&r.message)?;
    let at = boot.map_or(now, |b| b.plus_ms((r.ts_usec / 1000) as i64));

    let mut e = xid_event(at, k.xid, "kmsg")
        .detail("pci_bus_id", &k.pci_bus_id)
        .detail("text", &k.text);
    if let Some((index, uuid)) = gpus.get(&k.pci_bus_id) {
        e = e.on_gpu(*index, uuid);
    }
    Some(e)
}

/// An Xid event, classified by NVIDIA's catalog: critical unless NVIDIA's immediate resolution
/// is IGNORE (then info); an Xid the catalog does not list is a warning.
pub(crate) fn xid_event(at: UnixMs, code: u32, source: &str) -> Event {
    let (severity, message) = match xid::lookup(code) {
        Some(info) if info.immediate_resolution == "IGNORE" => {
            (Severity::Info, format!("Xid {code}: {}", info.description))
        }
        Some(info) => (
            Severity::Critical,
            format!("Xid {code}: {}", info.description),
        ),
        None => (
            Severity::Warning,
            format!("Xid {code} (not in NVIDIA's Xid catalog)"),
        ),
    };
    let mut e = Event::new(at, EventKind::Xid, severity, format!("xid.{code}"), message)
        .from_source(source);
    e.xid = Some(code);
    if let Some(info) = xid::lookup(code) {
        e = e.detail("immediate_resolution", info.immediate_resolution);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (seq, ts_usec, message)
    type Parsed<'a> = Option<(u64, u64, &'a str)>;

    #[test]
    fn parses_records() {
        let cases: &[(&str, Parsed)] = &[
            (
                "4,1024,5123456789,-;NVRM: Xid (PCI:0000:18:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.",
                Some((
                    1024,
                    5_123_456_789,
                    "NVRM: Xid (PCI:0000:18:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.",
                )),
            ),
            (
                "6,7,100,c,more;usb 1-1: new device\n SUBSYSTEM=usb\n DEVICE=c189:1\n",
                Some((7, 100, "usb 1-1: new device")),
            ),
            ("4,9,0,-;", Some((9, 0, ""))),
            ("no header here", None),
            ("x,1,2,-;msg", None),
            ("4,notanumber,2,-;msg", None),
            ("", None),
        ];
        for (text, want) in cases {
            let got = parse_record(text).map(|r| (r.seq, r.ts_usec, r.message));
            assert_eq!(got, want.map(|(s, t, m)| (s, t, m.to_string())), "{text:?}");
        }
    }

    #[test]
    fn classifies_xids_by_the_catalog() {
        let cases = [
            (79, Severity::Critical, "xid.79"),
            (31, Severity::Critical, "xid.31"),
            (63, Severity::Info, "xid.63"),
            (9999, Severity::Warning, "xid.9999"),
        ];
        for (code, severity, want_code) in cases {
            let e = xid_event(UnixMs(5), code, "nvml");
            assert_eq!(
                (e.severity, e.code.as_str()),
                (severity, want_code),
                "Xid {code}"
            );
            assert_eq!(e.xid, Some(code));
            assert_eq!(e.kind, EventKind::Xid);
            assert_eq!(e.source, "nvml");
        }
        assert!(
            xid_event(UnixMs(0), 79, "kmsg")
                .message
                .contains("fallen off the bus")
        );
    }

    fn gpus() -> GpuByPci {
        HashMap::from([("00000000:18:00.0".to_string(), (2, "GPU-b".to_string()))])
    }

    #[test]
    fn reads_a_file_replays_once_and_picks_up_new_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmsg.txt");
        std::fs::write(
            &path,
            "6,1,1000000,-;Linux version 6.8\n\
             4,2,2000000,-;NVRM: Xid (PCI:0000:18:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.\n\
             4,3,3000000,-;NVRM: Xid (PCI:0000:99:00): 13, Graphics Exception\n",
        )
        .unwrap();
        let mut r = KmsgReader::from_text_file(&path, UnixMs(1_000_000));
        assert_eq!(r.unavailable(), None);
        let events = r.read(UnixMs(9_000_000), &gpus());
        let got: Vec<_> = events
            .iter()
            .map(|e| (e.code.as_str(), e.gpu_index, e.timestamp, e.source.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("xid.79", Some(2), UnixMs(1_002_000), "kmsg"),
                ("xid.13", None, UnixMs(1_003_000), "kmsg"),
            ]
        );
        assert_eq!(events[0].gpu_uuid, "GPU-b");
        assert_eq!(events[0].details["pci_bus_id"], "00000000:18:00.0");
        assert_eq!(events[1].details["text"], "Graphics Exception");

        assert!(
            r.read(UnixMs(9_000_000), &gpus()).is_empty(),
            "nothing twice"
        );

        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("4,4,4000000,-;NVRM: GPU 0000:18:00.0: GPU has fallen off the bus.\n");
        std::fs::write(&path, text).unwrap();
        let events = r.read(UnixMs(9_000_000), &gpus());
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].xid, events[0].gpu_index), (Some(79), Some(2)));
    }

    #[test]
    fn an_unreadable_log_is_inert_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = KmsgReader::open(dir.path().join("no-such-kmsg"));
        let why = r.unavailable().unwrap().to_string();
        assert!(why.contains("no-such-kmsg"), "{why}");
        assert!(r.read(UnixMs(0), &gpus()).is_empty());
    }

    #[test]
    fn reads_a_device_until_it_would_block() {
        // A FIFO behaves like /dev/kmsg for a non-blocking reader: data, then EAGAIN.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&path).status();
        if !made.is_ok_and(|s| s.success()) {
            return;
        }
        let mut r = KmsgReader::open(&path);
        assert_eq!(r.unavailable(), None);
        assert!(r.read(UnixMs(0), &gpus()).is_empty());
        {
            use std::io::Write;
            let mut w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            w.write_all(b"4,10,1000,-;NVRM: Xid (PCI:0000:18:00): 48, DBE\n")
                .unwrap();
        }
        let events = r.read(UnixMs(0), &gpus());
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].code, "xid.48");
    }
}
