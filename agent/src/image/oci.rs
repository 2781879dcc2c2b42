//! The parts of the OCI image-layout, image-index, manifest and image-config JSON
//! documents the store reads. Unknown fields are ignored so that newer writers load.

use serde::{Deserialize, Serialize};

pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";

pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The annotation `skopeo`, `umoci` and `oras` put the image's name (or only its tag) in.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

impl Descriptor {
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations
            .as_ref()?
            .get(REF_NAME_ANNOTATION)
            .map(String::as_str)
    }

    pub fn is_index(&self) -> bool {
        self.media_type == MEDIA_TYPE_INDEX || self.media_type == MEDIA_TYPE_DOCKER_LIST
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// `index.json` of a layout, or a multi-platform image index blob.
#[derive(Debug, Deserialize)]
pub struct Index {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
pub struct Manifest {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// The image configuration blob; `config` and `rootfs` matter to a runtime, the
/// platform fields to a pull.
#[derive(Debug, Deserialize)]
pub struct ImageConfigBlob {
    #[serde(default)]
    pub config: Option<ContainerDefaults>,
    pub rootfs: RootFs,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub variant: Option<String>,
}

impl ImageConfigBlob {
    /// `linux/arm/v7`, as far as the config says.
    pub fn platform_string(&self) -> String {
        let mut s = format!(
            "{}/{}",
            self.os.as_deref().unwrap_or("linux"),
            self.architecture.as_deref().unwrap_or("unknown")
        );
        if let Some(v) = self.variant.as_deref().filter(|v| !v.is_empty()) {
            s.push('/');
            s.push_str(v);
        }
        s
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ContainerDefaults {
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// The defaults an image gives the containers started from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` strings, as in the image.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`, as in the image; `None` means root.
    pub user: Option<String>,
}

impl From<ContainerDefaults> for ImageConfig {
    fn from(c: ContainerDefaults) -> Self {
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        ImageConfig {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: non_empty(c.working_dir),
            user: non_empty(c.user),
        }
    }
}

/// The hex part of a `sha256:<hex>` digest, or `None` when it is not one.
pub fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    valid.then_some(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_accepts_only_lowercase_sha256() {
        let hex = "a".repeat(64);
        assert_eq!(sha256_hex(&format!("sha256:{hex}")), Some(hex.as_str()));
        assert_eq!(sha256_hex(&format!("sha512:{hex}")), None);
        assert_eq!(sha256_hex(&format!("sha256:{}", "A".repeat(64))), None);
        assert_eq!(sha256_hex("sha256:../../etc"), None);
    }

    #[test]
    fn image_config_defaults_are_empty() {
        let blob: ImageConfigBlob =
            serde_json::from_str(r#"{"rootfs":{"type":"layers","diff_ids":[]}}"#).unwrap();
        assert_eq!(
            ImageConfig::from(blob.config.unwrap_or_default()),
            ImageConfig::default()
        );
    }
}
