//! The image store against real OCI archives built by
//! `tests/fixtures/make-busybox-image.sh` (busybox-static, umoci, skopeo). Needs root:
//! layers are unpacked with their owners, and whiteouts are device nodes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use punnet_agent::image::{ImageError, ImageStore};

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it unpacks image layers with their owners)"
    );
}

/// Builds a busybox archive named `name` in `dir` with the fixture script.
fn make_archive(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(format!("{}.tar", name.replace([':', '/'], "_")));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make-busybox-image.sh");
    let status = Command::new(&script)
        .arg(&out)
        .arg(name)
        .status()
        .expect("running make-busybox-image.sh");
    assert!(status.success(), "make-busybox-image.sh failed: {status}");
    out
}

#[test]
fn a_skopeo_archive_loads_and_resolves_under_every_docker_spelling() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let archive = make_archive(tmp.path(), "busybox:1.36");
    let store = ImageStore::open(&tmp.path().join("images")).unwrap();

    let loaded = store.load_archive(&archive).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].reference, "docker.io/library/busybox:1.36");
    assert!(loaded[0].digest.starts_with("sha256:"));

    for spelling in [
        "busybox:1.36",
        "library/busybox:1.36",
        "docker.io/library/busybox:1.36",
    ] {
        let image = store.resolve(spelling).unwrap();
        assert_eq!(image.digest, loaded[0].digest, "{spelling}");
    }
    let by_digest = store
        .resolve(&format!("busybox@{}", loaded[0].digest))
        .unwrap();
    assert_eq!(by_digest.digest, loaded[0].digest);

    let image = store.resolve("busybox:1.36").unwrap();
    assert_eq!(image.config.cmd, ["/bin/sh"]);
    assert_eq!(image.layers.len(), 1);
    let layer = &image.layers[0];
    assert!(layer.join("bin/busybox").is_file());
    assert_eq!(
        fs::read_link(layer.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );

    let err = store.resolve("busybox:latest").unwrap_err();
    assert!(matches!(err, ImageError::NotPresent { .. }), "{err}");
    assert!(err.to_string().contains("punnet-agent image load"), "{err}");

    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].reference, "docker.io/library/busybox:1.36");
    assert!(listed[0].size > 500_000, "size {}", listed[0].size);
}

#[test]
fn a_tag_only_archive_takes_the_callers_name() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    // What `skopeo copy ... oci-archive:FILE:latest` writes: ref.name "latest".
    let archive = make_archive(tmp.path(), "v2");
    let store = ImageStore::open(&tmp.path().join("images")).unwrap();

    let loaded = store.load_archive_as(&archive, Some("tools/box")).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].reference, "docker.io/tools/box:v2");
    store.resolve("tools/box:v2").unwrap();

    let pinned = store.load_archive_as(&archive, Some("box:stable")).unwrap();
    assert_eq!(pinned[0].reference, "docker.io/library/box:stable");
    // Both names lead to one image and one unpacked layer.
    assert_eq!(pinned[0].digest, loaded[0].digest);
    assert_eq!(
        fs::read_dir(tmp.path().join("images/layers"))
            .unwrap()
            .count(),
        1
    );
}

#[test]
fn concurrent_loads_share_layers_and_keep_every_reference() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let a = make_archive(tmp.path(), "busybox:a");
    let b = make_archive(tmp.path(), "busybox:b");
    let root = tmp.path().join("images");
    let stores: Vec<Arc<ImageStore>> = (0..2)
        .map(|_| Arc::new(ImageStore::open(&root).unwrap()))
        .collect();
    let handles: Vec<_> = [(stores[0].clone(), a), (stores[1].clone(), b)]
        .into_iter()
        .map(|(store, archive)| std::thread::spawn(move || store.load_archive(&archive).unwrap()))
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let refs: Vec<String> = stores[0]
        .list()
        .unwrap()
        .into_iter()
        .map(|s| s.reference)
        .collect();
    assert_eq!(
        refs,
        ["docker.io/library/busybox:a", "docker.io/library/busybox:b"]
    );
    let a = stores[0].resolve("busybox:a").unwrap();
    let b = stores[1].resolve("busybox:b").unwrap();
    assert_eq!(a.layers, b.layers, "the same layer must be unpacked once");
    assert_eq!(
        fs::read_dir(root.join("tmp")).unwrap().count(),
        0,
        "temp files left behind"
    );
}

#[test]
fn a_corrupt_blob_is_rejected_by_name() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let archive = make_archive(tmp.path(), "busybox:1.36");
    let unpacked = tmp.path().join("unpacked");
    fs::create_dir(&unpacked).unwrap();
    run(
        "tar",
        &[
            "-C",
            unpacked.to_str().unwrap(),
            "-xf",
            archive.to_str().unwrap(),
        ],
    );
    let blobs = unpacked.join("blobs/sha256");
    let biggest = fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&biggest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&biggest, bytes).unwrap();
    let corrupt = tmp.path().join("corrupt.tar");
    run(
        "tar",
        &[
            "-C",
            unpacked.to_str().unwrap(),
            "-cf",
            corrupt.to_str().unwrap(),
            ".",
        ],
    );

    let store = ImageStore::open(&tmp.path().join("images")).unwrap();
    let err = store.load_archive(&corrupt).unwrap_err();
    let hex = biggest.file_name().unwrap().to_str().unwrap();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(hex), "{err}");
    assert!(matches!(
        store.resolve("busybox:1.36"),
        Err(ImageError::NotPresent { .. })
    ));
    assert_eq!(
        fs::read_dir(tmp.path().join("images/blobs/sha256"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() == hex)
            .count(),
        0
    );
}

#[test]
fn a_docker_archive_is_refused_with_the_conversion_command() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("manifest.json"), "[]").unwrap();
    let archive = tmp.path().join("docker.tar");
    run(
        "tar",
        &[
            "-C",
            dir.to_str().unwrap(),
            "-cf",
            archive.to_str().unwrap(),
            ".",
        ],
    );
    let store = ImageStore::open(&tmp.path().join("images")).unwrap();
    let err = store.load_archive(&archive).unwrap_err();
    assert!(
        err.to_string().contains("skopeo copy docker-archive:"),
        "{err}"
    );
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().unwrap();
    assert!(status.success(), "{program} {args:?}: {status}");
}
