//! The identity of the code this process runs ops with.
//!
//! Op names and version numbers say what an op is meant to be; they do not say which code
//! a binary actually carries: an old and a changed worker binary can both call `hits`
//! version 1 and compute different things. The identity here is a hash of the executable's
//! loaded, non-writable segments — its machine code and read-only data — as the ELF
//! program headers of `/proc/self/exe` describe them. Any change to any op's code (or to
//! anything else the program loads) changes it; rebuilding the same sources with the same
//! toolchain and flags gives the same identity. Debug information and symbol tables are
//! not loaded, so stripping a binary does not change it.
//!
//! It is computed once per executable file, on first use (about 3 ms for a 6 MB
//! executable), and remembered in the user's cache (`$XDG_CACHE_HOME/rask/code`, or
//! `~/.cache/rask/code`) under the file's device, inode, size and modification time, so
//! that the workers a cluster starts do not each hash the same file again. A file
//! rewritten in place gets a new modification time, and so a new entry.

use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

/// The identity of this process's code (see the module docs); 0 when the executable
/// cannot be read as ELF, with the reason logged once.
pub fn code_identity() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(|| {
        let exe = std::path::Path::new("/proc/self/exe");
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))
            .map(|d| d.join("rask").join("code"));
        match remembered_identity_of(exe, cache.as_deref()) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!("cannot identify this program's code ({e}); its workers are told apart by op versions only");
                0
            }
        }
    })
}

/// The identity of the executable at `path`, remembered in `cache` (a directory) when
/// given: computed only when the cache has no entry for the file as it is now.
pub fn remembered_identity_of(
    path: &std::path::Path,
    cache: Option<&std::path::Path>,
) -> Result<u64, CodeError> {
    let entry = cache.and_then(|dir| cache_entry(path, dir));
    if let Some(id) = entry.as_deref().and_then(read_cached) {
        return Ok(id);
    }
    let id = identity_of(path)?;
    if let Some(entry) = &entry {
        write_cached(entry, id);
    }
    Ok(id)
}

/// Where the identity of the file `exe` is remembered in `dir`: named by the file's
/// device, inode, size and modification time.
fn cache_entry(exe: &std::path::Path, dir: &std::path::Path) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(exe).ok()?;
    Some(dir.join(format!(
        "{:x}-{:x}-{:x}-{:x}.{:09}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec()
    )))
}

fn read_cached(entry: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(entry).ok()?;
    u64::from_str_radix(text.trim(), 16).ok()
}

/// Remembers an identity; a cache that cannot be written is not an error (the next
/// process computes it again).
fn write_cached(entry: &std::path::Path, id: u64) {
    let Some(dir) = entry.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    // Written whole, then renamed into place: a reader never sees half an entry.
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    if std::fs::write(&tmp, format!("{id:016x}\n")).is_ok() && std::fs::rename(&tmp, entry).is_err()
    {
        let _ = std::fs::remove_file(&tmp);
    }
}

const PT_LOAD: u32 = 1;
const PF_W: u32 = 2;

/// Why an executable's code cannot be identified.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    /// The file cannot be opened.
    #[error("{}: {source}", path.display())]
    Open {
        /// The executable.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A read at offset `at` failed (or the file ends before it).
    #[error("{} at {at}: {source}", path.display())]
    Read {
        /// The executable.
        path: std::path::PathBuf,
        /// The file offset of the read, in bytes.
        at: u64,
        /// The operating system's error (`UnexpectedEof` past the end).
        source: std::io::Error,
    },
    /// Not a 64-bit little-endian ELF file.
    #[error("{} is not a 64-bit little-endian ELF file", .0.display())]
    NotElf(std::path::PathBuf),
    /// An ELF file without program headers.
    #[error("{} has no program headers", .0.display())]
    NoProgramHeaders(std::path::PathBuf),
}

/// The identity of the ELF executable at `path`.
pub fn identity_of(path: &std::path::Path) -> Result<u64, CodeError> {
    let f = std::fs::File::open(path).map_err(|source| CodeError::Open {
        path: path.into(),
        source,
    })?;
    let read = |at: u64, buf: &mut [u8]| {
        f.read_exact_at(buf, at).map_err(|source| CodeError::Read {
            path: path.into(),
            at,
            source,
        })
    };
    let mut eh = [0u8; 64];
    read(0, &mut eh)?;
    if eh[..4] != *b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return Err(CodeError::NotElf(path.into()));
    }
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]) as usize;
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let phoff = u64_at(&eh, 0x20);
    let phentsize = u16_at(&eh, 0x36);
    let phnum = u16_at(&eh, 0x38);
    if phentsize < 56 || phnum == 0 {
        return Err(CodeError::NoProgramHeaders(path.into()));
    }
    let mut ph = vec![0u8; phentsize * phnum];
    read(phoff, &mut ph)?;
    let mut h = Hasher::default();
    let mut chunk = vec![0u8; 1 << 20];
    for p in ph.chunks_exact(phentsize) {
        let (kind, flags) = (u32_at(p, 0), u32_at(p, 4));
        if kind != PT_LOAD || flags & PF_W != 0 {
            continue;
        }
        let (offset, size) = (u64_at(p, 8), u64_at(p, 32));
        h.word(offset);
        h.word(size);
        let mut done = 0;
        while done < size {
            let n = (size - done).min(chunk.len() as u64) as usize;
            read(offset + done, &mut chunk[..n])?;
            h.bytes(&chunk[..n]);
            done += n as u64;
        }
    }
    Ok(h.finish())
}

/// A fast 64-bit hash of words (not cryptographic: it tells builds apart, it does not
/// resist a forger, who would have to know the cluster's secret to join anyway).
#[derive(Default)]
struct Hasher {
    h: u64,
    n: u64,
}

impl Hasher {
    fn word(&mut self, w: u64) {
        self.h = (self.h.rotate_left(23) ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.n += 1;
    }

    fn bytes(&mut self, b: &[u8]) {
        let mut words = b.chunks_exact(8);
        for w in &mut words {
            self.word(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let mut tail = [0u8; 8];
        let rest = words.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.word(u64::from_le_bytes(tail) ^ ((rest.len() as u64) << 59));
    }

    fn finish(&self) -> u64 {
        let mut x = self.h ^ self.n;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copies this test binary and alters one byte of it at `at`; returns the copy.
    fn altered_copy(name: &str, at: Option<u64>) -> std::path::PathBuf {
        let me = std::fs::read("/proc/self/exe").unwrap();
        let path = std::env::temp_dir().join(format!("rask-code-{}-{name}", std::process::id()));
        let mut copy = me;
        if let Some(at) = at {
            copy[at as usize] ^= 0x5a;
        }
        std::fs::write(&path, copy).unwrap();
        path
    }

    /// The file ranges of the loaded segments, as `readelf -l` would list them: (offset,
    /// size, writable).
    fn segments() -> Vec<(u64, u64, bool)> {
        let me = std::fs::read("/proc/self/exe").unwrap();
        let phoff = u64::from_le_bytes(me[0x20..0x28].try_into().unwrap()) as usize;
        let phentsize = u16::from_le_bytes([me[0x36], me[0x37]]) as usize;
        let phnum = u16::from_le_bytes([me[0x38], me[0x39]]) as usize;
        (0..phnum)
            .map(|i| &me[phoff + i * phentsize..phoff + (i + 1) * phentsize])
            .filter(|p| u32::from_le_bytes(p[0..4].try_into().unwrap()) == PT_LOAD)
            .map(|p| {
                (
                    u64::from_le_bytes(p[8..16].try_into().unwrap()),
                    u64::from_le_bytes(p[32..40].try_into().unwrap()),
                    u32::from_le_bytes(p[4..8].try_into().unwrap()) & PF_W != 0,
                )
            })
            .collect()
    }

    #[test]
    fn a_copy_of_a_program_has_its_identity_and_a_changed_one_does_not() {
        let id = code_identity();
        assert_ne!(id, 0);
        let same = altered_copy("same", None);
        assert_eq!(identity_of(&same).unwrap(), id);
        let segs = segments();
        let (code_at, code_len, _) = *segs.iter().find(|s| !s.2 && s.1 > 4096).unwrap();
        let changed = altered_copy("code", Some(code_at + code_len / 2));
        assert_ne!(identity_of(&changed).unwrap(), id);
        // Bytes that are not loaded (debug information at the end of the file) or are
        // writable at run time do not change it.
        let len = std::fs::metadata(&same).unwrap().len();
        let end = segs.iter().map(|s| s.0 + s.1).max().unwrap();
        if end < len {
            let debug = altered_copy("debug", Some(len - 1));
            assert_eq!(identity_of(&debug).unwrap(), id);
            std::fs::remove_file(debug).unwrap();
        }
        for p in [same, changed] {
            std::fs::remove_file(p).unwrap();
        }
        assert!(identity_of(std::path::Path::new("/proc/self/status")).is_err());
    }

    #[test]
    fn an_identity_is_remembered_per_file_as_it_is_and_computed_again_when_it_changes() {
        let exe = altered_copy("cached", None);
        let cache = std::env::temp_dir().join(format!("rask-code-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&cache);
        let id = remembered_identity_of(&exe, Some(&cache)).unwrap();
        assert_eq!(id, identity_of(&exe).unwrap());
        let entries: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(entries.len(), 1, "one entry for one file");
        // The entry is what is read: a different number there is believed.
        std::fs::write(&entries[0], "123abc\n").unwrap();
        assert_eq!(
            remembered_identity_of(&exe, Some(&cache)).unwrap(),
            0x123abc
        );
        // The file rewritten (a new modification time): computed again.
        let f = std::fs::OpenOptions::new().write(true).open(&exe).unwrap();
        let later = std::fs::metadata(&exe).unwrap().modified().unwrap()
            + std::time::Duration::from_secs(1);
        f.set_modified(later).unwrap();
        drop(f);
        assert_eq!(remembered_identity_of(&exe, Some(&cache)).unwrap(), id);
        // No cache, or one that cannot be written: computed each time.
        assert_eq!(remembered_identity_of(&exe, None).unwrap(), id);
        let file = cache.join("not-a-dir");
        std::fs::write(&file, "").unwrap();
        assert_eq!(
            remembered_identity_of(&exe, Some(&file.join("x"))).unwrap(),
            id
        );
        std::fs::remove_dir_all(&cache).unwrap();
        std::fs::remove_file(exe).unwrap();
    }
}
