//! The disk tier of spilling: a value written to a file that is then mapped and unlinked.
//! Reading it brings the pages back from disk (the kernel's page cache decides what stays
//! in memory); dropping the last reference returns the space. Nothing is left behind,
//! even when the process is killed.

use std::io::Write;
use std::path::Path;

use bytes::Bytes;

/// Writes `bytes` to a new file in `dir` (created if needed) and returns them mapped from
/// that file, which has no name: it is made without one (`O_TMPFILE`) where the file
/// system allows, else created as `name` and unlinked at once. A killed process leaves
/// nothing behind in `dir`.
pub fn to_file(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<Bytes> {
    std::fs::create_dir_all(dir)?;
    let mut f = match unnamed(dir) {
        Ok(f) => f,
        Err(_) => {
            let path = dir.join(name);
            let f = std::fs::File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            let _ = std::fs::remove_file(&path);
            f
        }
    };
    f.write_all(bytes)?;
    if bytes.is_empty() {
        return Ok(Bytes::new());
    }
    let map = crate::arena::ReadOnlyMap::new(&f, bytes.len(), false)?;
    Ok(Bytes::from_owner(map))
}

/// A file in `dir` that never has a name.
fn unnamed(dir: &Path) -> std::io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
    let fd = rustix::fs::open(dir, flags, Mode::RUSR | Mode::WUSR)?;
    Ok(std::fs::File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spilled_bytes_read_back_and_leave_no_file() {
        let dir = std::env::temp_dir().join(format!("rask-spill-test-{}", std::process::id()));
        let data: Vec<u8> = (0..(3 << 20) + 7).map(|i| (i * 31 % 251) as u8).collect();
        let b = to_file(&dir, "x.bin", &data).unwrap();
        assert_eq!(&b[..], &data[..]);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let maps = || {
            let dir = dir.to_string_lossy().into_owned();
            std::fs::read_to_string("/proc/self/maps")
                .unwrap()
                .lines()
                .filter(|l| l.contains(&dir) && l.ends_with("(deleted)"))
                .count()
        };
        assert_eq!(maps(), 1);
        drop(b);
        assert_eq!(maps(), 0);
        assert!(to_file(&dir, "e.bin", &[]).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
