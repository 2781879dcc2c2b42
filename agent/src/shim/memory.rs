//! Shrinks the shim once its container runs. Creating a container runs a large part of
//! the agent binary (libcontainer, serde, the spec builder); afterwards the shim only
//! loops over poll/read/write. The pages that create touched stay resident and count
//! in the shim's RSS for the container's whole life, so they are handed back: free
//! heap to the kernel, and read-only file pages dropped (they are re-read from
//! the page cache if the loop ever needs them again).

use std::fs::File;
use std::io::{BufRead, BufReader};

/// One mapping of /proc/self/smaps.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    writable: bool,
    file_backed: bool,
    /// kB of the mapping that are private copies (relocations, COW): never dropped.
    anonymous_kb: u64,
}

impl Mapping {
    /// Dropping the pages of a read-only file mapping without private copies only
    /// makes later accesses map the same page-cache pages again. (Dirty page-cache
    /// pages, as of a binary just linked, count in `Private_Dirty` but are not private
    /// copies: dropping them is as safe.)
    fn droppable(&self) -> bool {
        self.file_backed && !self.writable && self.anonymous_kb == 0
    }
}

pub fn release_startup_memory() {
    trim_heap();
    let Ok(file) = File::open("/proc/self/smaps") else {
        return;
    };
    let mappings = parse_smaps(BufReader::new(file));
    for m in mappings.iter().filter(|m| m.droppable()) {
        // SAFETY: the range is exactly one of this process's mappings, read-only,
        // file-backed and without private (anonymous) pages, so MADV_DONTNEED only
        // unmaps page-cache pages that a later access maps again unchanged.
        unsafe {
            libc::madvise(
                m.start as *mut libc::c_void,
                m.end - m.start,
                libc::MADV_DONTNEED,
            );
        }
    }
}

fn parse_smaps(reader: impl BufRead) -> Vec<Mapping> {
    let mut mappings: Vec<Mapping> = Vec::new();
    for line in reader.lines().map_while(Result::ok) {
        if let Some(m) = parse_header(&line) {
            mappings.push(m);
            continue;
        }
        let Some(current) = mappings.last_mut() else {
            continue;
        };
        let mut parts = line.split_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let kb: u64 = value.parse().unwrap_or(u64::MAX);
        if key == "Anonymous:" {
            current.anonymous_kb = kb;
        }
    }
    mappings
}

/// `start-end perms offset dev inode [path]`; `None` for the key/value lines.
fn parse_header(line: &str) -> Option<Mapping> {
    let mut parts = line.split_whitespace();
    let (start, end) = parts.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = parts.next()?;
    if perms.len() != 4 {
        return None;
    }
    let _offset = parts.next()?;
    let _dev = parts.next()?;
    let inode: u64 = parts.next()?.parse().ok()?;
    Some(Mapping {
        start,
        end,
        writable: perms.as_bytes()[1] == b'w',
        file_backed: inode != 0,
        anonymous_kb: 0,
    })
}

fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0200000 r-xp 00001000 fd:00 1234 /usr/bin/punnet-agent
Size:               2048 kB
Rss:                1024 kB
Private_Dirty:       512 kB
Anonymous:             0 kB
55d0c0200000-55d0c0210000 r--p 00201000 fd:00 1234 /usr/bin/punnet-agent
Private_Dirty:        64 kB
Anonymous:            64 kB
55d0c0210000-55d0c0220000 rw-p 00211000 fd:00 1234 /usr/bin/punnet-agent
Anonymous:             8 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
Anonymous:           132 kB
";

    #[test]
    fn only_read_only_file_mappings_without_private_pages_are_dropped() {
        let mappings = parse_smaps(SMAPS.as_bytes());
        assert_eq!(mappings.len(), 4);
        let droppable: Vec<bool> = mappings.iter().map(Mapping::droppable).collect();
        assert_eq!(droppable, [true, false, false, false]);
        assert_eq!(mappings[0].start, 0x55d0c0000000);
        assert_eq!(mappings[0].end, 0x55d0c0200000);
    }

    #[test]
    fn releasing_memory_keeps_the_process_working() {
        release_startup_memory();
        let v: Vec<u64> = (0..1000).collect();
        assert_eq!(v.iter().sum::<u64>(), 499_500);
        assert!(format!("{:?}", std::time::Instant::now()).contains("Instant"));
    }
}
