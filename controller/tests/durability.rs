//! Every acknowledged write survives `kill -9`: the real controller binary is hammered
//! with applies and deletes of ConfigMaps and (encrypted) Secrets from several clients
//! at once and killed with SIGKILL at random moments, a few dozen times. After each
//! restart every object must be as its last acknowledged operation left it — no
//! acknowledged write lost, no acknowledged delete resurrected — except that the one
//! operation each client had in flight when the controller died may have gone either
//! way. The revision never goes back below an acknowledged resourceVersion.

mod binary_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use binary_support::{Api, Controller};
use rand::Rng;
use serde_json::{json, Value};

const CLIENTS: usize = 4;
const OBJECTS_PER_CLIENT: usize = 6;
const KILLS: usize = 30;

/// What a client knows about one object: its state after the last acknowledged
/// operation (`Some(value)` or deleted), and the operation it had in flight when the
/// controller died, if any.
#[derive(Debug, Clone, Default)]
struct Model {
    acked: Option<String>,
    in_flight: Option<Option<String>>,
}

fn is_secret(i: usize) -> bool {
    i % 2 == 1
}

fn name(i: usize) -> String {
    format!("obj-{i}")
}

fn path(i: usize) -> String {
    let plural = if is_secret(i) {
        "secrets"
    } else {
        "configmaps"
    };
    format!("/api/v1/namespaces/default/{plural}/{}", name(i))
}

fn object(i: usize, value: &str) -> Value {
    if is_secret(i) {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name(i)},
               "stringData": {"v": value}})
    } else {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name(i)},
               "data": {"v": value}})
    }
}

/// The stored value of every object, as the API lists them.
fn observed(api: &Api) -> (Vec<Option<String>>, u64) {
    let mut out = vec![None; CLIENTS * OBJECTS_PER_CLIENT];
    let mut revision = 0;
    for plural in ["configmaps", "secrets"] {
        let (code, list) = api.get(&format!("/api/v1/namespaces/default/{plural}"));
        assert_eq!(code, 200, "{list}");
        revision = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        for item in list["items"].as_array().into_iter().flatten() {
            let n = item["metadata"]["name"].as_str().unwrap();
            let Some(i) = n.strip_prefix("obj-").and_then(|i| i.parse::<usize>().ok()) else {
                continue;
            };
            let v = item["data"]["v"].as_str().unwrap().to_string();
            out[i] = Some(if is_secret(i) {
                String::from_utf8(base64::engine::general_purpose::STANDARD.decode(v).unwrap())
                    .unwrap()
            } else {
                v
            });
        }
    }
    (out, revision)
}

/// One client: applies and deletes its own objects until the controller stops
/// answering (or `stop`), keeping its models up to date. Returns the highest
/// resourceVersion acknowledged and how many operations were acknowledged.
fn hammer(
    api: Api,
    client: usize,
    models: &mut [Model],
    round: usize,
    stop: &AtomicBool,
) -> (u64, usize) {
    let mut rng = rand::thread_rng();
    let mut max_rv = 0;
    let mut acked = 0;
    for seq in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let k = rng.gen_range(0..OBJECTS_PER_CLIENT);
        let i = client * OBJECTS_PER_CLIENT + k;
        let value = format!("c{client}-r{round}-s{seq}");
        let delete = rng.gen_bool(0.3);
        let target = (!delete).then(|| value.clone());
        let result = if delete {
            api.send(reqwest::Method::DELETE, &path(i), None, None)
        } else {
            api.apply(&path(i), &object(i, &value))
        };
        match result {
            Ok((code, body)) => {
                let ok = match (delete, code) {
                    (true, 200 | 404) | (false, 200 | 201) => true,
                    _ => panic!(
                        "{} {}: unexpected {code} {body}",
                        if delete { "delete" } else { "apply" },
                        name(i)
                    ),
                };
                if ok {
                    models[k].acked = target;
                    acked += 1;
                    if let Some(rv) = body["metadata"]["resourceVersion"].as_str() {
                        max_rv = max_rv.max(rv.parse().unwrap());
                    }
                }
            }
            Err(_) => {
                // No answer: the controller died with this operation in flight.
                models[k].in_flight = Some(target);
                break;
            }
        }
    }
    (max_rv, acked)
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut models: Vec<Vec<Model>> = vec![vec![Model::default(); OBJECTS_PER_CLIENT]; CLIENTS];
    let mut max_acked_rv = 0;
    let mut total_acked = 0;
    let mut either_way = 0;
    let mut rng = rand::thread_rng();
    for round in 0..=KILLS {
        let mut controller = Controller::start(dir.path(), &[]);
        let (seen, revision) = observed(&controller.api);
        assert!(
            revision >= max_acked_rv,
            "round {round}: revision {revision} is below acknowledged resourceVersion {max_acked_rv}"
        );
        for (c, client) in models.iter_mut().enumerate() {
            for (k, m) in client.iter_mut().enumerate() {
                let i = c * OBJECTS_PER_CLIENT + k;
                let now = &seen[i];
                match m.in_flight.take() {
                    Some(flight) if *now == flight && *now != m.acked => either_way += 1,
                    Some(flight) => assert!(
                        *now == m.acked,
                        "round {round}: {} is {now:?}: neither the acknowledged {:?} nor the in-flight {flight:?}",
                        name(i),
                        m.acked
                    ),
                    None => assert!(
                        *now == m.acked,
                        "round {round}: {} is {now:?} but the last acknowledged operation left {:?}",
                        name(i),
                        m.acked
                    ),
                }
                m.acked = now.clone();
            }
        }
        if round == KILLS {
            break;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let results = std::thread::scope(|s| {
            let handles: Vec<_> = models
                .iter_mut()
                .enumerate()
                .map(|(c, client)| {
                    let api = controller.api.clone();
                    let stop = stop.clone();
                    s.spawn(move || hammer(api, c, client, round, &stop))
                })
                .collect();
            std::thread::sleep(Duration::from_millis(rng.gen_range(30..400)));
            controller.kill9();
            stop.store(true, Ordering::Relaxed);
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        for (rv, acked) in results {
            max_acked_rv = max_acked_rv.max(rv);
            total_acked += acked;
        }
    }
    eprintln!(
        "{KILLS} kills, {total_acked} acknowledged operations, {either_way} in-flight operations found applied"
    );
    assert!(
        total_acked > KILLS * CLIENTS,
        "the clients got work done between kills"
    );
}
