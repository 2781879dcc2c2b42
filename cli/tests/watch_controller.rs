//! `punnet get -w` against the controller's real REST API (a temporary sled store,
//! `http::serve` on 127.0.0.1): the list, then a row per change, then a resume after the
//! server went away and came back (re-listing when the version has expired meanwhile).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use futures_util::future::BoxFuture;
use punnet_api::wire::LogRequest;
use punnet_api::{ObjectReference, Pod};
use punnet_cli::{run_with, Cli};
use punnet_controller::http::{serve, ApiState, LogError, LogSource, LogStream, Tokens};
use punnet_controller::store::Store;
use tokio::sync::oneshot;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

struct NoLogs;

impl LogSource for NoLogs {
    fn open(&self, node: &str, _: LogRequest) -> BoxFuture<'_, Result<LogStream, LogError>> {
        let node = node.to_string();
        Box::pin(async move {
            Err(LogError::NodeUnavailable {
                node,
                reason: "no logs here".into(),
            })
        })
    }
}

/// Serves the store on `addr` until the returned sender is dropped or fired.
async fn serve_on(store: &Arc<Store>, addr: SocketAddr) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = ApiState::new(
        store.clone(),
        Arc::new(Tokens::new(TOKEN)),
        Arc::new(NoLogs),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, state, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Output a test can read while the command still runs.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits (up to 20 s) until the output has `n` lines.
    async fn lines(&self, n: usize) -> Vec<String> {
        for _ in 0..400 {
            let text = self.text();
            if text.lines().count() >= n {
                return text.lines().map(str::to_string).collect();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected {n} lines, got:\n{}", self.text());
    }
}

fn pod(name: &str) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = name.into();
    p.metadata.namespace = Some("default".into());
    p.spec.containers.push(punnet_api::Container {
        name: "c".into(),
        image: "busybox".into(),
        ..Default::default()
    });
    p
}

fn cells(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[tokio::test]
async fn get_pods_watch_prints_changes_and_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    store.create(pod("a")).unwrap();
    let (addr, stop) = serve_on(&store, "127.0.0.1:0".parse().unwrap()).await;
    let server = format!("http://{addr}");
    let cli = Cli::try_parse_from([
        // Plaintext on purpose: covers `--allow-plaintext` (the other CLI tests use TLS).
        "punnet",
        "--allow-plaintext",
        "--server",
        &server,
        "--token",
        TOKEN,
        "get",
        "pods",
        "-w",
    ])
    .unwrap();
    let (out, err) = (Shared::default(), Shared::default());
    let (mut o, mut e) = (out.clone(), err.clone());
    let command = run_with(cli, &mut o, &mut e);
    let driver = async {
        let lines = out.lines(2).await;
        assert_eq!(cells(&lines[0])[..3], ["NAME", "READY", "STATUS"]);
        assert_eq!(cells(&lines[1])[0], "a");
        store.create(pod("b")).unwrap();
        let lines = out.lines(3).await;
        assert_eq!(cells(&lines[2])[..3], ["b", "0/1", "Pending"]);
        store
            .modify::<Pod>(Some("default"), "a", |p| {
                p.status.phase = Some("Running".into())
            })
            .unwrap();
        let lines = out.lines(4).await;
        assert_eq!(cells(&lines[3])[..3], ["a", "0/1", "Running"]);

        // The server goes away; meanwhile c is created; a new server (with a new, empty
        // watch history) comes up on the same address: the CLI re-lists and shows c.
        stop.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        store.create(pod("c")).unwrap();
        let (_, stop2) = serve_on(&store, addr).await;
        let lines = out.lines(5).await;
        assert_eq!(cells(&lines[4])[0], "c");
        store.delete::<Pod>(Some("default"), "b", None).unwrap();
        let lines = out.lines(6).await;
        assert_eq!(cells(&lines[5])[0], "b");
        stop2
    };
    tokio::select! {
        result = command => panic!("get -w ended: {result:?}\n{}\n{}", out.text(), err.text()),
        _stop2 = driver => {}
    }
    assert_eq!(
        out.text().lines().count(),
        6,
        "each change once:\n{}",
        out.text()
    );
}

#[tokio::test]
async fn get_events_lists_them_and_watch_only_prints_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let web = ObjectReference::to(&store.create(pod("web")).unwrap());
    store.recorder().normal(
        web.clone(),
        "Scheduled",
        "Successfully assigned default/web to pi-1",
    );
    store.recorder().warning(
        web.clone(),
        "BackOff",
        "Back-off restarting failed container c",
    );
    store.recorder().warning(
        web.clone(),
        "BackOff",
        "Back-off restarting failed container c",
    );
    let (addr, _stop) = serve_on(&store, "127.0.0.1:0".parse().unwrap()).await;
    let server = format!("http://{addr}");
    let run = |args: &[&str]| {
        // Plaintext, as the other test here.
        let mut argv = vec![
            "punnet",
            "--allow-plaintext",
            "--server",
            &server,
            "--token",
            TOKEN,
        ];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap()
    };

    let (mut out, mut err) = (Vec::new(), Vec::new());
    run_with(
        run(&["get", "events", "--for", "pod/web"]),
        &mut out,
        &mut err,
    )
    .await
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        cells(lines[0]),
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    );
    assert_eq!(cells(lines[1])[1..4], ["Normal", "Scheduled", "pod/web"]);
    assert_eq!(cells(lines[2])[1..4], ["Warning", "BackOff", "pod/web"]);
    assert_eq!(lines.len(), 3);

    let (mut out, mut err) = (Vec::new(), Vec::new());
    run_with(run(&["describe", "pod", "web"]), &mut out, &mut err)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let events = &text[text.find("Events:").expect("an Events section")..];
    assert!(events.contains("Normal   Scheduled"), "{events}");
    assert!(events.contains("(x2 over"), "{events}");
    assert!(events.contains("punnet-controller"), "{events}");

    let (out, err) = (Shared::default(), Shared::default());
    let (mut o, mut e) = (out.clone(), err.clone());
    let command = run_with(run(&["get", "events", "--watch-only"]), &mut o, &mut e);
    let driver = async {
        // Nothing is printed for what was there before; then the new Event appears.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(out.text(), "");
        store.recorder().warning(
            web.clone(),
            "Unhealthy",
            "Liveness probe failed: connection refused",
        );
        let lines = out.lines(2).await;
        assert!(lines[0].starts_with("LAST SEEN"), "{lines:?}");
        assert_eq!(cells(&lines[1])[1..4], ["Warning", "Unhealthy", "pod/web"]);
    };
    tokio::select! {
        result = command => panic!("get -w ended: {result:?}\n{}", err.text()),
        () = driver => {}
    }
}
