//! The store's own tests: writes, revisions and watch events, reopening, Secrets
//! sealed at rest and their migration, volatile changes.

use super::*;

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

#[test]
fn create_get_list_update_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut rx = store.subscribe();
    // Revision 1 is the `default` Namespace, made on first open.
    let a = store.create(pod("a")).unwrap();
    assert_eq!(a.metadata.resource_version.as_deref(), Some("2"));
    assert!(a.metadata.uid.is_some());
    assert!(matches!(
        store.create(pod("a")),
        Err(StoreError::AlreadyExists { .. })
    ));
    store.create(pod("b")).unwrap();
    let (list, rev) = store.list::<Pod>(Some("default")).unwrap();
    assert_eq!((list.len(), rev), (2, 3));
    assert!(store.list::<Pod>(Some("other")).unwrap().0.is_empty());

    // Stale resourceVersion is a conflict; none means "last writer wins".
    let mut stale = a.clone();
    stale.spec.containers[0].image = "other".into();
    store.update(stale.clone()).unwrap();
    let err = store.update(stale).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");

    let got: Pod = store.get(Some("default"), "a").unwrap().unwrap();
    assert_eq!(got.metadata.generation, Some(2));
    assert_eq!(got.metadata.uid, a.metadata.uid);

    // No-op update keeps the revision.
    let same = store.update(got.clone()).unwrap();
    assert_eq!(
        same.metadata.resource_version,
        got.metadata.resource_version
    );

    let gone: Option<Pod> = store.delete(Some("default"), "a", None).unwrap();
    assert!(gone.is_some());
    assert!(store.get::<Pod>(Some("default"), "a").unwrap().is_none());
    assert!(store
        .delete::<Pod>(Some("default"), "a", None)
        .unwrap()
        .is_none());

    let kinds: Vec<(u64, Change)> = std::iter::from_fn(|| rx.try_recv().ok())
        .map(|e| (e.revision, e.change))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (2, Change::Added),
            (3, Change::Added),
            (4, Change::Modified),
            (5, Change::Deleted)
        ]
    );
}

#[test]
fn revision_and_objects_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.create(pod("a")).unwrap();
        store.delete::<Pod>(Some("default"), "a", None).unwrap();
        store.create(pod("b")).unwrap();
        store.db.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.revision(), 4);
    assert!(store.get::<Pod>(Some("default"), "b").unwrap().is_some());
    let c = store.create(pod("c")).unwrap();
    assert_eq!(c.metadata.resource_version.as_deref(), Some("5"));
}

#[test]
fn modify_and_uid_guarded_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = store.create(pod("a")).unwrap();
    let m = store
        .modify::<Pod>(Some("default"), "a", |p| {
            p.status.phase = Some("Running".into())
        })
        .unwrap()
        .unwrap();
    assert_eq!(m.status.phase.as_deref(), Some("Running"));
    assert_eq!(
        m.metadata.generation,
        Some(1),
        "status changes keep the generation"
    );
    assert!(store
        .delete::<Pod>(Some("default"), "a", Some("other-uid"))
        .unwrap()
        .is_none());
    assert!(store
        .delete::<Pod>(Some("default"), "a", a.metadata.uid.as_deref())
        .unwrap()
        .is_some());
}

fn secret(name: &str, value: &str) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = name.into();
    s.metadata.namespace = Some("default".into());
    s.string_data.insert("password".into(), value.into());
    s.fold_string_data();
    s
}

/// Whether any raw value in sled's secrets tree holds `needle`.
fn raw_secrets_contain(db: &sled::Db, needle: &[u8]) -> bool {
    db.open_tree(Secret::PLURAL)
        .unwrap()
        .iter()
        .values()
        .any(|v| v.unwrap().windows(needle.len()).any(|w| w == needle))
}

#[test]
fn secrets_are_encrypted_in_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("secrets.key");
    let db_dir = dir.path().join("db");
    let store = Store::open_with_key_file(&db_dir, &key_file).unwrap();
    store.create(secret("db", "hunter2-very-secret")).unwrap();
    let got: Secret = store.get(Some("default"), "db").unwrap().unwrap();
    assert_eq!(got.entries()["password"], b"hunter2-very-secret");
    let (all, _) = store.list::<Secret>(None).unwrap();
    assert_eq!(all.len(), 1);
    // Neither the value nor its base64 (what `data` holds) is in the tree.
    assert!(!raw_secrets_contain(&store.db, b"hunter2-very-secret"));
    assert!(!raw_secrets_contain(
        &store.db,
        b"aHVudGVyMi12ZXJ5LXNlY3JldA"
    ));
    assert!(!raw_secrets_contain(&store.db, b"password"));
    drop(store);

    // A wrong or missing key file: a clear error naming it, and nothing lost.
    let wrong = dir.path().join("wrong.key");
    crypto::SecretKey::create(&wrong).unwrap();
    let err = Store::open_with_key_file(&db_dir, &wrong)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("wrong.key"), "{err}");
    let missing = dir.path().join("missing.key");
    let err = Store::open_with_key_file(&db_dir, &missing)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("missing.key") && err.contains("is missing"),
        "{err}"
    );
    assert!(!missing.exists());
    let store = Store::open_with_key_file(&db_dir, &key_file).unwrap();
    let got: Secret = store.get(Some("default"), "db").unwrap().unwrap();
    assert_eq!(got.entries()["password"], b"hunter2-very-secret");
}

#[test]
fn plaintext_secrets_are_encrypted_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let db_dir = dir.path().join("db");
    {
        // A database as the controller wrote it before encryption at rest.
        let db = sled::open(&db_dir).unwrap();
        let old = secret("legacy", "plain-old-value");
        db.open_tree(Secret::PLURAL)
            .unwrap()
            .insert("default/legacy", serde_json::to_vec(&old).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let store = Store::open_with_key_file(&db_dir, &dir.path().join("k")).unwrap();
    assert!(!raw_secrets_contain(&store.db, b"cGxhaW4tb2xkLXZhbHVl"));
    let got: Secret = store.get(Some("default"), "legacy").unwrap().unwrap();
    assert_eq!(got.entries()["password"], b"plain-old-value");
}

#[test]
fn volatile_changes_are_read_at_once_and_written_at_a_bounded_rate() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut node = Node::default();
    node.metadata.name = "pi".into();
    let node = store.create(node).unwrap();
    let rev = store.revision();
    let mut rx = store.subscribe();
    let set = |n: &mut Node, v: &str| {
        n.status.capacity.insert("cpu".into(), v.into());
    };
    store
        .modify_volatile::<Node>(None, "pi", |n| set(n, "4"))
        .unwrap()
        .unwrap();
    let seen: Node = store.get(None, "pi").unwrap().unwrap();
    assert_eq!(seen.status.capacity["cpu"], "4");
    assert_eq!(
        seen.metadata.resource_version,
        node.metadata.resource_version
    );
    assert_eq!(
        store.list::<Node>(None).unwrap().0[0].status.capacity["cpu"],
        "4"
    );
    assert_eq!((store.revision(), store.volatile_pending()), (rev, 1));
    assert!(rx.try_recv().is_err(), "no event until written");

    // Once the interval has passed, the next volatile change writes them all.
    store.set_volatile_interval(Duration::ZERO);
    store
        .modify_volatile::<Node>(None, "pi", |n| set(n, "8"))
        .unwrap();
    assert_eq!((store.revision(), store.volatile_pending()), (rev + 1, 0));
    let ev = rx.try_recv().unwrap();
    assert_eq!((ev.revision, ev.change), (rev + 1, Change::Modified));
    let Object::Node(n) = (*ev.object).clone() else {
        panic!("a Node event")
    };
    assert_eq!(n.status.capacity["cpu"], "8");
    let on_disk: Node =
        serde_json::from_slice(&store.tree::<Node>().get("pi").unwrap().unwrap()).unwrap();
    assert_eq!(on_disk.status.capacity["cpu"], "8");

    // An ordinary write builds on a pending volatile change and writes it too.
    store.set_volatile_interval(Duration::from_secs(3600));
    store
        .modify_volatile::<Node>(None, "pi", |n| set(n, "16"))
        .unwrap();
    store
        .modify::<Node>(None, "pi", |n| {
            n.metadata.labels.insert("room".into(), "attic".into());
        })
        .unwrap();
    assert_eq!(store.volatile_pending(), 0);
    let n: Node = store.get(None, "pi").unwrap().unwrap();
    assert_eq!(
        (
            n.status.capacity["cpu"].as_str(),
            n.metadata.labels["room"].as_str()
        ),
        ("16", "attic")
    );
    // A deleted object's pending change is dropped, not resurrected.
    store
        .modify_volatile::<Node>(None, "pi", |n| set(n, "32"))
        .unwrap();
    store.delete::<Node>(None, "pi", None).unwrap();
    assert_eq!(store.volatile_pending(), 0);
    assert!(store.get::<Node>(None, "pi").unwrap().is_none());
}

#[test]
fn visit_where_decodes_only_what_the_view_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for (name, node) in [("a", Some("pi-1")), ("b", None), ("c", Some("pi-2"))] {
        let mut p = pod(name);
        p.spec.node_name = node.map(Into::into);
        store.create(p).unwrap();
    }
    let mut kept = Vec::new();
    store
        .visit_where::<Pod, peek::PodView>(
            None,
            |v| v.node() == Some("pi-2"),
            |p| kept.push(p.metadata.name),
        )
        .unwrap();
    assert_eq!(kept, ["c"]);

    let mut nodes = Vec::new();
    store
        .peek::<Pod, peek::PodView>(Some("default"), |v| nodes.push(v.node().map(String::from)))
        .unwrap();
    assert_eq!(nodes, [Some("pi-1".into()), None, Some("pi-2".into())]);
}
