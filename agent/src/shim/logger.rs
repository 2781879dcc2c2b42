//! Turns the container's stdout and stderr byte streams into CRI log records in the
//! Pod's log file. Lines longer than `MAX_LINE` are cut into `P` records so the shim's
//! memory stays bounded whatever the container prints.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::runtime::logfmt::{format_log_line, Stream};

/// The CRI's (and containerd's) maximum record size.
pub const MAX_LINE: usize = 16 * 1024;
/// How often to check whether the agent rotated (renamed) the log file.
const ROTATION_CHECK: Duration = Duration::from_secs(1);

/// The Pod's log file, reopened when it was renamed or deleted by log rotation.
pub struct LogFile {
    path: PathBuf,
    file: File,
    inode: (u64, u64),
    last_check: Instant,
    /// One formatted record, kept to avoid an allocation per line.
    scratch: Vec<u8>,
    write_failed: bool,
}

impl LogFile {
    pub fn open(path: PathBuf) -> io::Result<LogFile> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let (file, inode) = open_append(&path)?;
        Ok(LogFile {
            path,
            file,
            inode,
            last_check: Instant::now(),
            scratch: Vec::new(),
            write_failed: false,
        })
    }

    fn write_record(&mut self, stream: Stream, partial: bool, content: &[u8]) {
        self.reopen_if_rotated();
        self.scratch.clear();
        format_log_line(&mut self.scratch, Utc::now(), stream, partial, content);
        // One write per record keeps records whole when a reader tails the file.
        match self.file.write_all(&self.scratch) {
            Ok(()) => self.write_failed = false,
            Err(e) if !self.write_failed => {
                self.write_failed = true;
                eprintln!(
                    "punnet shim: writing {}: {e}; dropping log lines",
                    self.path.display()
                );
            }
            Err(_) => {}
        }
        if self.scratch.capacity() > 2 * MAX_LINE {
            self.scratch = Vec::new();
        }
    }

    fn reopen_if_rotated(&mut self) {
        if self.last_check.elapsed() < ROTATION_CHECK {
            return;
        }
        self.last_check = Instant::now();
        let current = fs::metadata(&self.path).map(|m| (m.dev(), m.ino())).ok();
        if current != Some(self.inode) {
            if let Ok((file, inode)) = open_append(&self.path) {
                self.file = file;
                self.inode = inode;
            }
        }
    }
}

fn open_append(path: &PathBuf) -> io::Result<(File, (u64, u64))> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let m = file.metadata()?;
    Ok((file, (m.dev(), m.ino())))
}

/// Splits one stream into lines.
pub struct LineBuffer {
    stream: Stream,
    buf: Vec<u8>,
}

impl LineBuffer {
    pub fn new(stream: Stream) -> LineBuffer {
        LineBuffer {
            stream,
            buf: Vec::new(),
        }
    }

    /// Adds bytes read from the stream, writing every completed line (and every full
    /// buffer, as a `P` record).
    pub fn push(&mut self, mut data: &[u8], log: &mut LogFile) {
        while !data.is_empty() {
            let newline = data.iter().position(|&b| b == b'\n');
            let (mut chunk, ends_line) = match newline {
                Some(i) => (&data[..i], true),
                None => (data, false),
            };
            data = match newline {
                Some(i) => &data[i + 1..],
                None => &[],
            };
            while !chunk.is_empty() {
                let take = (MAX_LINE - self.buf.len()).min(chunk.len());
                self.buf.extend_from_slice(&chunk[..take]);
                chunk = &chunk[take..];
                let more_follows = !chunk.is_empty() || !ends_line;
                if self.buf.len() == MAX_LINE && more_follows {
                    log.write_record(self.stream, true, &self.buf);
                    self.buf.clear();
                }
            }
            if ends_line {
                log.write_record(self.stream, false, &self.buf);
                self.buf.clear();
            }
        }
    }

    /// Writes a last line that had no newline when the stream ended.
    pub fn finish(&mut self, log: &mut LogFile) {
        if !self.buf.is_empty() {
            log.write_record(self.stream, false, &self.buf);
            self.buf.clear();
        }
        self.buf = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::logfmt::parse_log_line;

    fn records(path: &std::path::Path) -> Vec<(bool, String)> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let r = parse_log_line(l).unwrap();
                (r.partial, r.content)
            })
            .collect()
    }

    #[test]
    fn lines_split_across_reads_and_long_lines_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pod/c.log");
        let mut log = LogFile::open(path.clone()).unwrap();
        let mut out = LineBuffer::new(Stream::Stdout);
        out.push(b"hel", &mut log);
        out.push(b"lo\nworld\n\nlast", &mut log);
        let long = vec![b'x'; MAX_LINE + 10];
        out.push(b"\n", &mut log);
        out.push(&long, &mut log);
        out.push(b"\n", &mut log);
        out.push(b"tail", &mut log);
        out.finish(&mut log);
        let got = records(&path);
        assert_eq!(
            &got[..4],
            &[
                (false, "hello".to_string()),
                (false, "world".to_string()),
                (false, String::new()),
                (false, "last".to_string()),
            ]
        );
        assert_eq!(got[4], (true, "x".repeat(MAX_LINE)));
        assert_eq!(got[5], (false, "x".repeat(10)));
        assert_eq!(got[6], (false, "tail".to_string()));
        assert_eq!(got.len(), 7);
    }

    #[test]
    fn a_line_of_exactly_the_buffer_size_is_one_full_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut log = LogFile::open(path.clone()).unwrap();
        let mut out = LineBuffer::new(Stream::Stderr);
        let mut line = vec![b'y'; MAX_LINE];
        line.push(b'\n');
        out.push(&line, &mut log);
        assert_eq!(records(&path), vec![(false, "y".repeat(MAX_LINE))]);
    }

    #[test]
    fn a_rotated_file_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut log = LogFile::open(path.clone()).unwrap();
        let mut out = LineBuffer::new(Stream::Stdout);
        out.push(b"one\n", &mut log);
        fs::rename(&path, dir.path().join("c.log.1")).unwrap();
        log.last_check -= ROTATION_CHECK;
        out.push(b"two\n", &mut log);
        assert_eq!(records(&path), vec![(false, "two".to_string())]);
    }
}
