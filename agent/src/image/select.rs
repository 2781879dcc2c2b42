//! Choosing the manifest for this board from a multi-platform image index, by the
//! fallback order of [`Platform::accepts`]. Pure, so every rule is unit-tested.

use super::oci::{self, Descriptor};
use crate::platform::Platform;

/// The best manifest in `manifests` for `platform`, or the list of platforms the index
/// offers (`linux/amd64`, `linux/arm/v7`, ...) when none fits. Entries without a platform
/// or for `unknown/unknown` (build attestations) are never chosen nor offered.
pub fn pick<'a>(
    platform: &Platform,
    manifests: &'a [Descriptor],
) -> Result<&'a Descriptor, Vec<String>> {
    let candidates = manifests.iter().filter_map(|m| {
        let p = m.platform.as_ref()?;
        let rank = platform.accepts(&p.os, &p.architecture, p.variant.as_deref())?;
        Some((rank, m))
    });
    // min_by_key keeps the first of equal ranks: the index's own order breaks ties.
    match candidates.min_by_key(|(rank, _)| *rank) {
        Some((_, m)) => Ok(m),
        None => Err(offered(manifests)),
    }
}

/// The platforms an index offers, as `os/arch[/variant]`, in index order.
pub fn offered(manifests: &[Descriptor]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in manifests.iter().filter_map(|m| m.platform.as_ref()) {
        if p.os == "unknown" || p.architecture == "unknown" {
            continue;
        }
        let s = display(p);
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

pub fn display(p: &oci::Platform) -> String {
    match p.variant.as_deref().filter(|v| !v.is_empty()) {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(digest: char, os: &str, arch: &str, variant: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: oci::MEDIA_TYPE_MANIFEST.into(),
            digest: format!("sha256:{}", digest.to_string().repeat(64)),
            size: 1,
            annotations: None,
            platform: Some(oci::Platform {
                os: os.into(),
                architecture: arch.into(),
                variant: variant.map(Into::into),
            }),
        }
    }

    fn index() -> Vec<Descriptor> {
        vec![
            entry('a', "linux", "amd64", None),
            entry('b', "linux", "arm64", Some("v8")),
            entry('c', "linux", "arm", Some("v7")),
            entry('d', "linux", "arm", Some("v6")),
            entry('e', "unknown", "unknown", None),
        ]
    }

    fn chosen(platform: &str, manifests: &[Descriptor]) -> Result<char, Vec<String>> {
        pick(&platform.parse().unwrap(), manifests).map(|d| d.digest.chars().last().unwrap())
    }

    #[test]
    fn each_board_gets_its_own_variant() {
        let idx = index();
        assert_eq!(chosen("linux/amd64", &idx), Ok('a'));
        assert_eq!(chosen("linux/arm64", &idx), Ok('b'));
        assert_eq!(chosen("linux/arm/v7", &idx), Ok('c'));
        assert_eq!(chosen("linux/arm/v6", &idx), Ok('d'));
    }

    #[test]
    fn v7_falls_back_to_v6_but_v6_never_takes_v7() {
        let v6_only = vec![entry('d', "linux", "arm", Some("v6"))];
        assert_eq!(chosen("linux/arm/v7", &v6_only), Ok('d'));
        let v7_and_amd = vec![
            entry('a', "linux", "amd64", None),
            entry('c', "linux", "arm", Some("v7")),
        ];
        assert_eq!(
            chosen("linux/arm/v6", &v7_and_amd),
            Err(vec!["linux/amd64".to_string(), "linux/arm/v7".to_string()])
        );
    }

    #[test]
    fn arm64_takes_a_manifest_without_variant_and_attestations_are_not_offered() {
        let idx = vec![
            entry('a', "linux", "amd64", None),
            entry('b', "linux", "arm64", None),
            entry('e', "unknown", "unknown", None),
        ];
        assert_eq!(chosen("linux/arm64", &idx), Ok('b'));
        assert_eq!(
            chosen("linux/arm/v7", &idx),
            Err(vec!["linux/amd64".to_string(), "linux/arm64".to_string()])
        );
    }
}
