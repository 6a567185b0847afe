//! The on-disk spool (docs/reliability.md): what the uplink holds for the collector — batches
//! not yet acknowledged and the samples of the batch still open — survives an agent restart,
//! and is sent again with its original session and sequence numbers, so the collector stores
//! each batch once.
//!
//! A directory of append-only segment files, `NNNNNNNNNNNNNNNNNNNN.seg`. Each record is
//! `length u32 | crc32 u32 | kind u8 | payload` (little-endian; the length counts kind and
//! payload, the CRC covers them). Kinds:
//!
//! - `Session` (the session id) opens every segment. It also says that the open batch and the
//!   drops not yet reported, left over from the segments before, were carried into this one.
//! - `Tick` (a protobuf `Batch` without a sequence number): samples, events and inventory
//!   added to the open batch.
//! - `Seal` (sequence, dropped samples, dropped events): the open batch becomes batch N.
//! - `Released` (sequence): every batch up to N was acknowledged and is no longer owed.
//! - `Dropped` (sequence, samples, events): batches up to N were dropped by the uplink's bound
//!   or the spool's cap; the counts are reported in the next batch.
//!
//! The writer starts a new segment only right after a seal, so a segment holds whole batches.
//! A closed segment whose batches are all released is deleted. Over the byte cap, the oldest
//! segments go, and the batches they held unacknowledged are counted as dropped.
//!
//! Each record is one `write` call and is not fsynced: it survives the agent being killed or
//! restarted (the kernel holds it); a machine crash can lose what the kernel had not yet
//! written back. Segments are fsynced when they are closed and when the agent stops. A torn
//! last record (the agent killed mid-write) is cut off when the spool opens; a corrupt record
//! ends the reading of its segment with a warning naming the file.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use gpufleet_model::convert::Batch;
use gpufleet_proto::v1 as pb;
use prost::Message as _;

/// Default cap on the spool's size on disk (`spool_max_bytes`): about 4 hours of an 8-GPU
/// node at 1 Hz in protobuf, more than the in-memory buffer's default hour.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 64 << 20;

/// The smallest cap accepted: a few full batches of an 8-GPU node.
pub const MIN_SPOOL_MAX_BYTES: u64 = 256 << 10;

/// Records larger than this are corrupt (the collector refuses larger messages anyway).
const MAX_RECORD_BYTES: u32 = 64 << 20;

const HEADER: usize = 9;

/// Batch sequence numbers fit in 63 bits (the collector's limit): a record naming a larger one
/// is corrupt.
const MAX_SEQUENCE: u64 = i64::MAX as u64;

/// Segment numbers count up from 1 (one per few MB written: never near this). A spool holding
/// a segment numbered this high has no numbers left to write and is refused.
const MAX_SEGMENT_INDEX: u64 = i64::MAX as u64;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error(
        "cannot use the spool directory {path}: {source} (check that the agent may write its \
         state dir, `state_dir` / --state-dir)"
    )]
    Dir { path: PathBuf, source: io::Error },
    #[error("cannot write the spool segment {path}: {source} (is the disk full?)")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "the spool segment {path} has no successor: segment numbers are used up (move the \
         spool directory away to start a new one)"
    )]
    Exhausted { path: PathBuf },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Session = 1,
    Tick = 2,
    Seal = 3,
    Released = 4,
    Dropped = 5,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Session,
            2 => Kind::Tick,
            3 => Kind::Seal,
            4 => Kind::Released,
            5 => Kind::Dropped,
            _ => return None,
        })
    }
}

/// What a spool held when it was opened: the uplink starts from it.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The session the batches belong to (`None`: a new spool; start a new session).
    pub session_id: Option<String>,
    /// Sealed batches not released, oldest first.
    pub batches: Vec<Batch>,
    /// Samples, events and inventory of the batch not yet sealed (sequence 0).
    pub open: Option<Batch>,
    /// The next sequence number of this session.
    pub next_sequence: u64,
    /// Drops not yet reported in a batch.
    pub dropped_samples: u64,
    pub dropped_events: u64,
    /// Records that could not be read (torn or corrupt), for the log.
    pub damaged: Vec<String>,
}

/// Batches the spool dropped to stay under its cap.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CapDrop {
    /// Every batch up to this sequence is gone.
    pub through: u64,
    /// Samples and events lost with them.
    pub samples: u64,
    pub events: u64,
    /// Earlier drops those batches were to report: they must ride in a later batch.
    pub carried_samples: u64,
    pub carried_events: u64,
}

/// A sealed batch's bookkeeping: what it holds and what drops it reports.
#[derive(Debug, Clone, Copy)]
struct Held {
    sequence: u64,
    samples: u64,
    events: u64,
    reports_samples: u64,
    reports_events: u64,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    bytes: u64,
    /// Sealed batches in this segment.
    batches: Vec<Held>,
}

impl Segment {
    fn last_sequence(&self) -> u64 {
        self.batches.last().map(|b| b.sequence).unwrap_or(0)
    }
}

/// The open spool. Every method that writes returns an error the uplink logs; the uplink goes
/// on in memory (a full disk must not stop monitoring).
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    session_id: String,
    closed: VecDeque<Segment>,
    current: Segment,
    file: File,
    next_index: u64,
    released: u64,
    /// Ticks written to the current segment since its last seal: (samples, events, bytes).
    open_ticks: (u64, u64, u64),
    /// Batches up to this one are on the live stream, awaiting their ack: the cap leaves
    /// them alone (the collector will store them; dropping them would count them lost).
    in_flight: u64,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, reads what it holds, and starts a new segment
    /// that carries the open batch and the unreported drops forward. `new_session` names the
    /// session to use when the spool held none.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        new_session: &str,
    ) -> Result<(Spool, Recovered), SpoolError> {
        let dir_err = |source| SpoolError::Dir {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(dir_err)?;
        let mut names: Vec<(u64, PathBuf)> = fs::read_dir(dir)
            .map_err(dir_err)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let p = e.path();
                let index = p
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".seg")?
                    .parse::<u64>()
                    .ok()?;
                Some((index, p))
            })
            .collect();
        names.sort();
        // Leftovers of a segment that was being created when the agent died.
        for e in fs::read_dir(dir).map_err(dir_err)?.flatten() {
            if e.path().extension().is_some_and(|x| x == "tmp") {
                let _ = fs::remove_file(e.path());
            }
        }

        let mut rec = Recovered::default();
        let mut released = 0u64;
        let mut max_sealed = 0u64;
        let mut closed = VecDeque::new();
        for (_, path) in &names {
            let (segment, damage) = read_segment(path, &mut rec, &mut released, &mut max_sealed);
            rec.damaged.extend(damage);
            closed.push_back(segment);
        }
        rec.batches.retain(|b| b.sequence > released);
        rec.next_sequence = max_sealed.max(released) + 1;
        let session_id = rec
            .session_id
            .clone()
            .unwrap_or_else(|| new_session.to_string());
        let next_index = match names.last() {
            Some((i, path)) if *i >= MAX_SEGMENT_INDEX => {
                return Err(SpoolError::Exhausted { path: path.clone() });
            }
            Some((i, _)) => i + 1,
            None => 1,
        };
        let max_bytes = max_bytes.max(MIN_SPOOL_MAX_BYTES);
        let (current, file) = create_segment(
            dir,
            next_index,
            &session_id,
            rec.open.as_ref(),
            (released, rec.dropped_samples, rec.dropped_events),
        )?;
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / 8).max(64 << 10),
            session_id,
            closed,
            current,
            file,
            next_index: next_index + 1,
            released,
            in_flight: 0,
            open_ticks: rec
                .open
                .as_ref()
                .map(|b| (b.samples.len() as u64, b.events.len() as u64, 0))
                .unwrap_or_default(),
        };
        spool.delete_released();
        Ok((spool, rec))
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Bytes on disk, all segments.
    pub fn bytes(&self) -> u64 {
        self.current.bytes + self.closed.iter().map(|s| s.bytes).sum::<u64>()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The open batch has grown to a segment's worth of bytes: seal it, so that the cap
    /// drops a slice of the backlog, never the whole of one huge batch.
    pub fn wants_seal(&self) -> bool {
        self.open_ticks.2 >= self.segment_bytes / 2
    }

    /// Batches up to `sequence` were sent on the live stream (0: no stream).
    pub fn in_flight(&mut self, sequence: u64) {
        self.in_flight = sequence;
    }

    /// Adds a tick's sample, events and inventory to the open batch.
    pub fn tick(&mut self, tick: Batch) -> Result<(), SpoolError> {
        self.open_ticks.0 += tick.samples.len() as u64;
        self.open_ticks.1 += tick.events.len() as u64;
        let payload = pb::Batch::from(tick).encode_to_vec();
        self.open_ticks.2 += payload.len() as u64;
        self.append(Kind::Tick, &payload)
    }

    /// The open batch became batch `sequence`. Returns what the cap made the spool drop.
    pub fn seal(
        &mut self,
        sequence: u64,
        dropped_samples: u64,
        dropped_events: u64,
    ) -> Result<Option<CapDrop>, SpoolError> {
        self.append(
            Kind::Seal,
            &three_bytes([sequence, dropped_samples, dropped_events]),
        )?;
        let (samples, events, _) = std::mem::take(&mut self.open_ticks);
        self.current.batches.push(Held {
            sequence,
            samples,
            events,
            reports_samples: dropped_samples,
            reports_events: dropped_events,
        });
        if self.current.bytes >= self.segment_bytes {
            self.rotate()?;
        }
        Ok(self.enforce_cap())
    }

    /// Batches up to `sequence` were acknowledged.
    pub fn released(&mut self, sequence: u64) -> Result<(), SpoolError> {
        // No batch is numbered past 63 bits: a larger ack (a confused collector) releases
        // nothing, rather than writing a record the next open would read as damage.
        if sequence <= self.released || sequence > MAX_SEQUENCE {
            return Ok(());
        }
        self.released = sequence;
        self.append(Kind::Released, &sequence.to_le_bytes())?;
        self.delete_released();
        Ok(())
    }

    /// The uplink dropped batches up to `through` (its in-memory bound), `samples` and
    /// `events` in all, not yet reported.
    pub fn dropped(&mut self, through: u64, samples: u64, events: u64) -> Result<(), SpoolError> {
        let through = through.min(MAX_SEQUENCE);
        self.released = self.released.max(through);
        self.append(Kind::Dropped, &three_bytes([through, samples, events]))?;
        self.delete_released();
        Ok(())
    }

    /// Flushes the current segment to disk (at shutdown).
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        self.file.sync_all().map_err(|source| SpoolError::Write {
            path: self.current.path.clone(),
            source,
        })
    }

    fn append(&mut self, kind: Kind, payload: &[u8]) -> Result<(), SpoolError> {
        let record = record(kind, payload);
        self.file
            .write_all(&record)
            .map_err(|source| SpoolError::Write {
                path: self.current.path.clone(),
                source,
            })?;
        self.current.bytes += record.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), SpoolError> {
        self.sync()?;
        let (segment, file) = create_segment(
            &self.dir,
            self.next_index,
            &self.session_id,
            None,
            (self.released, 0, 0),
        )?;
        self.next_index += 1;
        let old = std::mem::replace(&mut self.current, segment);
        self.file = file;
        self.closed.push_back(old);
        self.delete_released();
        Ok(())
    }

    fn delete_released(&mut self) {
        while let Some(front) = self.closed.front() {
            if front.last_sequence() > self.released {
                break;
            }
            let s = self.closed.pop_front().expect("front exists");
            if let Err(e) = fs::remove_file(&s.path) {
                tracing::warn!(
                    "cannot remove the spent spool segment {}: {e}",
                    s.path.display()
                );
            }
        }
    }

    /// Deletes the oldest closed segments while the spool is over its cap; counts the
    /// unreleased batches they held.
    fn enforce_cap(&mut self) -> Option<CapDrop> {
        let mut drop = CapDrop::default();
        while self.bytes() > self.max_bytes {
            let sent = |f: &Segment| {
                f.batches
                    .iter()
                    .any(|b| b.sequence > self.released && b.sequence <= self.in_flight)
            };
            if self.closed.front().is_none_or(sent) {
                break;
            }
            let s = self.closed.pop_front().expect("front exists");
            for b in &s.batches {
                if b.sequence > self.released {
                    // Saturating: the counts of a damaged spool may be anything.
                    drop.samples = drop.samples.saturating_add(b.samples);
                    drop.events = drop.events.saturating_add(b.events);
                    drop.carried_samples = drop.carried_samples.saturating_add(b.reports_samples);
                    drop.carried_events = drop.carried_events.saturating_add(b.reports_events);
                }
                drop.through = drop.through.max(b.sequence);
            }
            if let Err(e) = fs::remove_file(&s.path) {
                tracing::warn!("cannot remove the spool segment {}: {e}", s.path.display());
            }
        }
        if drop.through == 0 {
            return None;
        }
        self.released = self.released.max(drop.through);
        // Recorded so that a restart neither replays nor counts them twice.
        let p = three_bytes([
            drop.through,
            drop.samples.saturating_add(drop.carried_samples),
            drop.events.saturating_add(drop.carried_events),
        ]);
        if let Err(e) = self.append(Kind::Dropped, &p) {
            tracing::warn!("{e}");
        }
        Some(drop)
    }
}

fn record(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(1 + payload.len());
    body.push(kind as u8);
    body.extend_from_slice(payload);
    let mut out = Vec::with_capacity(HEADER - 1 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Writes a new segment under a temporary name — the session record, the carried open batch
/// and drops — makes it durable, then gives it its name, so a crash leaves either the old
/// state or the new one.
fn create_segment(
    dir: &Path,
    index: u64,
    session_id: &str,
    open: Option<&Batch>,
    (released, dropped_samples, dropped_events): (u64, u64, u64),
) -> Result<(Segment, File), SpoolError> {
    let path = dir.join(format!("{index:020}.seg"));
    let tmp = dir.join(format!("{index:020}.tmp"));
    let err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| SpoolError::Write { path: p, source }
    };
    let mut bytes = record(Kind::Session, session_id.as_bytes());
    if released > 0 || dropped_samples > 0 || dropped_events > 0 {
        bytes.extend(record(
            Kind::Dropped,
            &three_bytes([released, dropped_samples, dropped_events]),
        ));
    }
    if let Some(open) = open {
        bytes.extend(record(
            Kind::Tick,
            &pb::Batch::from(open.clone()).encode_to_vec(),
        ));
    }
    {
        let mut f = File::create(&tmp).map_err(err(&tmp))?;
        f.write_all(&bytes).map_err(err(&tmp))?;
        f.sync_all().map_err(err(&tmp))?;
    }
    fs::rename(&tmp, &path).map_err(err(&path))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    let file = OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(err(&path))?;
    Ok((
        Segment {
            path,
            bytes: bytes.len() as u64,
            batches: Vec::new(),
        },
        file,
    ))
}

/// Reads one segment into `rec`; returns the segment's bookkeeping and what was damaged.
/// A torn tail is cut off (the file is truncated to its last whole record).
fn read_segment(
    path: &Path,
    rec: &mut Recovered,
    released: &mut u64,
    max_sealed: &mut u64,
) -> (Segment, Vec<String>) {
    let mut damage = Vec::new();
    let mut segment = Segment {
        path: path.to_path_buf(),
        bytes: 0,
        batches: Vec::new(),
    };
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) => {
            damage.push(format!(
                "{}: cannot read ({e}); its batches are lost",
                path.display()
            ));
            return (segment, damage);
        }
    };
    segment.bytes = data.len() as u64;
    let mut at = 0usize;
    let mut open_counts = (0u64, 0u64);
    while at < data.len() {
        let Some(header) = data.get(at..at + HEADER - 1) else {
            damage.push(torn(path, at, &data));
            break;
        };
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let end = at + HEADER - 1 + len as usize;
        if len == 0 || len > MAX_RECORD_BYTES || end > data.len() {
            damage.push(torn(path, at, &data));
            break;
        }
        let body = &data[at + HEADER - 1..end];
        if crc32fast::hash(body) != crc {
            damage.push(format!(
                "{}: record at byte {at} fails its checksum; the rest of this segment is skipped",
                path.display()
            ));
            break;
        }
        let payload = &body[1..];
        let ok = match Kind::from_u8(body[0]) {
            Some(Kind::Session) => match std::str::from_utf8(payload) {
                Ok(s) => {
                    rec.session_id = Some(s.to_string());
                    // What was open and unreported is carried by the records that follow.
                    rec.open = None;
                    rec.dropped_samples = 0;
                    rec.dropped_events = 0;
                    open_counts = (0, 0);
                    true
                }
                Err(_) => false,
            },
            // Checked like a batch off the wire (a tick has no sequence number of its own).
            Some(Kind::Tick) => match pb::Batch::decode(payload).ok().and_then(|mut b| {
                b.sequence = 1;
                Batch::try_from(b).ok()
            }) {
                Some(t) => {
                    open_counts.0 += t.samples.len() as u64;
                    open_counts.1 += t.events.len() as u64;
                    let open = rec.open.get_or_insert_with(Batch::default);
                    open.samples.extend(t.samples);
                    open.events.extend(t.events);
                    if t.inventory.is_some() {
                        open.inventory = t.inventory;
                    }
                    true
                }
                None => false,
            },
            Some(Kind::Seal) => match three(payload) {
                Some([seq, ds, de]) if (1..=MAX_SEQUENCE).contains(&seq) => {
                    let mut b = rec.open.take().unwrap_or_default();
                    b.sequence = seq;
                    b.dropped_samples = ds;
                    b.dropped_events = de;
                    rec.dropped_samples = 0;
                    rec.dropped_events = 0;
                    rec.batches.push(b);
                    segment.batches.push(Held {
                        sequence: seq,
                        samples: open_counts.0,
                        events: open_counts.1,
                        reports_samples: ds,
                        reports_events: de,
                    });
                    open_counts = (0, 0);
                    *max_sealed = (*max_sealed).max(seq);
                    true
                }
                _ => false,
            },
            Some(Kind::Released) => match payload.try_into().map(u64::from_le_bytes) {
                Ok(through) if through <= MAX_SEQUENCE => {
                    *released = (*released).max(through);
                    true
                }
                _ => false,
            },
            Some(Kind::Dropped) => match three(payload) {
                Some([through, samples, events]) if through <= MAX_SEQUENCE => {
                    *released = (*released).max(through);
                    rec.dropped_samples = rec.dropped_samples.saturating_add(samples);
                    rec.dropped_events = rec.dropped_events.saturating_add(events);
                    true
                }
                _ => false,
            },
            None => false,
        };
        if !ok {
            damage.push(format!(
                "{}: record at byte {at} cannot be read; the rest of this segment is skipped",
                path.display()
            ));
            break;
        }
        at = end;
    }
    if at < data.len() {
        // Cut the damaged tail so the next open reads cleanly.
        if let Ok(f) = OpenOptions::new().write(true).open(path) {
            let _ = f.set_len(at as u64);
        }
        segment.bytes = at as u64;
    }
    (segment, damage)
}

fn torn(path: &Path, at: usize, data: &[u8]) -> String {
    format!(
        "{}: the last {} bytes (from byte {at}) are a torn record, cut off",
        path.display(),
        data.len() - at
    )
}

/// The payload of a seal or drop record: three little-endian u64s ([`three`] reads it back).
fn three_bytes(v: [u64; 3]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn three(p: &[u8]) -> Option<[u64; 3]> {
    if p.len() != 24 {
        return None;
    }
    let v = |i: usize| u64::from_le_bytes(p[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    Some([v(0), v(1), v(2)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpufleet_model::{Sample, UnixMs};

    fn tick(t: i64) -> Batch {
        Batch {
            samples: vec![Sample {
                timestamp: UnixMs(t),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// About `kib` KiB of events.
    fn events(kib: usize) -> Vec<gpufleet_model::Event> {
        (0..kib)
            .map(|i| gpufleet_model::Event {
                code: format!("agent.test{i}"),
                message: "m".repeat(1000),
                source: "agent".into(),
                ..Default::default()
            })
            .collect()
    }

    fn times(b: &Batch) -> Vec<i64> {
        b.samples.iter().map(|s| s.timestamp.0).collect()
    }

    /// Found by the spool proptest (agent/tests/untrusted_input.rs): a segment numbered
    /// u64::MAX, or well-framed records with sequences and drop counts near u64::MAX, made
    /// `open` overflow. Now such a segment is refused with an error that says what to do, and
    /// such records are damage.
    #[test]
    fn a_damaged_spool_with_huge_numbers_opens_and_reports_it() {
        let three = |a: u64, b: u64, c: u64| {
            [a, b, c]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
        };
        let cases: &[(&str, Vec<u8>, usize)] = &[
            // (file name, content, damaged records reported)
            (
                "00000000000000000001.seg",
                [
                    record(Kind::Session, b"s1"),
                    record(Kind::Dropped, &three(1, u64::MAX, u64::MAX)),
                    record(Kind::Dropped, &three(1, u64::MAX, 1)),
                ]
                .concat(),
                0,
            ),
            (
                "00000000000000000001.seg",
                [
                    record(Kind::Session, b"s1"),
                    record(Kind::Seal, &three(u64::MAX, 0, 0)),
                ]
                .concat(),
                1,
            ),
            (
                "00000000000000000001.seg",
                [
                    record(Kind::Session, b"s1"),
                    record(Kind::Released, &u64::MAX.to_le_bytes()),
                ]
                .concat(),
                1,
            ),
            (
                "00000000000000000001.seg",
                [
                    record(Kind::Session, b"s1"),
                    record(Kind::Seal, &three(0, 0, 0)),
                ]
                .concat(),
                1,
            ),
        ];
        for index in [i64::MAX as u64, u64::MAX] {
            let dir = tempfile::tempdir().unwrap();
            let name = format!("{index:020}.seg");
            fs::write(dir.path().join(&name), record(Kind::Session, b"s1")).unwrap();
            let e = Spool::open(dir.path(), 0, "new").unwrap_err().to_string();
            assert!(e.contains(&name) && e.contains("used up"), "{e}");
        }
        // An ack past 63 bits (a confused collector) is not written as a record the next open
        // would call damage.
        {
            let dir = tempfile::tempdir().unwrap();
            let (mut s, _) = Spool::open(dir.path(), 0, "s1").unwrap();
            s.released(u64::MAX).unwrap();
            s.dropped(u64::MAX, 1, 1).unwrap();
            drop(s);
            let (_, rec) = Spool::open(dir.path(), 0, "s1").unwrap();
            assert!(rec.damaged.is_empty(), "{:?}", rec.damaged);
            assert_eq!(rec.next_sequence, MAX_SEQUENCE + 1);
        }
        for (name, bytes, damaged) in cases {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join(name), bytes).unwrap();
            let (_, rec) = Spool::open(dir.path(), 0, "new").unwrap();
            assert_eq!(rec.damaged.len(), *damaged, "{name}: {:?}", rec.damaged);
            assert!(rec.next_sequence >= 1 && rec.next_sequence <= MAX_SEQUENCE + 1);
            let (_, again) = Spool::open(dir.path(), 0, "new").unwrap();
            assert!(again.damaged.is_empty(), "{name}: {:?}", again.damaged);
        }
    }

    #[test]
    fn a_new_spool_starts_the_given_session_at_sequence_one() {
        let dir = tempfile::tempdir().unwrap();
        let (s, rec) = Spool::open(dir.path(), DEFAULT_SPOOL_MAX_BYTES, "s-new").unwrap();
        assert_eq!(s.session_id(), "s-new");
        assert!(rec.session_id.is_none());
        assert_eq!(rec.next_sequence, 1);
        assert!(rec.batches.is_empty() && rec.open.is_none());
    }

    #[test]
    fn unreleased_batches_and_the_open_batch_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = Spool::open(dir.path(), DEFAULT_SPOOL_MAX_BYTES, "s1").unwrap();
            s.tick(tick(1)).unwrap();
            s.tick(tick(2)).unwrap();
            s.seal(1, 0, 0).unwrap();
            s.tick(tick(3)).unwrap();
            s.seal(2, 5, 1).unwrap();
            s.released(1).unwrap();
            s.tick(tick(4)).unwrap();
            // No sync: a killed agent never gets to flush.
        }
        let (s, rec) = Spool::open(dir.path(), DEFAULT_SPOOL_MAX_BYTES, "other").unwrap();
        assert!(rec.damaged.is_empty(), "{:?}", rec.damaged);
        assert_eq!(s.session_id(), "s1", "the session goes on");
        assert_eq!(rec.batches.len(), 1);
        assert_eq!(rec.batches[0].sequence, 2);
        assert_eq!(times(&rec.batches[0]), [3]);
        assert_eq!(rec.batches[0].dropped_samples, 5);
        assert_eq!(times(rec.open.as_ref().unwrap()), [4]);
        assert_eq!(rec.next_sequence, 3);
        assert!(rec.damaged.is_empty(), "{:?}", rec.damaged);
    }

    #[test]
    fn restarts_carry_the_open_batch_and_drops_forward_without_doubling_them() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = Spool::open(dir.path(), DEFAULT_SPOOL_MAX_BYTES, "s1").unwrap();
            s.tick(tick(1)).unwrap();
            s.dropped(0, 7, 2).unwrap();
        }
        for _ in 0..3 {
            let (_s, rec) = Spool::open(dir.path(), DEFAULT_SPOOL_MAX_BYTES, "x").unwrap();
            assert_eq!(times(rec.open.as_ref().unwrap()), [1]);
            assert_eq!((rec.dropped_samples, rec.dropped_events), (7, 2));
        }
        let (mut s, rec) = Spool::open(dir.path(), DEFAULT_SPOOL_MAX_BYTES, "x").unwrap();
        assert_eq!(rec.next_sequence, 1);
        s.seal(1, 7, 2).unwrap();
        drop(s);
        let (_s, rec) = Spool::open(dir.path(), DEFAULT_SPOOL_MAX_BYTES, "x").unwrap();
        assert!(rec.open.is_none());
        assert_eq!(
            (rec.dropped_samples, rec.dropped_events),
            (0, 0),
            "reported"
        );
        assert_eq!(rec.batches.len(), 1);
        assert_eq!(rec.batches[0].dropped_samples, 7);
    }

    #[test]
    fn released_segments_are_deleted_and_a_drained_spool_stays_small() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), MIN_SPOOL_MAX_BYTES, "s").unwrap();
        let big = |t| Batch {
            samples: vec![
                Sample {
                    timestamp: UnixMs(t),
                    ..Default::default()
                };
                1
            ],
            events: events(20),
            ..Default::default()
        };
        for seq in 1..=200u64 {
            s.tick(big(seq as i64)).unwrap();
            assert_eq!(s.seal(seq, 0, 0).unwrap(), None);
            s.released(seq).unwrap();
        }
        let files = fs::read_dir(dir.path()).unwrap().count();
        assert!(files <= 2, "{files} segments left");
        assert!(s.bytes() < 200_000, "{} bytes", s.bytes());
    }

    #[test]
    fn over_the_cap_the_oldest_batches_go_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), MIN_SPOOL_MAX_BYTES, "s").unwrap();
        let payload = |t| Batch {
            samples: vec![Sample {
                timestamp: UnixMs(t),
                ..Default::default()
            }],
            events: events(10),
            ..Default::default()
        };
        // As the uplink does: what the cap dropped is reported in the next batch.
        let mut dropped = CapDrop::default();
        let mut unreported = 0;
        for seq in 1..=300u64 {
            s.tick(payload(seq as i64)).unwrap();
            let d = s.seal(seq, unreported, 0).unwrap();
            unreported = 0;
            if let Some(d) = d {
                assert!(d.through > dropped.through);
                dropped.through = d.through;
                dropped.samples += d.samples;
                dropped.events += d.events;
                unreported = d.samples + d.carried_samples;
            }
        }
        assert!(s.bytes() <= MIN_SPOOL_MAX_BYTES + s.segment_bytes + 20_000);
        assert!(dropped.samples > 0);
        assert_eq!(
            dropped.samples, dropped.through,
            "one sample per batch, all counted"
        );
        drop(s);
        let (_s, rec) = Spool::open(dir.path(), MIN_SPOOL_MAX_BYTES, "s").unwrap();
        assert_eq!(rec.batches.first().unwrap().sequence, dropped.through + 1);
        assert_eq!(rec.batches.last().unwrap().sequence, 300);
        assert_eq!(
            rec.dropped_samples, unreported,
            "the cap's drops since the last batch are still owed to the collector"
        );
        // Nothing lost silently: what the kept batches report plus what is still owed is
        // every sample the cap dropped (reports riding in dropped batches were carried on).
        let reported: u64 = rec.batches.iter().map(|b| b.dropped_samples).sum();
        assert_eq!(reported + rec.dropped_samples, dropped.samples);
    }

    #[test]
    fn the_cap_never_drops_batches_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), MIN_SPOOL_MAX_BYTES, "s").unwrap();
        let tick = |t| Batch {
            samples: vec![Sample {
                timestamp: UnixMs(t),
                ..Default::default()
            }],
            events: events(10),
            ..Default::default()
        };
        for seq in 1..=20u64 {
            s.tick(tick(seq as i64)).unwrap();
            assert_eq!(s.seal(seq, 0, 0).unwrap(), None);
        }
        // All 20 sent on the stream; more arrive while their acks are outstanding.
        s.in_flight(20);
        for seq in 21..=60u64 {
            s.tick(tick(seq as i64)).unwrap();
            if let Some(d) = s.seal(seq, 0, 0).unwrap() {
                panic!("dropped {d:?} while batches up to 20 were in flight");
            }
        }
        // The stream ends: the cap applies again.
        s.in_flight(0);
        s.tick(tick(61)).unwrap();
        let d = s.seal(61, 0, 0).unwrap().expect("over the cap");
        assert!(d.through >= 1 && d.samples > 0);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_a_corrupt_record_is_named() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = Spool::open(dir.path(), DEFAULT_SPOOL_MAX_BYTES, "s").unwrap();
            s.tick(tick(1)).unwrap();
            s.seal(1, 0, 0).unwrap();
            s.tick(tick(2)).unwrap();
        }
        let seg = dir.path().join(format!("{:020}.seg", 1));
        let mut data = fs::read(&seg).unwrap();
        let full = data.len();
        data.truncate(full - 3);
        fs::write(&seg, &data).unwrap();
        let (_s, rec) = Spool::open(dir.path(), DEFAULT_SPOOL_MAX_BYTES, "s").unwrap();
        assert_eq!(
            rec.batches.len(),
            1,
            "the whole batch before the tear is kept"
        );
        assert!(rec.open.is_none(), "the torn tick is gone");
        assert!(rec.damaged[0].contains("torn"), "{:?}", rec.damaged);

        // Flip a byte inside the sealed batch's tick of the carried segment.
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, _) = Spool::open(dir.path(), DEFAULT_SPOOL_MAX_BYTES, "s").unwrap();
            s.tick(tick(1)).unwrap();
            s.seal(1, 0, 0).unwrap();
        }
        let seg = dir.path().join(format!("{:020}.seg", 1));
        let mut data = fs::read(&seg).unwrap();
        let n = data.len();
        data[n - 10] ^= 0xff; // inside the seal record's payload
        fs::write(&seg, &data).unwrap();
        let (_s, rec) = Spool::open(dir.path(), DEFAULT_SPOOL_MAX_BYTES, "s").unwrap();
        assert!(rec.damaged[0].contains("checksum"), "{:?}", rec.damaged);
        assert!(rec.damaged[0].contains(".seg"), "names the file");
    }

    #[test]
    fn garbage_files_never_panic_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let mut seed = 7u64;
        for i in 1..=20u64 {
            let mut data = Vec::new();
            for _ in 0..(i * 37) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                data.push((seed >> 33) as u8);
            }
            // Some with a plausible header.
            if i % 2 == 0 {
                let len = (data.len() as u32 - 8).to_le_bytes();
                data[0..4].copy_from_slice(&len);
            }
            fs::write(dir.path().join(format!("{i:020}.seg")), &data).unwrap();
        }
        let (_s, rec) = Spool::open(dir.path(), DEFAULT_SPOOL_MAX_BYTES, "s").unwrap();
        assert!(!rec.damaged.is_empty());
    }
}
