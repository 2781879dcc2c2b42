//! The board page's charts: a bounded, in-memory ring of the node's CPU, memory and
//! temperature over the last hour. Nothing is written to disk (SD cards wear), so the
//! charts start empty after an agent restart.

use std::collections::VecDeque;

use serde::Serialize;

/// How far back the charts reach.
pub const WINDOW_SECS: u64 = 3600;
/// Samples closer together than this are dropped: a short heartbeat (tests use 1 s)
/// must not shorten the window the ring holds.
pub const MIN_SPACING_SECS: u64 = 5;
/// The most samples kept: one hour at the minimum spacing (about 23 KB).
pub const CAPACITY: usize = (WINDOW_SECS / MIN_SPACING_SECS) as usize;

/// One reading of the node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// Thousandths of one CPU, over the whole node.
    pub cpu_millis: u64,
    /// Memory in use (total less available), bytes.
    pub memory_used_bytes: u64,
    pub temperature_millicelsius: Option<i64>,
}

#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

/// The ring as parallel arrays: compact JSON, and what a chart wants.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    pub window_seconds: u64,
    /// Seconds since the Unix epoch.
    pub at: Vec<u64>,
    pub cpu_millis: Vec<u64>,
    pub memory_used_bytes: Vec<u64>,
    /// `null` where the board had no reading.
    pub temperature_millicelsius: Vec<Option<i64>>,
}

impl History {
    /// Adds a sample unless it comes too soon after the last one (or before it: the
    /// clock was set back, as when a Pi without a real-time clock syncs after boot, and
    /// then the older samples are dropped instead), and drops samples older than the
    /// window.
    pub fn push(&mut self, s: Sample) {
        if let Some(last) = self.samples.back() {
            if s.at < last.at {
                self.samples.clear();
            } else if s.at - last.at < MIN_SPACING_SECS {
                return;
            }
        }
        self.samples.push_back(s);
        let oldest = s.at.saturating_sub(WINDOW_SECS);
        while self.samples.front().is_some_and(|f| f.at < oldest) {
            self.samples.pop_front();
        }
        while self.samples.len() > CAPACITY {
            self.samples.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn series(&self) -> Series {
        let mut out = Series {
            window_seconds: WINDOW_SECS,
            ..Series::default()
        };
        for s in &self.samples {
            out.at.push(s.at);
            out.cpu_millis.push(s.cpu_millis);
            out.memory_used_bytes.push(s.memory_used_bytes);
            out.temperature_millicelsius
                .push(s.temperature_millicelsius);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: u64) -> Sample {
        Sample {
            at: t,
            cpu_millis: t,
            memory_used_bytes: 1,
            temperature_millicelsius: None,
        }
    }

    #[test]
    fn keeps_one_hour_at_most_and_spaces_samples() {
        let mut h = History::default();
        for t in (0..10_000).step_by(1) {
            h.push(at(1_000_000 + t));
        }
        assert_eq!(h.len(), CAPACITY);
        let s = h.series();
        assert_eq!(s.at.len(), CAPACITY);
        assert!(s.at.windows(2).all(|w| w[1] - w[0] >= MIN_SPACING_SECS));
        assert!(s.at.last().unwrap() - s.at[0] <= WINDOW_SECS);
    }

    #[test]
    fn old_samples_leave_the_window() {
        let mut h = History::default();
        h.push(at(100));
        h.push(at(200));
        h.push(at(200 + WINDOW_SECS + 50));
        assert_eq!(h.series().at, vec![200 + WINDOW_SECS + 50]);
    }

    #[test]
    fn a_clock_set_back_starts_over() {
        let mut h = History::default();
        h.push(at(2_000_000_000));
        h.push(at(2_000_000_010));
        // Booted in 1970-ish time, then NTP fixed it the other way round: here, back.
        h.push(at(1_000));
        assert_eq!(h.series().at, vec![1_000]);
    }

    #[test]
    fn series_keeps_missing_temperatures() {
        let mut h = History::default();
        h.push(Sample {
            temperature_millicelsius: Some(48_500),
            ..at(10)
        });
        h.push(at(20));
        let json = serde_json::to_value(h.series()).unwrap();
        assert_eq!(
            json["temperatureMillicelsius"],
            serde_json::json!([48500, null])
        );
        assert_eq!(json["windowSeconds"], 3600);
    }
}
