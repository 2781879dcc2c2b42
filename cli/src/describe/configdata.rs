//! `punnet describe configmap|secret`, as kubectl lays them out: a ConfigMap shows its
//! text values whole (they are configuration, not secrets) and its binary keys as
//! sizes; a Secret shows only how many bytes each key holds.

use punnet_api::{ConfigMap, Secret};

use super::Doc;
use crate::get::secret_type;

/// Name, namespace, labels and annotations, aligned as the other kinds are.
fn header(meta: &punnet_api::ObjectMeta) -> Doc {
    let mut d = Doc::default();
    d.field(0, "Name", &meta.name);
    d.field(0, "Namespace", meta.namespace_or_default());
    d.map(0, "Labels", &meta.labels);
    d.map(0, "Annotations", &meta.annotations);
    d
}

pub fn describe_config_map(c: &ConfigMap) -> String {
    let mut out = header(&c.metadata).finish();
    // Values may span lines, so they are written as they are, outside the aligned part.
    out.push_str("\nData\n====\n");
    for (k, v) in &c.data {
        let v = v.strip_suffix('\n').unwrap_or(v);
        out.push_str(&format!("{k}:\n----\n{v}\n\n"));
    }
    if c.data.is_empty() {
        out.push('\n');
    }
    out.push_str("BinaryData\n====\n");
    for (k, bytes) in c.entries() {
        if c.binary_data.contains_key(&k) {
            out.push_str(&format!("{k}: {} bytes\n", bytes.len()));
        }
    }
    if c.immutable == Some(true) {
        out.push_str("\nImmutable:  true\n");
    }
    out
}

pub fn describe_secret(s: &Secret) -> String {
    let mut d = header(&s.metadata);
    d.line(0, "");
    d.field(0, "Type", secret_type(s));
    if s.immutable == Some(true) {
        d.field(0, "Immutable", "true");
    }
    d.line(0, "");
    d.line(0, "Data");
    d.line(0, "====");
    for (k, bytes) in s.entries() {
        d.field(0, &k, format!("{} bytes", bytes.len()));
    }
    d.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_map_shows_text_and_sizes_of_binary_data() {
        let mut c = ConfigMap::default();
        c.metadata.name = "web-config".into();
        c.metadata.namespace = Some("default".into());
        c.data.insert("index.html".into(), "<h1>hi</h1>".into());
        c.data.insert("nginx.conf".into(), "a\nb\n".into());
        c.binary_data.insert("logo.bin".into(), "AAEC".into());
        assert_eq!(
            describe_config_map(&c),
            "Name:         web-config\n\
             Namespace:    default\n\
             Labels:       <none>\n\
             Annotations:  <none>\n\
             \n\
             Data\n\
             ====\n\
             index.html:\n\
             ----\n\
             <h1>hi</h1>\n\
             \n\
             nginx.conf:\n\
             ----\n\
             a\n\
             b\n\
             \n\
             BinaryData\n\
             ====\n\
             logo.bin: 3 bytes\n"
        );
    }

    #[test]
    fn secret_shows_only_byte_counts() {
        let mut s = Secret::default();
        s.metadata.name = "db".into();
        s.metadata.namespace = Some("default".into());
        s.data.insert("password".into(), "czNjcmV0".into());
        s.data.insert("user".into(), "cGk=".into());
        let text = describe_secret(&s);
        assert_eq!(
            text,
            "Name:         db\n\
             Namespace:    default\n\
             Labels:       <none>\n\
             Annotations:  <none>\n\
             \n\
             Type:  Opaque\n\
             \n\
             Data\n\
             ====\n\
             password:  6 bytes\n\
             user:      2 bytes\n"
        );
        assert!(!text.contains("s3cret"));
    }
}
