//! The board page's HTTP server on loopback, without a browser (no root needed): what
//! it serves, with and without `--web-token`, and that it sends only what it should.

use std::time::Duration;

use punnet_agent::config::AgentConfig;
use punnet_agent::link::LinkHealth;
use punnet_agent::web::{model, server, BoardState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Reply {
    status: u16,
    head: String,
    body: String,
}

/// One HTTP/1.1 request on a fresh connection.
async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: board\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut raw))
        .await
        .expect("the server answers")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

async fn start(
    token: Option<&str>,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<BoardState>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new("pi-http");
    config.data_dir = dir.path().to_path_buf();
    config.web_token = token.map(str::to_string);
    let board = BoardState::with_link(&config, || LinkHealth {
        connected: true,
        ..LinkHealth::default()
    });
    let mut secret = punnet_api::Secret::default();
    secret
        .string_data
        .insert("pw".into(), "correct-horse".into());
    board.set_secrets(&[secret]);
    board.update(model::Snapshot::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(
        listener,
        board.clone(),
        std::future::pending(),
    ));
    (addr, board, dir)
}

#[tokio::test]
async fn without_a_token_the_page_json_and_assets_are_served() {
    let (addr, _board, _dir) = start(None).await;
    let page = request(addr, "GET", "/", &[], "").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("/assets/board.js"));
    assert!(
        page.head.contains("content-security-policy"),
        "{}",
        page.head
    );
    assert!(
        !page.body.contains("<script>"),
        "no inline script: the CSP forbids it"
    );

    let json = request(addr, "GET", "/api/board", &[], "").await;
    assert_eq!(json.status, 200);
    assert!(json.head.contains("application/json"));
    assert!(json.head.contains("cache-control: no-store"));
    let v: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(v["node"]["name"], "pi-http");
    assert_eq!(v["link"]["connected"], true);
    assert!(v["checks"].is_array());
    assert!(v["history"]["cpuMillis"].is_array());

    for (path, kind) in [
        ("/assets/punnet.css", "text/css"),
        ("/assets/punnet.js", "text/javascript"),
        ("/assets/board.css", "text/css"),
        ("/assets/board.js", "text/javascript"),
    ] {
        let r = request(addr, "GET", path, &[], "").await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.head.contains(kind), "{path}: {}", r.head);
    }

    let log = request(addr, "GET", "/api/pods/default/nope/log", &[], "").await;
    assert_eq!(log.status, 404);
    assert!(
        log.body.contains("pod default/nope is not on node pi-http"),
        "{}",
        log.body
    );

    // Read-only: nothing changes state over HTTP.
    let put = request(addr, "PUT", "/api/board", &[], "{}").await;
    assert_eq!(put.status, 405);
}

#[tokio::test]
async fn a_token_is_asked_for_and_kept_in_a_cookie() {
    let (addr, _board, _dir) = start(Some("let-me-see")).await;
    let page = request(addr, "GET", "/", &[], "").await;
    assert_eq!(page.status, 401);
    assert!(
        page.body
            .contains("<form method=\"post\" action=\"/login\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("--web-token"));

    let json = request(addr, "GET", "/api/board", &[], "").await;
    assert_eq!(json.status, 401);
    assert!(json.head.contains("www-authenticate: bearer"));
    assert!(json.body.contains("Authorization: Bearer"), "{}", json.body);
    let wrong = request(
        addr,
        "GET",
        "/api/board",
        &[("authorization", "Bearer guess")],
        "",
    )
    .await;
    assert_eq!(wrong.status, 401);

    let ok = request(
        addr,
        "GET",
        "/api/board",
        &[("authorization", "Bearer let-me-see")],
        "",
    )
    .await;
    assert_eq!(ok.status, 200);

    // The assets carry no data: the sign-in page needs its stylesheet.
    assert_eq!(
        request(addr, "GET", "/assets/punnet.css", &[], "")
            .await
            .status,
        200
    );

    let form = [("content-type", "application/x-www-form-urlencoded")];
    let bad = request(addr, "POST", "/login", &form, "token=nope").await;
    assert_eq!(bad.status, 401);
    assert!(bad.body.contains("not this board"), "{}", bad.body);
    let good = request(addr, "POST", "/login", &form, "token=let-me-see").await;
    assert_eq!(good.status, 303, "{}", good.head);
    let cookie = good
        .head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a cookie")
        .to_string();
    assert!(
        cookie.contains("httponly") && cookie.contains("samesite=strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("let-me-see"),
        "the cookie holds a digest, not the token"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let page = request(addr, "GET", "/", &[("cookie", &pair)], "").await;
    assert_eq!(page.status, 200);
    let json = request(
        addr,
        "GET",
        "/api/board",
        &[("cookie", &format!("other=1; {pair}"))],
        "",
    )
    .await;
    assert_eq!(json.status, 200);
    assert!(!json.body.contains("correct-horse"));
}
