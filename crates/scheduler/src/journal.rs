//! The journal: what a scheduler must not forget, appended to a file so that a scheduler
//! started again with the same file restores it (`rask scheduler --journal PATH`).
//!
//! What is recorded: each graph's tasks as submitted, then which of them the core created
//! and the ids it gave them (workers hold values by id), tasks forgotten, the keys each
//! client holds futures for, tasks that failed and why, published datasets, clients and
//! workers joining and leaving. Not recorded: where values are
//! (workers say so when they join again) and what ran (lineage recomputes what no worker
//! still holds).
//!
//! The file is a magic, then records: a 4-byte length, an 8-byte [`checksum`] of the
//! payload, the payload (an rkyv archive of a [`Record`]). A record cut short or damaged —
//! a crash in the middle of a write — ends the journal: the file is cut there on restore.
//! Writes go to the OS at the end of a round of the scheduler's loop once 20 ms have passed
//! since the last (within half a second when the loop is idle: a process killed loses at
//! most that much); `fsync` follows the [`Fsync`] policy. The journal is rewritten from the live state (compacted) when it
//! has grown to twice its last compacted size and past [`COMPACT_MIN`].

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rask_proto::msg::Resource;
use rask_proto::Datum;
use rkyv::{Archive, Deserialize, Serialize};

/// The file's first bytes (the last is the format's version).
pub const MAGIC: &[u8; 8] = b"RASKJNL\x03";

/// Version 2's first bytes: its records are version 3's but [`Record::Erred`], so it is
/// read as it is (and rewritten as version 3 on restore).
const MAGIC_V2: &[u8; 8] = b"RASKJNL\x02";

/// The journal is not compacted below this size.
pub const COMPACT_MIN: u64 = 64 << 20;

/// The most bytes one record may announce (a larger length is damage).
const MAX_RECORD: u32 = 1 << 30;

/// When the journal's writes are forced to the disk.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fsync {
    /// After every round of the scheduler's loop that wrote something.
    Always,
    /// At most this often (what was written since may be lost with the machine, not with
    /// the process: it is in the OS's cache).
    Every(Duration),
    /// Never (the OS writes when it will).
    Never,
}

impl std::str::FromStr for Fsync {
    type Err = String;
    fn from_str(s: &str) -> Result<Fsync, String> {
        match s {
            "always" => Ok(Fsync::Always),
            "never" => Ok(Fsync::Never),
            secs => secs
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .map(|s| Fsync::Every(Duration::from_secs_f64(s)))
                .ok_or_else(|| {
                    format!("journal fsync {s:?}: always, never, or a period in seconds")
                }),
        }
    }
}

/// Where the journal is and how it is written.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    /// The journal's file (created if missing, restored from if not empty).
    pub path: PathBuf,
    /// When writes are forced to the disk.
    pub fsync: Fsync,
    /// How long restored clients and workers have to come back before the scheduler
    /// goes on without them (their keys released; what only they held recomputed).
    pub grace: Duration,
}

/// A task as the journal keeps it (its id is in the [`Record::Created`] that follows).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct JournalTask {
    /// Its key.
    pub key: String,
    /// Its op.
    pub op: String,
    /// Its arguments.
    pub args: Datum,
    /// Their byte payloads.
    pub bufs: Vec<Bytes>,
    /// The keys of its inputs.
    pub deps: Vec<String>,
    /// What it needs of a worker.
    pub resources: Vec<Resource>,
    /// The program code it runs with, for a typed op.
    pub code: Option<u64>,
}

/// One thing the journal remembers.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Record {
    /// A graph's tasks as submitted (tasks already known among them included).
    Graph(Vec<JournalTask>),
    /// Which tasks of the last [`Record::Graph`] were created, by index, with the ids
    /// given them, in creation order (inputs first).
    Created(Vec<(u32, u64)>),
    /// Tasks forgotten, by id.
    Forgotten(Vec<u64>),
    /// A client joined.
    ClientJoined {
        /// Its id.
        id: u32,
        /// Its name.
        name: String,
    },
    /// A client left (its keys released).
    ClientLeft(u32),
    /// A client holds futures for these keys (from a graph, or again).
    Wants {
        /// The client.
        client: u32,
        /// The keys.
        keys: Vec<String>,
    },
    /// A client dropped its futures for these keys.
    Releases {
        /// The client.
        client: u32,
        /// The keys.
        keys: Vec<String>,
    },
    /// A worker joined.
    WorkerJoined {
        /// Its id.
        id: u32,
        /// Its name.
        name: String,
    },
    /// A worker left.
    WorkerLeft(u32),
    /// Ids issued from here on have generations of at least this (a restore's floor).
    Floor(u32),
    /// Tasks that failed, by id, with the message (not those failing with an input: they
    /// fail again with it).
    Erred(Vec<(u64, String)>),
    /// A dataset published (or published again, replacing one of that name): its keys,
    /// held by the core for the client id `client`, which no connection has.
    Published {
        /// The dataset's name.
        name: String,
        /// The id holding its keys.
        client: u32,
        /// Its keys, in order.
        keys: Vec<String>,
    },
    /// A dataset unpublished.
    Unpublished(String),
}

/// Appends records to the journal's file.
pub(crate) struct JournalWriter {
    file: BufWriter<File>,
    path: PathBuf,
    fsync: Fsync,
    /// Bytes in the file.
    len: u64,
    /// Its size when last compacted (or restored).
    compacted: u64,
    /// Bytes appended since the last flush.
    dirty: u64,
    last_flush: Instant,
    last_sync: Instant,
}

/// Appended records reach the OS at least this often, or once this many bytes wait.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
const FLUSH_BYTES: u64 = 256 << 10;

/// A record's checksum: FNV-1a over 8-byte little-endian words (then the last bytes one
/// by one), each step folding the high half into the low half, so that a change in a
/// word's high bits reaches the next steps' low bits (multiplying moves bits only
/// upwards: without the fold, one bit flipped in each of two words can cancel). Eight
/// times fewer multiplications than FNV-1a byte by byte: the journal checksums every
/// graph.
pub fn checksum(bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(PRIME);
        h ^= h >> 32;
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
        h ^= h >> 32;
    }
    h
}

/// A record as the file holds it: its length, its payload's checksum, the payload.
pub(crate) struct Framed {
    head: [u8; 12],
    payload: rkyv::util::AlignedVec<16>,
}

impl Framed {
    pub(crate) fn new(record: &Record) -> Framed {
        let payload = rask_proto::frame::encode_header(record);
        let mut head = [0; 12];
        head[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        head[4..].copy_from_slice(&checksum(&payload).to_le_bytes());
        Framed { head, payload }
    }

    fn write_to(&self, out: &mut impl Write) -> std::io::Result<u64> {
        out.write_all(&self.head)?;
        out.write_all(&self.payload)?;
        Ok(12 + self.payload.len() as u64)
    }
}

/// The records of the journal at `path` (none if it does not exist or is empty), and the
/// length of its valid part: what follows it (a record cut short or damaged) is not
/// part of the journal. An error when the file is not a journal.
pub fn read(path: &Path) -> Result<(Vec<Record>, u64), String> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => f
            .read_to_end(&mut bytes)
            .map_err(|e| format!("journal {}: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(format!("journal {}: {e}", path.display())),
    };
    if bytes.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let magic = bytes.get(..MAGIC.len());
    if magic != Some(MAGIC.as_slice()) && magic != Some(MAGIC_V2.as_slice()) {
        return Err(format!(
            "{} is not a Rask journal of this version (it does not start with {:?})",
            path.display(),
            String::from_utf8_lossy(MAGIC)
        ));
    }
    let mut records = Vec::new();
    let mut at = MAGIC.len();
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    while let Some(head) = bytes.get(at..at + 12) {
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        let sum = u64::from_le_bytes(head[4..].try_into().expect("8 bytes"));
        if len > MAX_RECORD {
            break;
        }
        let Some(payload) = bytes.get(at + 12..at + 12 + len as usize) else {
            break;
        };
        if checksum(payload) != sum {
            break;
        }
        aligned.clear();
        aligned.extend_from_slice(payload);
        match rask_proto::frame::decode_header::<Record>(&aligned) {
            Ok(r) => records.push(r),
            Err(_) => break,
        }
        at += 12 + len as usize;
    }
    Ok((records, at as u64))
}

impl JournalWriter {
    /// Opens the journal at `path` for appending after its first `valid` bytes (what
    /// follows is cut), writing the magic into a new one.
    pub(crate) fn open(path: &Path, valid: u64, fsync: Fsync) -> std::io::Result<JournalWriter> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        let mut len = valid;
        if len < MAGIC.len() as u64 {
            file.set_len(0)?;
            file.write_all(MAGIC)?;
            len = MAGIC.len() as u64;
        } else {
            file.set_len(len)?;
        }
        file.seek(SeekFrom::Start(len))?;
        file.sync_data()?;
        Ok(JournalWriter {
            file: BufWriter::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            fsync,
            len,
            compacted: len,
            dirty: 0,
            last_flush: Instant::now(),
            last_sync: Instant::now(),
        })
    }

    /// Appends a record (to the buffer: [`JournalWriter::flush`] hands it to the OS).
    #[cfg(test)]
    pub(crate) fn append(&mut self, record: &Record) -> std::io::Result<()> {
        self.append_framed(&Framed::new(record))
    }

    /// Appends a record encoded beforehand.
    pub(crate) fn append_framed(&mut self, record: &Framed) -> std::io::Result<()> {
        let n = record.write_to(&mut self.file)?;
        self.len += n;
        self.dirty += n;
        Ok(())
    }

    /// Whether what was appended should reach the OS now: [`FLUSH_EVERY`] has passed or
    /// [`FLUSH_BYTES`] wait (a busy scheduler's rounds are short: a write per round would
    /// cost more than the round).
    pub(crate) fn due(&self) -> bool {
        self.dirty >= FLUSH_BYTES || self.last_flush.elapsed() >= FLUSH_EVERY
    }

    /// Hands what was appended to the OS now, and to the disk as the policy says.
    pub(crate) fn flush(&mut self) -> std::io::Result<()> {
        if self.dirty == 0 {
            return Ok(());
        }
        self.file.flush()?;
        self.dirty = 0;
        self.last_flush = Instant::now();
        let sync = match self.fsync {
            Fsync::Always => true,
            Fsync::Every(p) => self.last_sync.elapsed() >= p,
            Fsync::Never => false,
        };
        if sync {
            self.file.get_ref().sync_data()?;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    /// Whether the journal has grown enough to be compacted.
    pub(crate) fn wants_compaction(&self) -> bool {
        self.len >= COMPACT_MIN && self.len >= 2 * self.compacted
    }

    /// Replaces the journal with `records` (the live state), atomically: written to a file
    /// beside it, synced, renamed over it.
    pub(crate) fn rewrite(&mut self, records: &[Record]) -> std::io::Result<()> {
        self.flush()?;
        let tmp = self.path.with_extension("compacting");
        let mut out = BufWriter::new(File::create(&tmp)?);
        out.write_all(MAGIC)?;
        let mut len = MAGIC.len() as u64;
        for r in records {
            len += Framed::new(r).write_to(&mut out)?;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        let mut file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        file.seek(SeekFrom::Start(len))?;
        self.file = BufWriter::with_capacity(1 << 20, file);
        self.len = len;
        self.compacted = len;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Bytes in the journal.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

#[cfg(test)]
pub(crate) mod tests;
