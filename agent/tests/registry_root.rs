//! Registry pulls against Debian's `docker-registry` on loopback: a multi-platform
//! busybox index and the variant each board gets, a v6 board refused a v7-only image,
//! a download cut halfway and resumed with a Range request, a tampered blob rejected,
//! htpasswd auth (right, wrong and via a docker config.json), a plain-HTTP registry not
//! listed as insecure, and garbage collection of pulled images. Needs root (layers are
//! unpacked with their owners).

mod registry_support;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine;

use punnet_agent::image::{
    docker_config_credentials, ImageStore, PullError, PullOptions, PullProgress,
    RegistryCredentials,
};
use punnet_agent::platform::Platform;
use registry_support::{require_root, CuttingProxy, Registry, TestImage, DATA_LAYER_BYTES};

const ALL: &[(&str, Option<&str>)] = &[
    ("amd64", None),
    ("arm64", Some("v8")),
    ("arm", Some("v7")),
    ("arm", Some("v6")),
];

fn opts(platform: &str, registry: &str) -> PullOptions {
    let mut o = PullOptions::new(platform.parse::<Platform>().unwrap());
    o.insecure_registries = vec![registry.to_string()];
    o
}

/// The `/etc/punnet-variant` of the image `reference` resolves to in `store`.
fn variant_in(store: &ImageStore, reference: &str) -> String {
    let image = store.resolve(reference).unwrap();
    let top = image.layers.last().unwrap();
    std::fs::read_to_string(top.join("etc/punnet-variant"))
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_board_gets_its_variant_from_a_multi_platform_index() {
    require_root();
    let registry = Registry::start();
    let image = TestImage::build(ALL);
    registry.push("punnet/busybox", "multi", &image).await;
    let v7_only = TestImage::build(&[("amd64", None), ("arm", Some("v7"))]);
    registry.push("punnet/busybox", "v7only", &v7_only).await;
    let arm64_single = TestImage::build(&[("arm64", Some("v8"))]);
    registry
        .push("punnet/busybox", "arm64", &arm64_single)
        .await;
    let reference = format!("{}/punnet/busybox:multi", registry.host());

    for (board, expect) in [
        ("linux/amd64", "linux/amd64"),
        ("linux/arm64", "linux/arm64/v8"),
        ("linux/arm/v7", "linux/arm/v7"),
        ("linux/arm/v6", "linux/arm/v6"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::open(tmp.path()).unwrap();
        let seen: Arc<Mutex<Vec<PullProgress>>> = Arc::default();
        let mut o = opts(board, &registry.host());
        let sink = seen.clone();
        o.progress = Some(Arc::new(move |p| sink.lock().unwrap().push(p)));
        let pulled = store.pull(&reference, &o).await.unwrap();
        assert_eq!(variant_in(&store, &reference), expect, "{board}");
        assert_eq!(pulled.platform, expect);
        assert_eq!(pulled.layers_fetched, 3);
        assert_eq!(
            pulled.index_digest.as_deref(),
            Some(image.index.as_ref().unwrap().0.as_str())
        );
        let chosen = image.manifests.iter().find(|m| {
            let name = match &m.platform.1 {
                Some(v) => format!("linux/{}/{v}", m.platform.0),
                None => format!("linux/{}", m.platform.0),
            };
            name == expect
        });
        assert_eq!(pulled.digest, chosen.unwrap().digest);
        // imageID is the repository digest of the index, and resolves to the same image.
        assert_eq!(
            pulled.image_id,
            format!(
                "{}/punnet/busybox@{}",
                registry.host(),
                image.index.as_ref().unwrap().0
            )
        );
        assert_eq!(
            store.resolve(&pulled.image_id).unwrap().digest,
            pulled.digest
        );
        let last = *seen.lock().unwrap().last().unwrap();
        assert_eq!(last.layers_done, 3);
        assert_eq!(last.layers_total, 3);
        assert_eq!(last.bytes_done, last.bytes_total);
        assert!(last.bytes_total > DATA_LAYER_BYTES as u64, "{last:?}");

        // A second pull finds every layer present and downloads nothing.
        let again = store.pull(&reference, &o).await.unwrap();
        assert_eq!((again.layers_fetched, again.bytes_fetched), (0, 0));
    }

    // By digest: the arm/v7 manifest pinned directly.
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let v7 = &image.manifests[2];
    let pinned = format!("{}/punnet/busybox@{}", registry.host(), v7.digest);
    let pulled = store
        .pull(&pinned, &opts("linux/arm/v7", &registry.host()))
        .await
        .unwrap();
    assert_eq!(pulled.digest, v7.digest);
    assert_eq!(variant_in(&store, &pinned), "linux/arm/v7");

    // A v7 board takes v6 when that is all there is; a v6 board never takes v7.
    let v6_board = opts("linux/arm/v6", &registry.host());
    let v7_ref = format!("{}/punnet/busybox:v7only", registry.host());
    let err = store.pull(&v7_ref, &v6_board).await.unwrap_err();
    assert!(matches!(err, PullError::NoMatchingPlatform { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "image {v7_ref} has no variant for linux/arm/v6: it offers linux/amd64, linux/arm/v7"
        )
    );

    // A single-platform image for another architecture is refused by its config.
    let arm64_ref = format!("{}/punnet/busybox:arm64", registry.host());
    let err = store.pull(&arm64_ref, &v6_board).await.unwrap_err();
    assert!(matches!(err, PullError::PlatformMismatch { .. }), "{err}");
    assert!(err.to_string().contains("linux/arm64/v8"), "{err}");

    let err = store
        .pull(&format!("{}/punnet/nothing:1", registry.host()), &v6_board)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("punnet/nothing:1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_halfway_resumes_with_a_range_request() {
    require_root();
    let registry = Registry::start();
    let image = TestImage::build(ALL);
    registry.push("punnet/busybox", "multi", &image).await;
    let cut_at = DATA_LAYER_BYTES / 2;
    let proxy = CuttingProxy::start(registry.port, &image.data_layer, cut_at).await;

    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let reference = format!("{}/punnet/busybox:multi", proxy.host());
    let pulled = store
        .pull(&reference, &opts("linux/arm/v7", &proxy.host()))
        .await
        .unwrap();
    assert_eq!(variant_in(&store, &reference), "linux/arm/v7");
    assert_eq!(proxy.cuts.load(std::sync::atomic::Ordering::SeqCst), 1);
    let ranges = proxy.ranges.lock().unwrap().clone();
    let resumed: Vec<u64> = ranges
        .iter()
        .filter_map(|r| r.split("bytes=").nth(1)?.split('-').next()?.parse().ok())
        .filter(|offset| *offset > 0)
        .collect();
    assert_eq!(resumed.len(), 1, "ranges sent: {ranges:?}");
    // The resume starts where the cut left the file, not at zero.
    assert!(resumed[0] > (cut_at as u64) / 2, "ranges sent: {ranges:?}");
    // Every byte came over the wire once: nothing was downloaded again from zero.
    let manifest: serde_json::Value = serde_json::from_slice(&image.manifests[2].bytes).unwrap();
    let layer_bytes: u64 = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert_eq!(pulled.bytes_fetched, layer_bytes);
    assert!(
        std::fs::read_dir(tmp.path().join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "no partial file is left behind"
    );

    // A pull that gave up leaves its partial file in tmp/; the next pull (here into a
    // fresh store seeded with half the layer) asks only for the rest.
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let data = &image
        .blobs
        .iter()
        .find(|(d, _)| *d == image.data_layer)
        .unwrap()
        .1;
    let hex = image.data_layer.strip_prefix("sha256:").unwrap();
    let half = data.len() / 2;
    std::fs::write(
        tmp.path().join("tmp").join(format!("partial-{hex}")),
        &data[..half],
    )
    .unwrap();
    proxy.ranges.lock().unwrap().clear();
    let pulled = store
        .pull(&reference, &opts("linux/arm/v7", &proxy.host()))
        .await
        .unwrap();
    assert_eq!(variant_in(&store, &reference), "linux/arm/v7");
    let ranges = proxy.ranges.lock().unwrap().clone();
    assert_eq!(ranges, vec![format!("range: bytes={half}-")]);
    assert_eq!(pulled.bytes_fetched, layer_bytes - half as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_blob_is_rejected_and_deleted() {
    require_root();
    let registry = Registry::start();
    let image = TestImage::build(ALL);
    registry.push("punnet/busybox", "multi", &image).await;
    let data = registry.blob_data(&image.data_layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let reference = format!("{}/punnet/busybox:multi", registry.host());
    let err = store
        .pull(&reference, &opts("linux/arm64", &registry.host()))
        .await
        .unwrap_err();
    match &err {
        PullError::DigestMismatch { digest, .. } => assert_eq!(digest, &image.data_layer),
        other => panic!("expected a digest mismatch, got {other}"),
    }
    assert!(err.to_string().contains(&image.data_layer), "{err}");
    assert!(err.to_string().contains("corrupt"), "{err}");
    let hex = image.data_layer.strip_prefix("sha256:").unwrap();
    assert!(!tmp.path().join("blobs/sha256").join(hex).exists());
    assert!(!tmp
        .path()
        .join("tmp")
        .join(format!("partial-{hex}"))
        .exists());
    assert!(
        store.resolve(&reference).is_err(),
        "a failed pull leaves no image"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_registry_takes_right_credentials_and_names_wrong_ones() {
    require_root();
    let registry = Registry::start_with_auth("pi", "raspberry");
    let image = TestImage::build(&[("amd64", None), ("arm", Some("v7"))]);
    registry.push("private/busybox", "1", &image).await;
    let host = registry.host();
    let reference = format!("{host}/private/busybox:1");
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();

    let mut wrong = opts("linux/arm/v7", &host);
    wrong.auth = Some(RegistryCredentials {
        username: "pi".into(),
        password: "wrong".into(),
    });
    let err = store.pull(&reference, &wrong).await.unwrap_err();
    assert!(matches!(err, PullError::Unauthorized { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "registry {host} refused the credentials for {reference}: check the imagePullSecret"
        )
    );

    let err = store
        .pull(&reference, &opts("linux/arm/v7", &host))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PullError::CredentialsRequired { .. }),
        "{err}"
    );

    // The imagePullSecret path: a docker config.json looked up by registry host.
    let auth = base64::engine::general_purpose::STANDARD.encode(b"pi:raspberry");
    let config = format!(r#"{{"auths":{{"http://{host}":{{"auth":"{auth}"}}}}}}"#);
    let mut right = opts("linux/arm/v7", &host);
    right.auth = docker_config_credentials(config.as_bytes(), &host).unwrap();
    assert!(right.auth.is_some());
    store.pull(&reference, &right).await.unwrap();
    assert_eq!(variant_in(&store, &reference), "linux/arm/v7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_registry_must_be_listed_as_insecure() {
    require_root();
    let registry = Registry::start();
    let image = TestImage::build(&[("amd64", None), ("arm", Some("v7"))]);
    registry.push("punnet/busybox", "1", &image).await;
    let host = registry.host();
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let mut https_only = opts("linux/arm/v7", &host);
    https_only.insecure_registries.clear();
    let err = store
        .pull(&format!("{host}/punnet/busybox:1"), &https_only)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::InsecureNotAllowed { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("registry {host} uses plain HTTP; add --insecure-registry {host}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registries_are_reached_over_https_and_an_unknown_ca_is_named() {
    require_root();
    let registry = Registry::start_tls();
    let host = registry.host();
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let err = store
        .pull(
            &format!("{host}/punnet/busybox:1"),
            &PullOptions::new("linux/arm/v7".parse().unwrap()),
        )
        .await
        .unwrap_err();
    // A TLS failure, not mistaken for a plain-HTTP registry (Go's HTTPS server answers
    // plain HTTP with a 400).
    assert!(
        matches!(err, PullError::UntrustedCertificate { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("update-ca-certificates"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_unused_pulled_images_but_never_one_in_use() {
    require_root();
    let registry = Registry::start();
    let a = TestImage::build(&[("amd64", None), ("arm", Some("v7"))]);
    registry.push("punnet/a", "1", &a).await;
    let b = TestImage::build(&[("amd64", None), ("arm", Some("v6"))]);
    registry.push("punnet/b", "1", &b).await;
    let host = registry.host();
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let o = opts("linux/arm/v7", &host);
    let ra = format!("{host}/punnet/a:1");
    let rb = format!("{host}/punnet/b:1");
    let pa = store.pull(&ra, &o).await.unwrap();
    store.pull(&rb, &o).await.unwrap();

    // Asking for more free space than the disk has removes everything unused.
    let gc_store = store.clone();
    let in_use = vec![pa.image_id.clone()];
    let report = tokio::task::spawn_blocking(move || gc_store.gc(&in_use, u64::MAX))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.removed_images.len(), 1, "{report:?}");
    assert!(report.removed_references.contains(&rb), "{report:?}");
    assert!(store.resolve(&rb).is_err());
    // a shares its busybox and data layers with b; they stay with a.
    assert_eq!(variant_in(&store, &ra), "linux/arm/v7");

    // b pulls again, fetching only its own marker layer.
    let again = store.pull(&rb, &o).await.unwrap();
    assert_eq!(again.layers_fetched, 1);
}

/// Cold pull time of the 3-layer test image (2.9 MB compressed) from the loopback
/// registry: `cargo test -p punnet-agent --test registry_root -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_cold_pull() {
    require_root();
    let registry = Registry::start();
    let image = TestImage::build(ALL);
    registry.push("punnet/busybox", "multi", &image).await;
    let reference = format!("{}/punnet/busybox:multi", registry.host());
    let mut times = Vec::new();
    for _ in 0..7 {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::open(tmp.path()).unwrap();
        let start = Instant::now();
        store
            .pull(&reference, &opts("linux/arm/v7", &registry.host()))
            .await
            .unwrap();
        times.push(start.elapsed());
    }
    times.sort();
    let bytes: usize = image.blobs.iter().map(|(_, b)| b.len()).sum();
    println!(
        "cold pull of a 3-layer image from a loopback registry: median {:?} (min {:?}, max {:?}; {} blob bytes in the registry)",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        bytes
    );
}
