//! The fleet page's HTTP side without a browser: the pages and assets are open and carry
//! a strict Content-Security-Policy, the JSON needs a token, the login cookie reads but
//! never writes nor reads Secrets, and a Secret's value is in no answer the page uses.

use std::sync::Arc;

use punnet_api::{Node, NodeCondition};
use punnet_controller::http::{serve, ApiState, Tokens};
use punnet_controller::logproxy::LogProxy;
use punnet_controller::store::Store;
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "0123456789abcdef0123456789abcdef";
const SECRET_VALUE: &str = "do-not-show-7319";

struct Api {
    base: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    cancel: CancellationToken,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn start() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
    let mut n = Node::default();
    n.metadata.name = "pi-1".into();
    n.status.conditions.push(NodeCondition {
        type_: "Ready".into(),
        status: "True".into(),
        ..Default::default()
    });
    store.create(n).unwrap();
    let state = ApiState::new(
        store,
        Arc::new(Tokens::new(ADMIN)),
        Arc::new(LogProxy::default()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let cancel = CancellationToken::new();
    tokio::spawn(serve(listener, state, cancel.clone().cancelled_owned()));
    Api {
        base,
        // Redirects are checked by hand.
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        _dir: dir,
        cancel,
    }
}

#[tokio::test]
async fn pages_are_open_and_locked_down() {
    let api = start().await;
    let root = api
        .client
        .get(format!("{}/", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), StatusCode::SEE_OTHER);
    assert_eq!(root.headers()[LOCATION], "/ui/");
    for path in [
        "/ui/",
        "/ui/login",
        "/ui/pods/default/web-1",
        "/ui/assets/punnet.css",
        "/ui/assets/punnet.js",
        "/ui/assets/fleet.js",
    ] {
        let res = api
            .client
            .get(format!("{}{path}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let csp = res.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        let body = res.text().await.unwrap();
        assert!(
            !body.contains("https://"),
            "{path} loads nothing from elsewhere"
        );
    }
    let data = api
        .client
        .get(format!("{}/ui/api/fleet", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(data.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_login_cookie_only_reads_and_never_sees_secrets() {
    let api = start().await;
    let admin = |req: reqwest::RequestBuilder| req.bearer_auth(ADMIN);
    let res = admin(
        api.client
            .post(format!("{}/api/v1/namespaces/default/secrets", api.base)),
    )
    .json(&json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds"},
        "stringData": {"password": SECRET_VALUE}
    }))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);

    // A wrong token is refused with a reason; the right one sets the cookie.
    let res = api
        .client
        .post(format!("{}/ui/login", api.base))
        .json(&json!({"token": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.text().await.unwrap().contains("not valid"));
    let res = api
        .client
        .get(format!("{}/ui/login?token={ADMIN}", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[LOCATION], "/ui/");
    let set = res.headers()[SET_COOKIE].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let with_cookie = |req: reqwest::RequestBuilder| req.header(COOKIE, cookie.clone());

    let fleet = with_cookie(api.client.get(format!("{}/ui/api/fleet", api.base)))
        .send()
        .await
        .unwrap();
    assert_eq!(fleet.status(), StatusCode::OK);
    let body = fleet.text().await.unwrap();
    assert!(!body.contains(SECRET_VALUE));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["nodes"][0]["name"], "pi-1");
    assert_eq!(v["counts"]["nodesReady"], 1);
    assert_eq!(v["plaintext"], false);

    // The cookie reads the API (the page's log view uses it) ...
    let pods = with_cookie(api.client.get(format!("{}/api/v1/pods", api.base)))
        .send()
        .await
        .unwrap();
    assert_eq!(pods.status(), StatusCode::OK);
    // ... but not Secrets, even though it holds the admin token ...
    let secrets = with_cookie(api.client.get(format!(
        "{}/api/v1/namespaces/default/secrets/creds",
        api.base
    )))
    .send()
    .await
    .unwrap();
    assert_eq!(secrets.status(), StatusCode::FORBIDDEN);
    assert!(!secrets.text().await.unwrap().contains(SECRET_VALUE));
    // ... and never writes.
    let write = with_cookie(api.client.delete(format!("{}/api/v1/nodes/pi-1", api.base)))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), StatusCode::FORBIDDEN);
    let still = admin(api.client.get(format!("{}/api/v1/nodes/pi-1", api.base)))
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), StatusCode::OK);

    // Logging out clears the cookie.
    let out = api
        .client
        .post(format!("{}/ui/logout", api.base))
        .send()
        .await
        .unwrap();
    assert!(out.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
}
