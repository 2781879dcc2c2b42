//! Home Assistant MQTT discovery (opt-in): each board becomes a device with an `online`
//! binary sensor and temperature, CPU, memory and running-Pods sensors; each Deployment
//! a device with a ready-replicas sensor and a button that restarts it through
//! `cmd/restart`. The configs are retained under the discovery prefix; their states are
//! the JSON status topics, read with `value_template`. Pure: builds topics and payloads.

use serde_json::{json, Value};

/// One retained discovery config: its topic and payload.
pub type Config = (String, Value);

/// A name usable in a discovery topic and a `unique_id`: `[a-zA-Z0-9_-]` only.
fn id(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn availability(prefix: &str) -> Value {
    json!([{
        "topic": super::status::controller_topic(prefix),
        "payload_available": "online",
        "payload_not_available": "offline",
    }])
}

/// The configs of one board. `model` is the board model, when the agent reported one.
pub fn node_configs(discovery: &str, prefix: &str, node: &str, model: &str) -> Vec<Config> {
    let object = format!("punnet_node_{}", id(node));
    let state = super::status::node_topic(prefix, node);
    let device = json!({
        "identifiers": [object],
        "name": node,
        "manufacturer": "Punnet",
        "model": if model.is_empty() { "board" } else { model },
    });
    let entity = |component: &str, key: &str, name: &str, template: &str, extra: Value| {
        let mut config = json!({
            "name": name,
            "unique_id": format!("{object}_{key}"),
            "state_topic": state,
            "value_template": template,
            "availability": availability(prefix),
            "device": device,
        });
        if let (Some(c), Value::Object(extra)) = (config.as_object_mut(), extra) {
            c.extend(extra);
        }
        (
            format!("{discovery}/{component}/{object}/{key}/config"),
            config,
        )
    };
    vec![
        entity(
            "binary_sensor",
            "online",
            "Online",
            "{{ 'ON' if value_json.online else 'OFF' }}",
            json!({"device_class": "connectivity"}),
        ),
        entity(
            "sensor",
            "temperature",
            "Temperature",
            "{{ value_json.temperature_celsius }}",
            json!({"device_class": "temperature", "unit_of_measurement": "°C", "state_class": "measurement"}),
        ),
        entity(
            "sensor",
            "cpu",
            "CPU",
            "{{ value_json.cpu_percent }}",
            json!({"unit_of_measurement": "%", "state_class": "measurement", "icon": "mdi:cpu-64-bit"}),
        ),
        entity(
            "sensor",
            "memory",
            "Memory",
            "{{ value_json.memory_percent }}",
            json!({"unit_of_measurement": "%", "state_class": "measurement", "icon": "mdi:memory"}),
        ),
        entity(
            "sensor",
            "pods",
            "Pods running",
            "{{ value_json.pods_running }}",
            json!({"state_class": "measurement", "icon": "mdi:cube-outline"}),
        ),
    ]
}

/// The configs of one Deployment: its ready replicas, and a restart button whose press
/// publishes `{"kind":"Deployment",…,"token":<button token>}` on `cmd/restart`.
pub fn deployment_configs(
    discovery: &str,
    prefix: &str,
    namespace: &str,
    name: &str,
    button_token: &str,
) -> Vec<Config> {
    let object = format!("punnet_deployment_{}_{}", id(namespace), id(name));
    let state = super::status::workload_topic(prefix, "deployments", namespace, name);
    let device = json!({
        "identifiers": [object],
        "name": format!("{namespace}/{name}"),
        "manufacturer": "Punnet",
        "model": "Deployment",
    });
    let press = json!({
        "kind": "Deployment",
        "namespace": namespace,
        "name": name,
        "token": button_token,
    });
    vec![
        (
            format!("{discovery}/sensor/{object}/ready/config"),
            json!({
                "name": "Ready replicas",
                "unique_id": format!("{object}_ready"),
                "state_topic": state,
                "value_template": "{{ value_json.ready }}",
                "json_attributes_topic": state,
                "state_class": "measurement",
                "icon": "mdi:server",
                "availability": availability(prefix),
                "device": device,
            }),
        ),
        (
            format!("{discovery}/button/{object}/restart/config"),
            json!({
                "name": "Restart",
                "unique_id": format!("{object}_restart"),
                "command_topic": format!("{prefix}/cmd/restart"),
                "payload_press": press.to_string(),
                "device_class": "restart",
                "availability": availability(prefix),
                "device": device,
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Home Assistant needs of every discovered entity.
    fn check_common(topic: &str, c: &Value) {
        assert!(
            topic.starts_with("homeassistant/") && topic.ends_with("/config"),
            "{topic}"
        );
        assert_eq!(topic.split('/').count(), 5, "{topic}");
        for key in ["name", "unique_id", "device", "availability"] {
            assert!(c.get(key).is_some(), "{topic}: no {key}");
        }
        assert!(c["device"]["identifiers"][0].is_string());
        assert_eq!(c["availability"][0]["topic"], "punnet/v1/status/controller");
    }

    #[test]
    fn a_board_is_a_device_with_five_entities() {
        let configs = node_configs("homeassistant", "punnet/v1", "pi.kitchen", "Raspberry Pi 4");
        assert_eq!(configs.len(), 5);
        for (topic, c) in &configs {
            check_common(topic, c);
            assert_eq!(c["state_topic"], "punnet/v1/status/nodes/pi.kitchen");
            assert!(c["value_template"]
                .as_str()
                .unwrap()
                .contains("value_json."));
            assert_eq!(c["device"]["model"], "Raspberry Pi 4");
        }
        assert_eq!(
            configs[0].0,
            "homeassistant/binary_sensor/punnet_node_pi_kitchen/online/config"
        );
        assert_eq!(configs[1].1["unit_of_measurement"], "°C");
        let ids: std::collections::BTreeSet<_> = configs
            .iter()
            .map(|(_, c)| c["unique_id"].to_string())
            .collect();
        assert_eq!(ids.len(), 5, "unique ids must differ");
    }

    #[test]
    fn a_deployment_has_a_sensor_and_a_restart_button() {
        let configs = deployment_configs("homeassistant", "punnet/v1", "default", "web", "tok");
        for (topic, c) in &configs {
            check_common(topic, c);
        }
        let button = &configs[1].1;
        assert_eq!(button["command_topic"], "punnet/v1/cmd/restart");
        let press: Value = serde_json::from_str(button["payload_press"].as_str().unwrap()).unwrap();
        assert_eq!(press["kind"], "Deployment");
        assert_eq!(press["name"], "web");
        assert_eq!(press["token"], "tok");
        let (env, cmd) = crate::mqttapi::command::parse(
            "restart",
            button["payload_press"].as_str().unwrap().as_bytes(),
            None,
        );
        assert_eq!(env.token.as_deref(), Some("tok"));
        assert!(cmd.is_ok(), "the button's payload is a valid command");
    }
}
