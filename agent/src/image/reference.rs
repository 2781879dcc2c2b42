//! Image references normalised the way Docker does, so that `busybox`,
//! `busybox:latest` and `docker.io/library/busybox:latest` name the same image in
//! Pod specs, on the command line and in archives.

use std::fmt;

/// A parsed image reference. `Display` gives the canonical form used as the store's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (`docker.io`, `ghcr.io`, `localhost:5000`).
    pub domain: String,
    /// Repository path inside the registry (`library/busybox`).
    pub path: String,
    /// `None` only when the reference pins a digest and names no tag.
    pub tag: Option<String>,
    /// `sha256:<hex>` when the reference pins the manifest.
    pub digest: Option<String>,
}

const DEFAULT_DOMAIN: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";

impl Reference {
    /// Parses and normalises `input`; the error says what is wrong with it.
    pub fn parse(input: &str) -> Result<Reference, String> {
        if input.is_empty() {
            return Err("the reference is empty".into());
        }
        let (name, digest) = match input.split_once('@') {
            Some((name, digest)) => {
                if super::oci::sha256_hex(digest).is_none() {
                    return Err(format!(
                        "digest {digest:?} is not sha256:<64 lowercase hex digits>"
                    ));
                }
                (name, Some(digest.to_string()))
            }
            None => (input, None),
        };
        // A tag is a ':' after the last '/': `localhost:5000/app` has a port, not a tag.
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (repo, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
            None => (name, None),
        };
        if let Some(tag) = tag {
            if !is_valid_tag(tag) {
                return Err(format!(
                    "tag {tag:?} is not valid (letters, digits, '_', '.', '-'; at most 128)"
                ));
            }
        }
        let (domain, path) = match repo.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), repo.to_string()),
        };
        let domain = if domain == "index.docker.io" {
            DEFAULT_DOMAIN.to_string()
        } else {
            domain
        };
        if path.is_empty() || path.split('/').any(|c| !is_valid_path_component(c)) {
            return Err(format!(
                "repository {path:?} is not valid (lowercase letters, digits and '.', '_', '-' separated by '/')"
            ));
        }
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// The reference without its digest: the key images are indexed under.
    /// `None` for a digest-only reference (`busybox@sha256:...`).
    pub fn tagged_name(&self) -> Option<String> {
        let tag = self.tag.as_ref()?;
        Some(format!("{}/{}:{tag}", self.domain, self.path))
    }

    /// This reference with `tag` when it names none of its own.
    pub fn with_default_tag(mut self, tag: &str, input_had_tag: bool) -> Reference {
        if !input_had_tag {
            self.tag = Some(tag.to_string());
        }
        self
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Whether `s` names a tag only (`latest`, `1.36`), as `skopeo copy ... oci-archive:F:latest`
/// and `umoci` write into `org.opencontainers.image.ref.name`.
pub fn is_bare_word(s: &str) -> bool {
    !s.contains(['/', ':', '@']) && is_valid_tag(s)
}

/// Whether the part of `input` after its last '/' carries an explicit `:tag`.
pub fn has_explicit_tag(input: &str) -> bool {
    let name = input.split('@').next().unwrap_or(input);
    let last = name.rsplit('/').next().unwrap_or(name);
    last.contains(':')
}

fn is_valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    let first_ok = matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric() || b == b'_');
    first_ok
        && tag.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn is_valid_path_component(c: &str) -> bool {
    let edge_ok =
        |b: Option<u8>| matches!(b, Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit());
    edge_ok(c.bytes().next())
        && edge_ok(c.bytes().last())
        && c.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_hub_short_names_normalise_to_one_key() {
        for s in [
            "busybox",
            "busybox:latest",
            "library/busybox",
            "docker.io/library/busybox:latest",
            "index.docker.io/library/busybox",
        ] {
            assert_eq!(norm(s), "docker.io/library/busybox:latest", "{s}");
        }
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("grafana/grafana:10"), "docker.io/grafana/grafana:10");
    }

    #[test]
    fn registry_hosts_and_ports_are_kept() {
        assert_eq!(norm("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(norm("localhost/app:1"), "localhost/app:1");
        assert_eq!(norm("ghcr.io/org/app:v2"), "ghcr.io/org/app:v2");
        assert_eq!(
            norm("registry.lan:5000/a/b/c:x"),
            "registry.lan:5000/a/b/c:x"
        );
    }

    #[test]
    fn digests_are_kept_and_a_digest_alone_has_no_tag() {
        let d = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let r = Reference::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.tagged_name(), None);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{d}"));
        assert_eq!(
            norm(&format!("busybox:1.36@{d}")),
            format!("docker.io/library/busybox:1.36@{d}")
        );
    }

    #[test]
    fn invalid_references_are_rejected_with_a_reason() {
        assert!(Reference::parse("").is_err());
        assert!(Reference::parse("BusyBox")
            .unwrap_err()
            .contains("lowercase"));
        assert!(Reference::parse("busybox:").is_err());
        assert!(Reference::parse("busybox@sha256:abc")
            .unwrap_err()
            .contains("digest"));
        assert!(Reference::parse("a//b").is_err());
        assert!(Reference::parse("busybox:-x").is_err());
    }

    #[test]
    fn bare_words_and_explicit_tags() {
        assert!(is_bare_word("latest"));
        assert!(is_bare_word("1.36"));
        assert!(!is_bare_word("busybox:1.36"));
        assert!(!is_bare_word("library/busybox"));
        assert!(has_explicit_tag("busybox:1"));
        assert!(has_explicit_tag("localhost:5000/busybox:1"));
        assert!(!has_explicit_tag("localhost:5000/busybox"));
        assert!(!has_explicit_tag("busybox"));
    }
}
