//! The disk side of `punnet image build`: copying the base image (decompressing .xz
//! on the way, writing zeros as holes), reading its MBR and opening its FAT boot
//! partition in process through `fatfs` over a slice of the file: no loop devices, no
//! mounts, no root.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use fscommon::{BufStream, StreamSlice};

/// Raspberry Pi OS images use 512-byte sectors.
pub const SECTOR: u64 = 512;
const XZ_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0];

/// One primary partition from the MBR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as in `/dev/mmcblk0p1`.
    pub number: usize,
    /// The MBR type byte: 0x0c is FAT32 (LBA), Raspberry Pi OS's boot partition.
    pub kind: u8,
    pub start: u64,
    pub len: u64,
}

/// MBR partition types of FAT file systems.
pub fn is_fat_type(kind: u8) -> bool {
    matches!(kind, 0x01 | 0x04 | 0x06 | 0x0b | 0x0c | 0x0e)
}

/// Whether `path` starts like an .xz file.
pub fn is_xz(path: &Path) -> io::Result<bool> {
    let mut magic = [0u8; 6];
    let mut f = File::open(path)?;
    let mut n = 0;
    while n < magic.len() {
        match f.read(&mut magic[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n == magic.len() && magic == XZ_MAGIC)
}

/// Copies `base` to `out`: a plain copy (the kernel may share blocks), or for .xz a
/// streaming decompression that never holds more than a buffer in memory and leaves
/// runs of zeros as holes (a 5 GB image is mostly empty). Returns the bytes written.
pub fn copy_base(base: &Path, out: &Path) -> io::Result<(u64, bool)> {
    if !is_xz(base)? {
        return std::fs::copy(base, out).map(|n| (n, false));
    }
    let reader =
        lzma_rust2::XzReader::new(BufReader::with_capacity(1 << 20, File::open(base)?), true);
    let file = File::create(out)?;
    let n = copy_sparse(reader, &file)?;
    file.sync_all()?;
    Ok((n, true))
}

/// Writes `reader` into `file`, seeking over zero blocks; the file is then cut to the
/// full length so a trailing hole counts.
pub fn copy_sparse(mut reader: impl Read, mut file: &File) -> io::Result<u64> {
    const BLOCK: usize = 64 * 1024;
    let mut buf = vec![0u8; BLOCK];
    let mut total = 0u64;
    loop {
        let mut filled = 0;
        while filled < BLOCK {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(k) => filled += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            break;
        }
        let chunk = &buf[..filled];
        if chunk.iter().all(|&b| b == 0) {
            file.seek(SeekFrom::Current(filled as i64))?;
        } else {
            file.write_all(chunk)?;
        }
        total += filled as u64;
        if filled < BLOCK {
            break;
        }
    }
    file.set_len(total)?;
    Ok(total)
}

/// The image's primary partitions; `Err` with a reason when it has no MBR.
pub fn partitions(file: &mut File) -> Result<Vec<Partition>, String> {
    let mut sector = [0u8; 512];
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    file.read_exact(&mut sector)
        .map_err(|_| "it is smaller than one sector".to_string())?;
    if sector[510..] != [0x55, 0xaa] {
        return Err("it has no MBR partition table (no 55 AA signature in sector 0)".into());
    }
    // The header only: logical partitions are never a Raspberry Pi boot partition.
    let header = mbrman::MBRHeader::read_from(&mut io::Cursor::new(&sector[..]))
        .map_err(|e| format!("its MBR cannot be read: {e}"))?;
    let parts: Vec<Partition> = header
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(i, p)| Partition {
            number: i,
            kind: p.sys,
            start: u64::from(p.starting_lba) * SECTOR,
            len: u64::from(p.sectors) * SECTOR,
        })
        .collect();
    if parts.iter().any(|p| p.kind == 0xee) {
        return Err("it has a GPT partition table (Raspberry Pi OS images use MBR)".into());
    }
    Ok(parts)
}

pub type Slice = BufStream<StreamSlice<File>>;
pub type Fs = fatfs::FileSystem<Slice>;

/// Opens the FAT file system of partition `p` of `file`.
pub fn open_fat(file: &File, p: &Partition) -> io::Result<Fs> {
    let slice = StreamSlice::new(file.try_clone()?, p.start, p.start + p.len)?;
    fatfs::FileSystem::new(BufStream::new(slice), fatfs::FsOptions::new())
}

/// Opens `path` for reading and writing (the copy, never the base).
pub fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// The names of the files in a FAT directory.
pub fn list(dir: &fatfs::Dir<'_, Slice>) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// Reads a whole file; `None` when there is none.
pub fn read_file(dir: &fatfs::Dir<'_, Slice>, name: &str) -> io::Result<Option<Vec<u8>>> {
    match dir.open_file(name) {
        Ok(mut f) => {
            let mut data = Vec::new();
            f.read_to_end(&mut data)?;
            Ok(Some(data))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates or replaces a file with `data` read from `from`.
pub fn write_file(dir: &fatfs::Dir<'_, Slice>, name: &str, from: &mut dyn Read) -> io::Result<u64> {
    let mut f = dir.create_file(name)?;
    f.truncate()?;
    let n = io::copy(from, &mut f)?;
    f.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_copy_keeps_length_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; 300 * 1024];
        data[70_000] = 7;
        data[300 * 1024 - 1 - 100_000] = 9;
        let path = dir.path().join("out");
        let f = File::create(&path).unwrap();
        assert_eq!(copy_sparse(&data[..], &f).unwrap(), data.len() as u64);
        drop(f);
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn fat_types() {
        assert!(is_fat_type(0x0c) && is_fat_type(0x0b) && !is_fat_type(0x83));
    }
}
