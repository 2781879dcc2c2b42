//! The CRI container log format, which the shim writes and the agent serves:
//! `2026-11-24T17:47:59.123456789Z stdout F the line`, one record per line. `F` marks a
//! full line, `P` a part of a longer line the shim cut at its buffer size; readers join
//! `P` records until the next `F`.

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: DateTime<Utc>,
    pub stream: Stream,
    /// The record is part of a longer line; its content has no newline.
    pub partial: bool,
    pub content: String,
}

/// Parses one record (with or without its trailing newline); `None` if it is not one.
pub fn parse_log_line(line: &str) -> Option<LogLine> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let (time, rest) = line.split_once(' ')?;
    let (stream, rest) = rest.split_once(' ')?;
    // The content may be empty, in which case the tag ends the line.
    let (tag, content) = rest.split_once(' ').unwrap_or((rest, ""));
    let time = DateTime::parse_from_rfc3339(time).ok()?.with_timezone(&Utc);
    let stream = match stream {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    // Tags are ':'-separated flags; only P/F is defined.
    let partial = match tag.split(':').next()? {
        "P" => true,
        "F" => false,
        _ => return None,
    };
    Some(LogLine {
        time,
        stream,
        partial,
        content: content.to_string(),
    })
}

/// Appends one record for `content` (without its newline) to `out`.
pub fn format_log_line(
    out: &mut Vec<u8>,
    time: DateTime<Utc>,
    stream: Stream,
    partial: bool,
    content: &[u8],
) {
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "{} {} {} ",
        time.to_rfc3339_opts(SecondsFormat::Nanos, true),
        stream.as_str(),
        if partial { "P" } else { "F" }
    );
    out.extend_from_slice(content);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatted_lines_parse_back() {
        let time = DateTime::parse_from_rfc3339("2026-11-24T17:47:59.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut out = Vec::new();
        format_log_line(&mut out, time, Stream::Stdout, false, b"the line");
        assert_eq!(out, b"2026-11-24T17:47:59.123456789Z stdout F the line\n");
        let parsed = parse_log_line(std::str::from_utf8(&out).unwrap()).unwrap();
        assert_eq!(
            parsed,
            LogLine {
                time,
                stream: Stream::Stdout,
                partial: false,
                content: "the line".into()
            }
        );
    }

    #[test]
    fn partial_and_empty_lines() {
        let p = parse_log_line("2026-11-24T17:47:59.000000001Z stderr P abc").unwrap();
        assert!(p.partial);
        assert_eq!(p.stream, Stream::Stderr);
        let e = parse_log_line("2026-11-24T17:47:59.000000001Z stdout F").unwrap();
        assert_eq!(e.content, "");
        let spaces = parse_log_line("2026-11-24T17:47:59Z stdout F  two  spaces ").unwrap();
        assert_eq!(spaces.content, " two  spaces ");
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in [
            "",
            "hello world",
            "2026-11-24T17:47:59Z stdin F x",
            "2026-11-24T17:47:59Z stdout X x",
            "yesterday stdout F x",
        ] {
            assert_eq!(parse_log_line(bad), None, "{bad}");
        }
    }
}
