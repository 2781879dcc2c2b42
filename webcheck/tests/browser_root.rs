//! webcheck's own test (root: Chromium runs with --no-sandbox as root in CI): a tiny
//! page served on loopback is opened in headless Chromium; text appears after a
//! script changes it, a timeout names the text it waited for and shows the page, and
//! screenshots at desktop and phone widths are PNGs of those widths.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use webcheck::{Browser, Options, Scheme, DESKTOP, PHONE};

const PAGE: &str = r#"<!doctype html><html><head><meta name="viewport" content="width=device-width">
<style>@media (prefers-color-scheme: dark) { body { background: #000; } }</style></head>
<body><h1 id="title">Loading</h1><p id="w"></p>
<script>
setTimeout(() => { document.getElementById('title').textContent = 'Ready after a while'; }, 300);
document.getElementById('w').textContent = 'width ' + window.innerWidth;
</script></body></html>"#;

/// Serves `PAGE` to every request until the test ends.
async fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{PAGE}",
                    PAGE.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/")
}

/// The width and height in a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[1..4], b"PNG", "not a PNG");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    (w, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_browser_waits_reads_and_screenshots() {
    let url = serve().await;
    let mut browser = Browser::start(Options::default()).await.unwrap();
    browser.open(&url).await.unwrap();
    browser.wait_for_text("Ready after a while").await.unwrap();
    assert_eq!(
        browser.text_of("#title").await.unwrap(),
        "Ready after a while"
    );
    browser.wait_for_selector("#w").await.unwrap();
    assert!(browser.text().await.unwrap().contains("width 1280"));

    browser.set_timeout(Duration::from_millis(500));
    let err = browser
        .wait_for_text("never shown")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"never shown\""), "{err}");
    assert!(
        err.contains("Ready after a while"),
        "the error shows the page: {err}"
    );
    let missing = browser.text_of("#nothing").await.unwrap_err().to_string();
    assert!(missing.contains("#nothing"), "{missing}");

    let desktop = browser.screenshot("webcheck-self", DESKTOP).await.unwrap();
    assert_eq!(png_size(&std::fs::read(&desktop).unwrap()).0, DESKTOP);
    browser.color_scheme(Scheme::Dark).await.unwrap();
    let dark = browser
        .eval("matchMedia('(prefers-color-scheme: dark)').matches")
        .await
        .unwrap();
    assert_eq!(dark, serde_json::json!(true));
    let phone = browser.screenshot("webcheck-self", PHONE).await.unwrap();
    assert_eq!(png_size(&std::fs::read(&phone).unwrap()).0, PHONE);
    assert!(phone.starts_with(webcheck::screenshot_dir()));
    browser.close().await;
}
