//! The rollout texts and decisions as plain values.

use super::*;
use punnet_api::{Container, DeploymentCondition};

fn deployment(image: &str) -> Deployment {
    let mut d = Deployment::default();
    d.metadata.name = "web".into();
    d.metadata.uid = Some("u1".into());
    d.metadata.generation = Some(2);
    d.status.observed_generation = Some(2);
    d.spec.replicas = Some(3);
    d.spec
        .template
        .metadata
        .labels
        .insert("app".into(), "web".into());
    d.spec.template.spec.containers.push(Container {
        name: "web".into(),
        image: image.into(),
        ..Default::default()
    });
    d
}

fn rs(d: &Deployment, image: &str, hash: &str, rev: i64, replicas: i32) -> ReplicaSet {
    let mut r = ReplicaSet::default();
    r.metadata.name = format!("web-{hash}");
    r.metadata
        .annotations
        .insert(ANNOTATION_REVISION.into(), rev.to_string());
    r.spec.replicas = Some(replicas);
    r.status.replicas = replicas;
    r.spec.template = deployment(image).spec.template;
    r.spec
        .template
        .metadata
        .labels
        .insert(LABEL_POD_TEMPLATE_HASH.into(), hash.into());
    let _ = d;
    r
}

#[test]
fn status_lines_are_kubectls() {
    let mut d = deployment("v2");
    d.status.updated_replicas = 1;
    d.status.replicas = 4;
    assert_eq!(
        status_line(&d).unwrap(),
        (
            "Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated..."
                .to_string(),
            false
        )
    );
    d.status.updated_replicas = 3;
    assert!(status_line(&d)
        .unwrap()
        .0
        .ends_with("1 old replicas are pending termination..."));
    d.status.replicas = 3;
    d.status.available_replicas = 2;
    assert!(status_line(&d)
        .unwrap()
        .0
        .ends_with("2 of 3 updated replicas are available..."));
    d.status.available_replicas = 3;
    assert_eq!(
        status_line(&d).unwrap(),
        (
            "deployment \"web\" successfully rolled out".to_string(),
            true
        )
    );
    d.metadata.generation = Some(3);
    assert_eq!(
        status_line(&d).unwrap().0,
        "Waiting for deployment spec update to be observed..."
    );
    d.status.observed_generation = Some(3);
    d.status.conditions.push(DeploymentCondition {
        type_: "Progressing".into(),
        status: "False".into(),
        reason: Some("ProgressDeadlineExceeded".into()),
        ..Default::default()
    });
    assert_eq!(
        status_line(&d).unwrap_err().to_string(),
        "deployment \"web\" exceeded its progress deadline"
    );
}

#[test]
fn undo_goes_to_the_previous_revision_by_default() {
    let d = deployment("v3");
    let sets = [
        rs(&d, "v1", "aaa", 1, 0),
        rs(&d, "v2", "bbb", 2, 0),
        rs(&d, "v3", "ccc", 3, 3),
    ];
    let Undo::Patch(p) = undo_patch(&d, &sets, 0).unwrap() else {
        panic!("expected a patch")
    };
    assert_eq!(
        p["spec"]["template"]["spec"]["containers"][0]["image"],
        "v2"
    );
    assert!(
        p["spec"]["template"]["metadata"].is_null(),
        "labels unchanged: {p}"
    );
    let Undo::Patch(p) = undo_patch(&d, &sets, 1).unwrap() else {
        panic!("expected a patch")
    };
    assert_eq!(
        p["spec"]["template"]["spec"]["containers"][0]["image"],
        "v1"
    );
    assert_eq!(undo_patch(&d, &sets, 3).unwrap(), Undo::Skip(3));
    assert_eq!(
        undo_patch(&d, &sets, 7).unwrap_err().to_string(),
        "unable to find specified revision 7 in history"
    );
    assert!(undo_patch(&d, &sets[2..], 0).is_err());
}

#[test]
fn merge_diff_removes_what_the_target_lacks() {
    let from = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
    let to = json!({"b": {"c": 2}, "l": [1], "e": "x"});
    assert_eq!(
        merge_diff(&from, &to),
        json!({"a": null, "b": {"d": null}, "l": [1], "e": "x"})
    );
}

#[test]
fn history_and_describe_lines() {
    let mut d = deployment("v2");
    let mut old = rs(&d, "v1", "aaa", 1, 1);
    old.metadata
        .annotations
        .insert(CHANGE_CAUSE.into(), "punnet apply -f web.yaml".into());
    let sets = [old, rs(&d, "v2", "bbb", 2, 3)];
    assert_eq!(
        history(&d, &sets),
        "deployment.apps/web\nREVISION  CHANGE-CAUSE\n1         punnet apply -f web.yaml\n2         <none>\n"
    );
    let detail = revision_detail(&d, &sets, 2).unwrap();
    assert!(
        detail.starts_with("deployment.apps/web with revision #2\nPod Template:\n"),
        "{detail}"
    );
    assert!(detail.contains("    Image:        v2\n"), "{detail}");
    assert_eq!(
        old_and_new(&d, &sets),
        (
            "web-aaa (1/1 replicas created)".to_string(),
            "web-bbb (3/3 replicas created)".to_string()
        )
    );
    assert_eq!(
        strategy_lines(&d),
        (
            "RollingUpdate".to_string(),
            Some("25% max unavailable, 25% max surge".to_string())
        )
    );
    d.spec.strategy.type_ = Some("Recreate".into());
    assert_eq!(strategy_lines(&d), ("Recreate".to_string(), None));
    let table = replica_set_table(&sets, false, false, Utc::now()).render();
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("web-bbb"), "{table}");
    let text = describe_replica_set(&sets[1]);
    assert!(text.contains("Replicas:"), "{text}");
    assert!(text.contains("3 current / 3 desired"), "{text}");
}
