//! The last hour of every node's figures for the fleet page's charts: a ring of one
//! sample a minute (the average of that minute's reports), in memory only and bounded
//! (60 samples of 16 bytes a node, ~5 MB at 5,000 nodes). Never written to sled: the
//! charts start empty after a restart, which is cheaper than wearing the SD card.

use std::collections::VecDeque;

use punnet_api::wire::NodeFacts;

/// Samples kept per node: one hour of minutes.
pub const SAMPLES: usize = 60;
/// Seconds each sample covers.
pub const STEP_SECS: i64 = 60;

/// One minute of a node's figures (averages of the reports in it).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    /// Unix time divided by `STEP_SECS`.
    minute: i64,
    cpu_millis: u32,
    memory_used_mib: u32,
    disk_used_mib: u32,
    /// Tenths of a degree; `i16::MIN` when the board reports none.
    temperature_deci: i16,
}

/// A minute still being filled: sums and how many reports went in.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    minute: i64,
    reports: u32,
    cpu_millis: u64,
    memory_used_mib: u64,
    disk_used_mib: u64,
    temperature_deci: i64,
    temperature_reports: u32,
}

impl Sums {
    fn average(&self) -> Sample {
        let n = u64::from(self.reports.max(1));
        Sample {
            minute: self.minute,
            cpu_millis: (self.cpu_millis / n) as u32,
            memory_used_mib: (self.memory_used_mib / n) as u32,
            disk_used_mib: (self.disk_used_mib / n) as u32,
            temperature_deci: if self.temperature_reports == 0 {
                i16::MIN
            } else {
                (self.temperature_deci / i64::from(self.temperature_reports)) as i16
            },
        }
    }
}

/// One node's last hour.
#[derive(Debug, Clone, Default)]
pub struct NodeHistory {
    done: VecDeque<Sample>,
    current: Option<Sums>,
}

/// The charts' series, oldest first, one entry a minute, `None` where there was no
/// report (the node was offline); the last entry is the current, unfinished minute.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    /// The minute of the first entry, as a Unix time in seconds.
    pub start: i64,
    pub step_seconds: i64,
    pub cpu_millis: Vec<Option<u32>>,
    pub memory_used_bytes: Vec<Option<u64>>,
    pub disk_used_bytes: Vec<Option<u64>>,
    pub temperature_celsius: Vec<Option<f32>>,
}

const MIB: u64 = 1024 * 1024;

impl NodeHistory {
    /// Adds one report's figures taken at `unix_secs`.
    pub fn record(&mut self, facts: &NodeFacts, unix_secs: i64) {
        let minute = unix_secs.div_euclid(STEP_SECS);
        match self.current {
            Some(sums) if sums.minute == minute => {}
            Some(sums) if sums.minute > minute => return, // the clock went back: skip
            Some(sums) => {
                self.done.push_back(sums.average());
                self.current = None;
            }
            None => {}
        }
        let sums = self.current.get_or_insert(Sums {
            minute,
            ..Sums::default()
        });
        sums.reports += 1;
        sums.cpu_millis += facts.cpu_usage_millis;
        sums.memory_used_mib += facts
            .memory_bytes
            .saturating_sub(facts.memory_available_bytes)
            / MIB;
        sums.disk_used_mib += facts.disk_total_bytes.saturating_sub(facts.disk_free_bytes) / MIB;
        if let Some(t) = facts.temperature_millicelsius {
            sums.temperature_deci += (t / 100).clamp(-30_000, 30_000);
            sums.temperature_reports += 1;
        }
        // Keep only what the last hour's chart can show.
        while self
            .done
            .front()
            .is_some_and(|s| s.minute <= minute - SAMPLES as i64)
        {
            self.done.pop_front();
        }
    }

    /// The hour up to `unix_secs`, one slot a minute.
    pub fn series(&self, unix_secs: i64) -> Series {
        let now = unix_secs.div_euclid(STEP_SECS);
        let first = now - SAMPLES as i64 + 1;
        let mut slots: Vec<Option<Sample>> = vec![None; SAMPLES];
        let current = self.current.map(|s| s.average());
        for s in self.done.iter().chain(current.iter()) {
            if s.minute >= first && s.minute <= now {
                slots[(s.minute - first) as usize] = Some(*s);
            }
        }
        // Leading empty minutes carry nothing: the chart starts at the first sample.
        let skip = slots.iter().position(Option::is_some).unwrap_or(SAMPLES);
        let slots = &slots[skip..];
        Series {
            start: (first + skip as i64) * STEP_SECS,
            step_seconds: STEP_SECS,
            cpu_millis: slots.iter().map(|s| s.map(|s| s.cpu_millis)).collect(),
            memory_used_bytes: slots
                .iter()
                .map(|s| s.map(|s| u64::from(s.memory_used_mib) * MIB))
                .collect(),
            disk_used_bytes: slots
                .iter()
                .map(|s| s.map(|s| u64::from(s.disk_used_mib) * MIB))
                .collect(),
            temperature_celsius: slots
                .iter()
                .map(|s| {
                    s.filter(|s| s.temperature_deci != i16::MIN)
                        .map(|s| f32::from(s.temperature_deci) / 10.0)
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(cpu: u64, temp: Option<i64>) -> NodeFacts {
        NodeFacts {
            cpu_usage_millis: cpu,
            memory_bytes: 1024 * MIB,
            memory_available_bytes: 768 * MIB,
            disk_total_bytes: 100 * MIB,
            disk_free_bytes: 40 * MIB,
            temperature_millicelsius: temp,
            ..NodeFacts::default()
        }
    }

    // A whole minute.
    const T0: i64 = 1_800_000_000;

    #[test]
    fn averages_each_minute_and_shows_the_current_one() {
        let mut h = NodeHistory::default();
        h.record(&facts(100, Some(50_000)), T0);
        h.record(&facts(300, Some(52_000)), T0 + 30);
        h.record(&facts(500, None), T0 + 61);
        let s = h.series(T0 + 70);
        assert_eq!(s.start, T0);
        assert_eq!(s.cpu_millis, [Some(200), Some(500)]);
        assert_eq!(s.temperature_celsius, [Some(51.0), None]);
        assert_eq!(s.memory_used_bytes, [Some(256 * MIB), Some(256 * MIB)]);
        assert_eq!(s.disk_used_bytes[0], Some(60 * MIB));
    }

    #[test]
    fn gaps_stay_visible_and_the_ring_is_bounded() {
        let mut h = NodeHistory::default();
        h.record(&facts(1, None), T0);
        h.record(&facts(2, None), T0 + 3 * 60);
        let s = h.series(T0 + 3 * 60);
        assert_eq!(s.cpu_millis, [Some(1), None, None, Some(2)]);
        // Three hours of reports keep one hour.
        for m in 0..180 {
            h.record(&facts(m, None), T0 + 10 * 60 + m as i64 * 60);
        }
        assert!(h.done.len() < SAMPLES);
        let s = h.series(T0 + 10 * 60 + 179 * 60);
        assert_eq!(s.cpu_millis.len(), SAMPLES);
        assert_eq!(s.cpu_millis.last(), Some(&Some(179)));
        assert_eq!(s.cpu_millis.first(), Some(&Some(120)));
    }

    #[test]
    fn a_clock_going_back_does_not_corrupt_the_ring() {
        let mut h = NodeHistory::default();
        h.record(&facts(10, None), T0 + 120);
        h.record(&facts(20, None), T0);
        assert_eq!(h.series(T0 + 120).cpu_millis, [Some(10)]);
        // An hour without reports: nothing to chart.
        assert!(h.series(T0 + 120 + 3600).cpu_millis.is_empty());
    }
}
