//! Desired state carries what a node's Pods need beyond the Pods: the node's Pod CIDR
//! (assigned when it registers) and the ConfigMaps and Secrets its Pods reference, and
//! it follows changes to them, over the embedded broker.

mod loops_support;

use std::time::Duration;

use loops_support::*;
use punnet_api::{ConfigMap, ConfigMapVolumeSource, LocalObjectReference, Secret, Volume};

fn config_map(value: &str) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.name = "web-conf".into();
    c.metadata.namespace = Some("default".into());
    c.data.insert("index.html".into(), value.into());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_cidr_config_maps_and_secrets_reach_the_node_and_follow_changes() {
    let wait = Duration::from_secs(15);
    let port = free_port();
    embedded_broker(port).await;
    let ctl = Controller::start(port);
    let agent = FakeAgent::start("n1", port);

    let first = eventually("n1 gets its Pod CIDR in desired state", wait, || {
        agent
            .desired
            .borrow()
            .clone()
            .filter(|d| d.pod_cidr.is_some())
    })
    .await;
    assert_eq!(first.pod_cidr.as_deref(), Some("10.42.0.0/24"));

    ctl.store.create(config_map("v1")).unwrap();
    let mut d = deployment("web", 1);
    let spec = &mut d.spec.template.spec;
    spec.volumes.push(Volume {
        name: "conf".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: "web-conf".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    spec.image_pull_secrets.push(LocalObjectReference {
        name: "regcred".into(),
    });
    ctl.store.create(d).unwrap();
    let with_pod = eventually("the Pod and its ConfigMap", wait, || {
        agent.desired_with(1).filter(|d| !d.config_maps.is_empty())
    })
    .await;
    assert_eq!(with_pod.config_maps[0].data["index.html"], "v1");
    assert!(with_pod.secrets.is_empty(), "regcred does not exist yet");

    // The missing Secret appears; the ConfigMap changes: both reach the node.
    let mut secret = Secret::default();
    secret.metadata.name = "regcred".into();
    secret.metadata.namespace = Some("default".into());
    secret.string_data.insert("token".into(), "t".into());
    secret.fold_string_data();
    ctl.store.create(secret).unwrap();
    ctl.store
        .modify::<ConfigMap>(Some("default"), "web-conf", |c| {
            c.data.insert("index.html".into(), "v2".into());
        })
        .unwrap();
    let updated = eventually("the new ConfigMap data and the Secret", wait, || {
        agent
            .desired_with(1)
            .filter(|d| d.secrets.len() == 1 && d.config_maps[0].data["index.html"] == "v2")
    })
    .await;
    assert!(updated.generation > with_pod.generation);
    ctl.stop().await;
}
