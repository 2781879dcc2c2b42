//! The control loops end to end over the embedded broker: registration, Deployment to
//! bound Pods to retained desired state, status back, scaling, deletion, liveness, logs.

mod loops_support;

use std::time::Duration;

use loops_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_to_node_and_back_over_the_embedded_broker() {
    let port = free_port();
    embedded_broker(port).await;
    tokio::time::timeout(Duration::from_secs(60), basic_flow(port))
        .await
        .expect("flow took over 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_becomes_not_ready_after_the_grace_period() {
    use punnet_api::Node;
    let port = free_port();
    embedded_broker(port).await;
    let ctl = Controller::start_with_grace(port, Duration::from_millis(800));
    let agent = FakeAgent::start("n2", port);
    let wait = Duration::from_secs(10);
    eventually("Node n2 Ready", wait, || {
        ctl.store
            .get::<Node>(None, "n2")
            .unwrap()
            .filter(|n| n.is_ready())
    })
    .await;
    // Heartbeats every 200 ms keep it Ready well past the grace period.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(ctl
        .store
        .get::<Node>(None, "n2")
        .unwrap()
        .unwrap()
        .is_ready());
    // Silence (the agent hangs, no last will yet): NotReady after the grace period.
    agent.stop_reporting();
    let node = eventually("Node n2 NotReady", wait, || {
        ctl.store
            .get::<Node>(None, "n2")
            .unwrap()
            .filter(|n| !n.is_ready())
    })
    .await;
    let ready = node.condition("Ready").unwrap();
    assert_eq!(ready.status, "Unknown");
    assert!(
        ready.message.as_deref().unwrap().contains("nothing heard"),
        "{ready:?}"
    );
    drop(agent);
    ctl.stop().await;
}

/// An agent's log side: answers requests for Pod `web` (chunks out of order), refuses
/// Pod `missing`, and for a following request sends one line and keeps quiet.
fn log_responder(
    port: u16,
    node: &str,
) -> std::sync::Arc<std::sync::Mutex<Vec<punnet_api::wire::LogRequest>>> {
    use punnet_api::topics::Topics;
    use punnet_api::wire::{decode, encode, LogChunk, LogRequest};
    use rumqttc::{AsyncClient, Event, Packet, QoS};
    let seen: std::sync::Arc<std::sync::Mutex<Vec<LogRequest>>> = Default::default();
    let topics = Topics::default();
    let (client, mut eventloop) = AsyncClient::new(
        crate::loops_support::mqtt_options(format!("logs-{node}"), port),
        64,
    );
    let (node, log) = (node.to_string(), seen.clone());
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let c = client.clone();
                    let t = topics.log_request(&node);
                    tokio::spawn(async move { c.subscribe(t, QoS::AtLeastOnce).await });
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let req: LogRequest = decode(&p.payload).unwrap();
                    log.lock().unwrap().push(req.clone());
                    let first_time = log
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|r| r.id == req.id)
                        .count()
                        == 1;
                    if req.cancel || !first_time {
                        continue;
                    }
                    let chunk = |seq, data: &str, done, error: Option<&str>| LogChunk {
                        id: req.id.clone(),
                        seq,
                        data: data.as_bytes().to_vec(),
                        done,
                        error: error.map(str::to_string),
                    };
                    let chunks = match (req.pod.as_str(), req.follow) {
                        ("web", false) => vec![
                            chunk(1, "world\n", false, None),
                            chunk(0, "hello\n", false, None),
                            chunk(2, "", true, None),
                        ],
                        ("web", true) => vec![chunk(0, "line\n", false, None)],
                        _ => vec![chunk(
                            0,
                            "",
                            true,
                            Some("pod default/missing is not running on this node"),
                        )],
                    };
                    let (c, t) = (client.clone(), topics.log_reply(&node, &req.id));
                    tokio::spawn(async move {
                        for ch in chunks {
                            let _ = c
                                .publish(t.clone(), QoS::AtLeastOnce, false, encode(&ch))
                                .await;
                        }
                    });
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_proxied_from_the_agent() {
    use futures_util::StreamExt;
    use punnet_api::wire::LogRequest;
    use punnet_controller::http::logs::{LogError, LogSource};
    let port = free_port();
    embedded_broker(port).await;
    let ctl = Controller::start(port);
    let seen = log_responder(port, "n1");
    let request = |pod: &str, follow: bool| LogRequest {
        id: String::new(),
        namespace: "default".into(),
        pod: pod.into(),
        container: Some(pod.into()),
        follow,
        tail_lines: None,
        cancel: false,
    };
    let wait = Duration::from_secs(10);
    // The responder subscribes asynchronously: retry until it answers.
    let stream = eventually_async("the node answers a log request", wait, || {
        let logs = ctl.logs.clone();
        let req = request("web", false);
        async move { logs.open("n1", req).await.ok() }
    })
    .await;
    let text: Vec<u8> = stream
        .map(|item| item.unwrap())
        .collect::<Vec<_>>()
        .await
        .concat();
    assert_eq!(String::from_utf8(text).unwrap(), "hello\nworld\n");

    let err = ctl
        .logs
        .open("n1", request("missing", false))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        LogError::NotFound("pod default/missing is not running on this node".into())
    );

    let err = ctl
        .logs
        .open("ghost", request("web", false))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("node ghost did not answer the log request: is it online?"),
        "{err}"
    );

    // Following: repeated while read, cancelled when dropped.
    let mut stream = ctl.logs.open("n1", request("web", true)).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap(), b"line\n");
    let id = seen.lock().unwrap().last().unwrap().id.clone();
    let count = |cancel: bool| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|r| r.id == id && r.cancel == cancel)
            .count()
    };
    eventually("the follow request is repeated", wait, || {
        (count(false) >= 3).then_some(())
    })
    .await;
    assert_eq!(ctl.logs.open_streams(), 1);
    drop(stream);
    eventually("a cancel is sent", wait, || {
        (count(true) == 1).then_some(())
    })
    .await;
    eventually("the stream is unregistered", wait, || {
        (ctl.logs.open_streams() == 0).then_some(())
    })
    .await;
    ctl.stop().await;
}
