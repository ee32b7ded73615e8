//! A holder serving from its arena over an abstract unix socket, and a requester.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rask_proto::msg::{DataItem, Hello, PeerMsg, Role};
use rask_proto::{Datum, Payload, TaskId};
use rask_transport::shm::{Arena, FdReader, Importer};
use rask_transport::{ConnConfig, FrameReader, Sender, TransportError};
use tokio::sync::{broadcast, mpsc};

/// What the holder serves: host bytes, or bytes in a (test) device's memory.
pub type Store = Arc<Mutex<HashMap<u64, Payload>>>;

pub struct Holder {
    pub arena: Arena,
    pub store: Store,
    pub addr: String,
    pub retire: broadcast::Sender<Vec<u32>>,
    /// One message per connection that ended.
    pub ended: mpsc::UnboundedReceiver<()>,
    server: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Holder {
    /// Kills the holder: the listener and every connection stop (and are gone when this
    /// returns).
    pub async fn kill(self) {
        self.server.abort();
        let _ = self.server.await;
        let conns: Vec<_> = self.conns.lock().unwrap().drain(..).collect();
        for c in conns {
            c.abort();
            let _ = c.await;
        }
    }
}

pub async fn holder(cfg: ConnConfig) -> Holder {
    let (listener, addr) = rask_transport::listen_unix().unwrap();
    let arena = Arena::new(4 << 20);
    let store: Store = Arc::default();
    let (retire, _) = broadcast::channel(64);
    let (ended_tx, ended) = mpsc::unbounded_channel();
    let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
    let (a, s, r, c) = (arena.clone(), store.clone(), retire.clone(), conns.clone());
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (arena, store, retired, cfg, ended) = (
                a.clone(),
                s.clone(),
                r.subscribe(),
                cfg.clone(),
                ended_tx.clone(),
            );
            let h = tokio::spawn(async move {
                let (rd, mut w) = stream.into_split();
                let mut reader = FrameReader::new(FdReader::new(rd), cfg.clone());
                if rask_transport::accept(&mut reader, &mut w, &cfg)
                    .await
                    .is_ok()
                {
                    rask_transport::welcome(&mut w, &reader, 0).await.unwrap();
                    // Like a worker: device bytes stay on the device only for a requester
                    // that imports them into its own.
                    let lookup = move |tasks: Vec<TaskId>, into_device: bool| {
                        // Taken out of the store first: a download must not hold it.
                        let found: Vec<(TaskId, Option<Payload>)> = {
                            let store = store.lock().unwrap();
                            tasks
                                .into_iter()
                                .map(|t| (t, store.get(&t.0).cloned()))
                                .collect()
                        };
                        let (mut items, mut bufs, mut missing) = (vec![], vec![], vec![]);
                        for (t, b) in found {
                            match b {
                                Some(b) => {
                                    items.push(DataItem {
                                        task: t,
                                        value: Datum::Buf(bufs.len() as u32),
                                    });
                                    bufs.push(match b {
                                        Payload::Device(_) if !into_device => {
                                            Payload::Host(b.to_host().unwrap())
                                        }
                                        b => b,
                                    });
                                }
                                None => missing.push(t),
                            }
                        }
                        (items, bufs, missing)
                    };
                    let _ =
                        rask_transport::data::serve_shm(reader, w, arena, retired, lookup).await;
                }
                let _ = ended.send(());
            });
            c.lock().unwrap().push(h);
        }
    });
    Holder {
        arena,
        store,
        addr,
        retire,
        ended,
        server,
        conns,
    }
}

pub fn hello() -> Hello {
    Hello {
        protocol: rask_proto::PROTOCOL_VERSION,
        schema: rask_proto::PROTOCOL_SCHEMA,
        rask_version: rask_proto::RASK_VERSION.into(),
        role: Role::Peer,
        name: "requester".into(),
        host_id: rask_transport::host_id(),
        pid: std::process::id(),
        nonce: [0; 32],
        registry: None,
        worker: None,
        program: None,
        resume: None,
    }
}

pub struct Requester {
    pub tx: Sender<PeerMsg>,
    pub reader: FrameReader<FdReader>,
    pub importer: Importer,
    next: u64,
}

impl Requester {
    pub async fn connect(addr: &str, cfg: ConnConfig) -> Result<Requester, TransportError> {
        let (reader, w, _) = rask_transport::connect_unix(addr, &hello(), cfg).await?;
        let tx = rask_transport::spawn_writer::<PeerMsg, _>(w);
        let rel = tx.clone();
        let importer = Importer::new(move |loan| {
            let _ = rel.send(PeerMsg::Release { loans: vec![loan] });
        });
        Ok(Requester {
            tx,
            reader,
            importer,
            next: 0,
        })
    }

    /// Fetches keys as host bytes; `None` for the missing ones.
    pub async fn get(&mut self, keys: &[u64]) -> Result<Vec<Option<Bytes>>, TransportError> {
        Ok(self
            .get_payloads(keys, false)
            .await?
            .into_iter()
            .map(|p| {
                p.map(|p| match p {
                    Payload::Host(b) => b,
                    Payload::Device(d) => panic!("{d:?} for a requester on the host"),
                })
            })
            .collect())
    }

    /// Fetches keys, asking for device bytes by IPC handle when `into_device`.
    pub async fn get_payloads(
        &mut self,
        keys: &[u64],
        into_device: bool,
    ) -> Result<Vec<Option<Payload>>, TransportError> {
        let req = self.next;
        self.next += 1;
        let tasks = keys.iter().map(|k| TaskId(*k)).collect();
        self.tx.send(PeerMsg::GetData {
            req,
            tasks,
            into_device,
        })?;
        loop {
            let batch = self
                .reader
                .read_batch::<PeerMsg>()
                .await?
                .ok_or(TransportError::Closed)?;
            let fds = self.reader.get_mut().fds();
            for r in rask_transport::data::replies(batch, Some(&mut self.importer), Some(fds))? {
                if r.req != req {
                    continue;
                }
                let mut got: HashMap<u64, Payload> = HashMap::new();
                for it in r.items {
                    let Datum::Buf(i) = it.value else {
                        panic!("not a buffer")
                    };
                    got.insert(it.task.0, r.bufs[i as usize].clone());
                }
                return Ok(keys.iter().map(|k| got.remove(k)).collect());
            }
        }
    }
}

/// Random bytes from a seed (xorshift), fast enough for a GiB in a debug build.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut x = seed | 1;
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    v
}

pub fn hash(b: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ b.len() as u64;
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        h = (h ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(0x100_0000_01b3);
    }
    for &x in words.remainder() {
        h = (h ^ x as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

pub fn seed() -> u64 {
    let mut s = [0u8; 8];
    getrandom::fill(&mut s).unwrap();
    let s = u64::from_le_bytes(s);
    println!("seed {s}");
    s
}

/// Open arena descriptors and sockets of this process.
pub fn count_fds() -> (usize, usize) {
    let mut n = (0, 0);
    for e in std::fs::read_dir("/proc/self/fd").unwrap() {
        let t = std::fs::read_link(e.unwrap().path()).unwrap_or_default();
        let t = t.to_string_lossy();
        n.0 += t.contains("memfd:rask-arena") as usize;
        n.1 += t.starts_with("socket:") as usize;
    }
    n
}

/// Mappings of arena segments in this process.
pub fn count_maps() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("memfd:rask-arena"))
        .count()
}

/// One line of `/proc/self/maps`: what the kernel says is mapped at an address.
#[derive(Debug)]
pub struct Mapping {
    pub start: usize,
    pub end: usize,
    /// `r--s`, `rw-s`, `rw-p` …
    pub perms: String,
    /// Offset in the file of `start`.
    pub offset: u64,
    /// The file's device (major, minor) and inode.
    pub dev: (u32, u32),
    pub inode: u64,
    /// `/memfd:NAME (deleted)` for a memfd, empty for anonymous memory.
    pub path: String,
}

/// The mapping of this process that holds `addr`, read from `/proc/self/maps` (the
/// kernel's account, independent of the code that made the mapping).
pub fn mapping_of(addr: usize) -> Option<Mapping> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().find_map(|line| {
        let mut fields = line.splitn(6, ' ');
        let range = fields.next()?;
        let perms = fields.next()?;
        let offset = fields.next()?;
        let dev = fields.next()?;
        let inode = fields.next()?;
        let path = fields.next().unwrap_or("").trim();
        let (start, end) = range.split_once('-')?;
        let start = usize::from_str_radix(start, 16).unwrap();
        let end = usize::from_str_radix(end, 16).unwrap();
        if !(start..end).contains(&addr) {
            return None;
        }
        let (major, minor) = dev.split_once(':').unwrap();
        Some(Mapping {
            start,
            end,
            perms: perms.into(),
            offset: u64::from_str_radix(offset, 16).unwrap(),
            dev: (
                u32::from_str_radix(major, 16).unwrap(),
                u32::from_str_radix(minor, 16).unwrap(),
            ),
            inode: inode.parse().unwrap(),
            path: path.into(),
        })
    })
}

/// The (device, inode) of an open file, as `/proc/self/maps` shows them.
pub fn file_id(fd: impl std::os::fd::AsFd) -> ((u32, u32), u64) {
    let st = rustix::fs::fstat(fd).unwrap();
    let dev = st.st_dev as rustix::fs::Dev;
    (
        (rustix::fs::major(dev), rustix::fs::minor(dev)),
        st.st_ino as u64,
    )
}
