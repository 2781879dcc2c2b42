//! Keeps Secret values off the board page. The page never shows where they go (env
//! values from `secretKeyRef`, secret volumes); this masks them where they can still
//! turn up: in a container's own log lines, when a program prints its password.

use punnet_api::Secret;

/// What replaces a Secret value.
pub const MASK: &str = "••••••";
/// Shorter values are not masked: masking `1` or `on` would garble every line and
/// would tell a reader where the short value is anyway.
pub const MIN_LEN: usize = 4;

#[derive(Debug, Default, Clone)]
pub struct Redactor {
    /// Longest first, so a value that contains another is masked whole.
    values: Vec<String>,
}

impl Redactor {
    /// From the Secrets of the desired state (only those its Pods use are sent).
    pub fn new(secrets: &[Secret]) -> Redactor {
        let mut values = Vec::new();
        for s in secrets {
            for bytes in s.entries().into_values() {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                // A multi-line value (a key, a certificate) is printed line by line too.
                for line in text.lines() {
                    let line = line.trim();
                    if line.chars().count() >= MIN_LEN {
                        values.push(line.to_string());
                    }
                }
                let whole = text.trim();
                if whole.chars().count() >= MIN_LEN {
                    values.push(whole.to_string());
                }
            }
        }
        values.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        values.dedup();
        Redactor { values }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MASK);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        let mut s = Secret::default();
        for (k, v) in pairs {
            s.string_data.insert(k.to_string(), v.to_string());
        }
        s.fold_string_data();
        s
    }

    #[test]
    fn secret_values_are_masked_in_text() {
        let r = Redactor::new(&[
            secret(&[("password", "hunter22"), ("pin", "42")]),
            secret(&[(
                "key",
                "-----BEGIN KEY-----\nQUJDREVGR0g=\n-----END KEY-----\n",
            )]),
        ]);
        assert_eq!(
            r.redact("login with hunter22 and pin 42"),
            format!("login with {MASK} and pin 42")
        );
        assert_eq!(r.redact("QUJDREVGR0g="), MASK);
        assert!(!r.redact("x hunter22hunter22 y").contains("hunter"));
        assert_eq!(r.redact("nothing here"), "nothing here");
    }

    #[test]
    fn a_value_that_holds_another_is_masked_whole() {
        let r = Redactor::new(&[secret(&[("a", "abcd"), ("b", "xxabcdxx")])]);
        assert_eq!(r.redact("xxabcdxx"), MASK);
        assert_eq!(r.redact("abcd"), MASK);
        assert!(Redactor::new(&[]).is_empty());
    }
}
