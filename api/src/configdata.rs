//! ConfigMap and Secret (core/v1): data the agent projects into Pods as files and
//! environment variables.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMap {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    /// Values are base64, as in Kubernetes.
    #[serde(default)]
    pub binary_data: BTreeMap<String, String>,
    #[serde(default)]
    pub immutable: Option<bool>,
}

impl ConfigMap {
    /// Every key with its bytes (`binaryData` decoded). Validation rejects bad base64,
    /// so a value that does not decode here is skipped rather than failing the Pod.
    pub fn entries(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out: BTreeMap<String, Vec<u8>> = self
            .data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        for (k, v) in &self.binary_data {
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(v) {
                out.insert(k.clone(), bytes);
            }
        }
        out
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `Opaque` (default), `kubernetes.io/dockerconfigjson`, ...
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    /// Values are base64.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    /// Write-only convenience: merged into `data` (encoded) when stored.
    #[serde(default)]
    pub string_data: BTreeMap<String, String>,
    #[serde(default)]
    pub immutable: Option<bool>,
}

/// The type of a Secret that carries a docker `config.json` under `.dockerconfigjson`.
pub const SECRET_TYPE_DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";

impl Secret {
    /// Moves `stringData` into `data`, as the API server does on every write.
    pub fn fold_string_data(&mut self) {
        for (k, v) in std::mem::take(&mut self.string_data) {
            self.data
                .insert(k, base64::engine::general_purpose::STANDARD.encode(v));
        }
    }

    /// Every key with its decoded bytes (`stringData` included, it wins as in Kubernetes).
    pub fn entries(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (k, v) in &self.data {
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(v) {
                out.insert(k.clone(), bytes);
            }
        }
        for (k, v) in &self.string_data {
            out.insert(k.clone(), v.clone().into_bytes());
        }
        out
    }
}

/// Whether `s` is standard base64 (what `data` of a Secret and `binaryData` must hold).
pub fn is_base64(s: &str) -> bool {
    base64::engine::general_purpose::STANDARD.decode(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_string_data_folds_into_data_and_decodes() {
        let mut s = Secret::default();
        s.string_data.insert("user".into(), "pi".into());
        s.data.insert("pw".into(), "c2VjcmV0".into());
        s.fold_string_data();
        assert!(s.string_data.is_empty());
        let e = s.entries();
        assert_eq!(e["user"], b"pi");
        assert_eq!(e["pw"], b"secret");
    }

    #[test]
    fn configmap_binary_data_decodes_next_to_text() {
        let mut c = ConfigMap::default();
        c.data.insert("a.txt".into(), "hi".into());
        c.binary_data.insert("b.bin".into(), "AAEC".into());
        let e = c.entries();
        assert_eq!(e["a.txt"], b"hi");
        assert_eq!(e["b.bin"], vec![0, 1, 2]);
    }
}
