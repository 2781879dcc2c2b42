//! The checks of the punnet-api fuzz targets, one function per target, each taking the
//! raw input bytes. Besides "never panics, never hangs", each asserts a property a
//! receiver relies on: what a decoder accepts encodes and decodes back to the same
//! value, and what arrives over the wire or through the API can be stored as JSON and
//! read back (the controller keeps its objects as JSON in sled).
//!
//! This file is compiled twice: as a module of the fuzz crate (nightly, libFuzzer) and,
//! through `#[path]`, by api/tests/fuzz_corpus.rs on stable. So it uses only
//! `punnet_api` and `serde_json`, never `crate::`.

use std::collections::BTreeMap;
use std::fmt::Debug;

use punnet_api::manifest;
use punnet_api::object::Object;
use punnet_api::quantity;
use punnet_api::selector::Selector;
use punnet_api::topics::Topics;
use punnet_api::validate;
use punnet_api::wire::{
    self, DesiredState, Envelope, LogChunk, LogRequest, Message, NodeStatusReport, PROTOCOL_VERSION,
};

/// Every target by name, as the corpus directories are named (fuzz/corpus/<name>).
/// A target's check: panics on a finding, returns on anything else.
pub type Check = fn(&[u8]);

pub const TARGETS: &[(&str, Check)] = &[
    ("wire_envelope", wire_envelope),
    ("wire_desired", wire_desired),
    ("wire_status", wire_status),
    ("wire_log_request", wire_log_request),
    ("wire_log_chunk", wire_log_chunk),
    ("manifest", manifest),
    ("topics", topics),
    ("quantity", quantity),
    ("selector", selector),
];

/// The envelope alone: version check first, then the whole envelope.
pub fn wire_envelope(data: &[u8]) {
    if let Ok(env) = wire::open(data) {
        let again = wire::open(&wire::encode_envelope(&env))
            .expect("a re-encoded envelope must open again");
        assert_eq!(again, env);
    }
}

pub fn wire_desired(data: &[u8]) {
    message::<DesiredState>(data);
}

pub fn wire_status(data: &[u8]) {
    message::<NodeStatusReport>(data);
}

pub fn wire_log_request(data: &[u8]) {
    message::<LogRequest>(data);
}

pub fn wire_log_chunk(data: &[u8]) {
    message::<LogChunk>(data);
}

/// One message kind, two ways: the input as a whole message off the topic (envelope and
/// payload), and the input as the payload of a valid envelope, so that most mutations
/// reach the message decoder instead of failing the version check.
fn message<M: Message + PartialEq + Debug>(data: &[u8]) {
    if let Ok(m) = wire::decode::<M>(data) {
        accepted(&m);
    }
    let env = Envelope {
        version: PROTOCOL_VERSION,
        kind: M::KIND,
        payload: data.to_vec(),
        signature: Vec::new(),
    };
    if let Ok(m) = wire::payload::<M>(&env) {
        accepted(&m);
    }
}

/// What a receiver does with a decoded message: re-encode it (the agent keeps its last
/// desired state on disk in the wire encoding) and store it as JSON (the controller
/// writes reported Pod and node status to sled as JSON).
fn accepted<M: Message + PartialEq + Debug>(m: &M) {
    let back = wire::decode::<M>(&wire::encode(m)).expect("a re-encoded message must decode");
    assert_eq!(&back, m);
    let json = serde_json::to_vec(m).expect("a decoded message must serialize as JSON");
    if let Err(e) = serde_json::from_slice::<M>(&json) {
        panic!("a decoded message must read back from JSON: {e}");
    }
}

/// `punnet apply -f` and the REST API: YAML (multi-document) or JSON, then validation,
/// then what the store does with an object (JSON out, decode again).
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(objects) = manifest::parse(text) else {
        return;
    };
    for obj in &objects {
        // Only valid objects reach the store; an invalid one is refused with its errors.
        if validate::validate(obj).is_err() {
            continue;
        }
        match manifest::parse_value(obj.to_json()) {
            Ok(o) => {
                assert!(
                    validate::validate(&o).is_ok(),
                    "{}: valid, but not after a JSON round trip",
                    obj.describe()
                );
                derived(&o);
            }
            Err(e) => panic!(
                "{}: valid, but its JSON does not parse: {e}",
                obj.describe()
            ),
        }
    }
}

/// The numbers controllers compute from a valid object must not overflow.
fn derived(obj: &Object) {
    match obj {
        Object::Deployment(d) => {
            let (surge, unavailable) = d.spec.rolling_params();
            for total in [0, 1, 3, d.spec.replicas(), i32::MAX] {
                let _ = punnet_api::deployment::scaled_value(&surge, total, true);
                let _ = punnet_api::deployment::scaled_value(&unavailable, total, false);
            }
        }
        Object::DaemonSet(d) => {
            for desired in [0, 1, 3, 5000] {
                assert!(d.spec.max_unavailable(desired) >= 1);
            }
        }
        _ => {}
    }
}

/// Topic names and the node a topic is about. The first line is the prefix, the rest a
/// topic; for a name without MQTT separators or wildcards (what the agent accepts as a
/// node name) every per-node topic maps back to that node.
pub fn topics(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (prefix, rest) = text.split_once('\n').unwrap_or(("punnet/v1", text));
    let t = Topics::new(prefix);
    let _ = t.node_of(rest);
    if !rest.is_empty() && !rest.contains(['/', '+', '#']) {
        for topic in [
            t.desired(rest),
            t.status(rest),
            t.online(rest),
            t.log_request(rest),
            t.log_reply(rest, "1"),
        ] {
            assert_eq!(t.node_of(&topic), Some(rest), "topic {topic:?}");
        }
    }
}

/// CPU and memory quantities; what is shown for a parsed value parses again.
pub fn quantity(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(bytes) = quantity::parse_bytes(text) {
        let shown = quantity::format_bytes(bytes);
        assert!(quantity::parse_bytes(&shown).is_ok(), "{shown:?}");
    }
    if let Ok(millis) = quantity::parse_cpu_millis(text) {
        let shown = quantity::format_cpu_millis(millis);
        assert!(quantity::parse_cpu_millis(&shown).is_ok(), "{shown:?}");
    }
}

/// `-l` / `?labelSelector=`: the first line is the selector, the rest `k=v` lines of labels.
pub fn selector(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (sel, labels) = text.split_once('\n').unwrap_or((text, ""));
    let labels: BTreeMap<String, String> = labels
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Ok(s) = Selector::parse(sel) {
        let _ = s.matches(&labels);
    }
}
