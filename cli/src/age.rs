//! kubectl's way of showing how old something is (`5s`, `3m20s`, `4h`, `2d3h`, `45d`,
//! `2y30d`): precise when recent, coarser as time goes by. A port of
//! `k8s.io/apimachinery/pkg/util/duration.HumanDuration`.

use chrono::{DateTime, Utc};
use punnet_api::Time;

/// Age of a timestamp at `now`; `<unknown>` when the server did not set one.
pub fn age(since: Option<&Time>, now: DateTime<Utc>) -> String {
    match since {
        Some(t) => human_duration((now - t.0).num_seconds()),
        None => "<unknown>".into(),
    }
}

pub fn human_duration(seconds: i64) -> String {
    // Clocks of two machines disagree a little; a second or so in the future is "now".
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return match days % 365 {
            0 => format!("{years}y"),
            d => format!("{years}y{d}d"),
        };
    }
    format!("{years}y")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_kubectl() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (600, "10m"),
            (179 * 60 + 59, "179m"),
            (4 * 3600, "4h"),
            (4 * 3600 + 30 * 60, "4h30m"),
            (30 * 3600, "30h"),
            (2 * 86400 + 3 * 3600, "2d3h"),
            (45 * 86400, "45d"),
            (800 * 86400, "2y70d"),
            (3000 * 86400, "8y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}s");
        }
    }

    #[test]
    fn from_timestamps() {
        let t = Time("2024-01-01T00:00:00Z".parse().unwrap());
        let now = "2024-01-01T00:03:20Z".parse().unwrap();
        assert_eq!(age(Some(&t), now), "3m20s");
        assert_eq!(age(None, now), "<unknown>");
    }
}
