//! Kubernetes resource quantities: CPU in millicores (`100m`, `0.5`, `2`) and memory in
//! bytes (`128Mi`, `1G`, `1e3`, `512`).

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
#[error("invalid quantity {text:?}: {reason}")]
pub struct QuantityError {
    pub text: String,
    pub reason: &'static str,
}

fn err(text: &str, reason: &'static str) -> QuantityError {
    QuantityError {
        text: text.to_string(),
        reason,
    }
}

/// Parses a quantity into a value scaled by `scale` (1000 for CPU millicores, 1 for bytes),
/// rounding up as Kubernetes does.
fn parse_scaled(text: &str, scale: f64) -> Result<u64, QuantityError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(err(text, "empty"));
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let (num, suffix) = if let Some(exp) = suffix.strip_prefix(['e', 'E']) {
        // Decimal exponent form, `1e3`.
        let e: i32 = exp
            .parse()
            .map_err(|_| err(text, "bad exponent after 'e'"))?;
        (format!("{num}e{e}"), "")
    } else {
        (num.to_string(), suffix)
    };
    let value: f64 = num.parse().map_err(|_| {
        err(
            text,
            "expected a number with an optional suffix such as m, Ki, Mi, Gi, k, M, G",
        )
    })?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        _ => {
            return Err(err(
                text,
                "unknown suffix (use m, k, M, G, T, Ki, Mi, Gi or Ti)",
            ))
        }
    };
    let v = value * mult * scale;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(err(text, "out of range"));
    }
    Ok(v.ceil() as u64)
}

/// CPU quantity in millicores: `100m` → 100, `0.5` → 500, `2` → 2000.
pub fn parse_cpu_millis(text: &str) -> Result<u64, QuantityError> {
    parse_scaled(text, 1000.0)
}

/// Memory quantity in bytes: `128Mi` → 134217728, `1G` → 1e9.
pub fn parse_bytes(text: &str) -> Result<u64, QuantityError> {
    parse_scaled(text, 1.0)
}

/// Formats bytes the way `kubectl describe` shows capacity: the largest binary suffix
/// that divides exactly, else plain bytes.
pub fn format_bytes(bytes: u64) -> String {
    for (suffix, unit) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes >= unit && bytes % unit == 0 {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// Formats millicores as Kubernetes does: whole cores without suffix, else `NNNm`.
pub fn format_cpu_millis(millis: u64) -> String {
    if millis % 1000 == 0 {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu() {
        assert_eq!(parse_cpu_millis("100m"), Ok(100));
        assert_eq!(parse_cpu_millis("0.5"), Ok(500));
        assert_eq!(parse_cpu_millis("2"), Ok(2000));
        assert_eq!(parse_cpu_millis("1.0001"), Ok(1001));
        assert!(parse_cpu_millis("fast").is_err());
        assert!(parse_cpu_millis("").is_err());
        assert!(parse_cpu_millis("-1").is_err());
    }

    #[test]
    fn memory() {
        assert_eq!(parse_bytes("128Mi"), Ok(128 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("1e3"), Ok(1000));
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("1.5Gi"), Ok(3 << 29));
        assert!(parse_bytes("12MB").is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(format_bytes(1 << 30), "1Gi");
        assert_eq!(format_bytes(3 << 20), "3Mi");
        assert_eq!(format_bytes(1000), "1000");
        assert_eq!(format_cpu_millis(2000), "2");
        assert_eq!(format_cpu_millis(250), "250m");
    }
}
