//! The gate's pure half: cuts the client's byte stream into MQTT packets and says, for
//! each, whether it may reach the broker. Only CONNECT, PUBLISH and SUBSCRIBE are
//! decoded (with rumqttc's codecs); every other packet passes as it came.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes;

use crate::acl::Grants;

/// The MQTT version a listener speaks (rumqttd serves one per port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V4,
    V5,
}

/// A CONNECT, as far as the gate needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub client_id: String,
    pub username: String,
    pub password: String,
    pub will_topic: Option<String>,
}

/// What to do with one packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The first packet: decide who this is before anything reaches the broker.
    Connect(Login),
    Forward,
    /// Close the connection; the reason goes to the log.
    Refuse(String),
}

/// The next whole packet at the front of `buf`, removed from it; `None` until all of it
/// has arrived.
pub fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, String> {
    match mqttbytes::check(buf.iter(), max) {
        Ok(header) => Ok(Some(buf.split_to(header.frame_length()).freeze())),
        Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
        Err(e) => Err(format!("malformed MQTT packet: {e:?}")),
    }
}

/// Reads one connection's packets in order.
pub struct Inspector {
    version: Version,
    max: usize,
    grants: Option<Grants>,
    /// MQTT 5 topic aliases the client set, so an aliased PUBLISH is checked too.
    aliases: HashMap<u16, String>,
}

impl Inspector {
    pub fn new(version: Version, max: usize) -> Inspector {
        Inspector {
            version,
            max,
            grants: None,
            aliases: HashMap::new(),
        }
    }

    /// What this login may do, once the CONNECT was accepted.
    pub fn admit(&mut self, grants: Grants) {
        self.grants = Some(grants);
    }

    pub fn inspect(&mut self, frame: &Bytes) -> Step {
        let kind = frame.first().map(|b| b >> 4).unwrap_or(0);
        if self.grants.is_none() {
            if kind != CONNECT {
                return Step::Refuse(format!("packet type {kind} before CONNECT"));
            }
            return match self.decode(frame) {
                Ok(Decoded::Connect(login)) => Step::Connect(login),
                Ok(_) => Step::Refuse("malformed CONNECT".into()),
                Err(e) => Step::Refuse(format!("malformed CONNECT: {e}")),
            };
        }
        if !matches!(kind, CONNECT | PUBLISH | SUBSCRIBE) {
            return Step::Forward;
        }
        let decoded = self.decode(frame);
        let (Some(grants), aliases) = (&self.grants, &mut self.aliases) else {
            return Step::Refuse("not admitted".into());
        };
        let verdict = match decoded {
            Err(e) => Err(format!("malformed packet: {e}")),
            Ok(Decoded::Connect(_)) => Err("a second CONNECT".to_string()),
            Ok(Decoded::Publish { topic, alias }) => {
                resolve_alias(aliases, topic, alias).and_then(|t| match grants.may_publish(&t) {
                    true => Ok(()),
                    false => Err(format!("may not publish to {t}")),
                })
            }
            Ok(Decoded::Subscribe(filters)) => {
                match filters.iter().find(|f| !grants.may_subscribe(f)) {
                    Some(f) => Err(format!("may not subscribe to {f}")),
                    None => Ok(()),
                }
            }
        };
        match verdict {
            Ok(()) => Step::Forward,
            Err(why) => Step::Refuse(why),
        }
    }

    /// Decodes a CONNECT, PUBLISH or SUBSCRIBE with rumqttc's codec of the version.
    fn decode(&self, frame: &Bytes) -> Result<Decoded, String> {
        match self.version {
            Version::V4 => decode_v4(frame, self.max).map_err(|e| format!("{e:?}")),
            Version::V5 => decode_v5(frame, self.max).map_err(|e| format!("{e:?}")),
        }
    }
}

/// The topic of an MQTT 5 PUBLISH, through the aliases the client set (remembered).
fn resolve_alias(
    aliases: &mut HashMap<u16, String>,
    topic: String,
    alias: Option<u16>,
) -> Result<String, String> {
    match (topic.is_empty(), alias) {
        (false, Some(a)) => {
            aliases.insert(a, topic.clone());
            Ok(topic)
        }
        (false, None) => Ok(topic),
        (true, Some(a)) => aliases
            .get(&a)
            .cloned()
            .ok_or_else(|| format!("PUBLISH with unknown topic alias {a}")),
        (true, None) => Err("PUBLISH without a topic".into()),
    }
}

const CONNECT: u8 = 1;
const PUBLISH: u8 = 3;
const SUBSCRIBE: u8 = 8;

enum Decoded {
    Connect(Login),
    Publish { topic: String, alias: Option<u16> },
    Subscribe(Vec<String>),
}

fn decode_v4(frame: &Bytes, max: usize) -> Result<Decoded, mqttbytes::Error> {
    use rumqttc::mqttbytes::v4::{Connect, Publish, Subscribe};
    let header = mqttbytes::check(frame.iter(), max)?;
    let frame = frame.clone();
    Ok(match frame[0] >> 4 {
        CONNECT => {
            let c = Connect::read(header, frame)?;
            let (username, password) = c
                .login
                .map(|l| (l.username, l.password))
                .unwrap_or_default();
            Decoded::Connect(Login {
                client_id: c.client_id,
                username,
                password,
                will_topic: c.last_will.map(|w| w.topic),
            })
        }
        PUBLISH => Decoded::Publish {
            topic: Publish::read(header, frame)?.topic,
            alias: None,
        },
        _ => Decoded::Subscribe(
            Subscribe::read(header, frame)?
                .filters
                .into_iter()
                .map(|f| f.path)
                .collect(),
        ),
    })
}

fn decode_v5(frame: &Bytes, max: usize) -> Result<Decoded, String> {
    use rumqttc::v5::mqttbytes::v5::{check, Connect, Publish, Subscribe};
    let e = |e: rumqttc::v5::mqttbytes::Error| format!("{e:?}");
    let header = check(frame.iter(), Some(max as u32)).map_err(e)?;
    let frame = frame.clone();
    Ok(match frame[0] >> 4 {
        CONNECT => {
            let (c, will, login) = Connect::read(header, frame).map_err(e)?;
            let (username, password) = login.map(|l| (l.username, l.password)).unwrap_or_default();
            Decoded::Connect(Login {
                client_id: c.client_id,
                username,
                password,
                will_topic: will.map(|w| utf8(w.topic)).transpose()?,
            })
        }
        PUBLISH => {
            let p = Publish::read(header, frame).map_err(e)?;
            Decoded::Publish {
                topic: utf8(p.topic)?,
                alias: p.properties.and_then(|props| props.topic_alias),
            }
        }
        _ => Decoded::Subscribe(
            Subscribe::read(header, frame)
                .map_err(e)?
                .filters
                .into_iter()
                .map(|f| f.path)
                .collect(),
        ),
    })
}

fn utf8(bytes: Bytes) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "a topic that is not UTF-8".to_string())
}

/// The CONNACK that refuses a login as "not authorized", in the listener's version.
pub fn refusal_connack(version: Version) -> &'static [u8] {
    match version {
        // Return code 5: not authorized.
        Version::V4 => &[0x20, 0x02, 0x00, 0x05],
        // Reason 0x87: not authorized; no properties.
        Version::V5 => &[0x20, 0x03, 0x00, 0x87, 0x00],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Principal;
    use crate::tokens::Role;

    const MAX: usize = 1 << 20;

    /// Encodes `packet` with packet id 1 where it has one (0 is invalid on the wire).
    fn v4(mut packet: rumqttc::Packet) -> Bytes {
        match &mut packet {
            rumqttc::Packet::Publish(p) => p.pkid = 1,
            rumqttc::Packet::Subscribe(s) => s.pkid = 1,
            _ => {}
        }
        let mut out = BytesMut::new();
        packet.write(&mut out, MAX).unwrap();
        out.freeze()
    }

    fn v5(mut packet: rumqttc::v5::mqttbytes::v5::Packet) -> Bytes {
        use rumqttc::v5::mqttbytes::v5::Packet;
        match &mut packet {
            Packet::Publish(p) => p.pkid = 1,
            Packet::Subscribe(s) => s.pkid = 1,
            _ => {}
        }
        let mut out = BytesMut::new();
        packet.write(&mut out, None).unwrap();
        out.freeze()
    }

    fn node_grants() -> Grants {
        Grants::for_login(
            &Principal::Node("pi-1".into()),
            &crate::acl::Scope::new("punnet/v1", None),
            "punnet-agent-pi-1",
        )
    }

    #[test]
    fn frames_are_cut_whole_and_only_when_complete() {
        let publish = v4(rumqttc::Packet::Publish(rumqttc::Publish::new(
            "a/b",
            rumqttc::QoS::AtLeastOnce,
            vec![7; 300],
        )));
        let mut buf = BytesMut::from(&publish[..100]);
        assert_eq!(next_frame(&mut buf, MAX), Ok(None));
        buf.extend_from_slice(&publish[100..]);
        buf.extend_from_slice(&[0xc0, 0x00]); // PINGREQ behind it
        assert_eq!(next_frame(&mut buf, MAX).unwrap().unwrap(), publish);
        assert_eq!(
            &next_frame(&mut buf, MAX).unwrap().unwrap()[..],
            &[0xc0, 0x00]
        );
        assert!(buf.is_empty());
        let mut huge = BytesMut::from(&publish[..]);
        assert!(next_frame(&mut huge, 100).is_err(), "bigger than the limit");
    }

    #[test]
    fn the_first_packet_must_be_a_connect_and_names_the_login() {
        let mut i = Inspector::new(Version::V4, MAX);
        assert!(matches!(
            i.inspect(&Bytes::from_static(&[0xc0, 0x00])),
            Step::Refuse(_)
        ));

        let mut connect = rumqttc::Connect::new("punnet-agent-pi-1");
        connect.set_login("pi-1", "pw");
        connect.last_will = Some(rumqttc::LastWill::new(
            "punnet/v1/nodes/pi-1/online",
            "false",
            rumqttc::QoS::AtLeastOnce,
            true,
        ));
        let mut i = Inspector::new(Version::V4, MAX);
        assert_eq!(
            i.inspect(&v4(rumqttc::Packet::Connect(connect))),
            Step::Connect(Login {
                client_id: "punnet-agent-pi-1".into(),
                username: "pi-1".into(),
                password: "pw".into(),
                will_topic: Some("punnet/v1/nodes/pi-1/online".into()),
            })
        );
    }

    #[test]
    fn an_admitted_node_publishes_and_subscribes_only_within_its_topics() {
        let mut i = Inspector::new(Version::V4, MAX);
        i.admit(node_grants());
        let publish = |t: &str| {
            v4(rumqttc::Packet::Publish(rumqttc::Publish::new(
                t,
                rumqttc::QoS::AtLeastOnce,
                "x",
            )))
        };
        let subscribe = |t: &str| {
            let mut s =
                rumqttc::Subscribe::new("punnet/v1/nodes/pi-1/desired", rumqttc::QoS::AtLeastOnce);
            s.add(t.to_string(), rumqttc::QoS::AtLeastOnce);
            v4(rumqttc::Packet::Subscribe(s))
        };
        assert_eq!(
            i.inspect(&publish("punnet/v1/nodes/pi-1/status")),
            Step::Forward
        );
        assert_eq!(
            i.inspect(&subscribe("punnet/v1/nodes/pi-1/logs/request")),
            Step::Forward
        );
        assert_eq!(i.inspect(&Bytes::from_static(&[0xc0, 0x00])), Step::Forward);
        assert_eq!(
            i.inspect(&publish("punnet/v1/nodes/pi-2/status")),
            Step::Refuse("may not publish to punnet/v1/nodes/pi-2/status".into())
        );
        assert_eq!(
            i.inspect(&subscribe("punnet/v1/nodes/+/desired")),
            Step::Refuse("may not subscribe to punnet/v1/nodes/+/desired".into())
        );
        let mut connect = rumqttc::Connect::new("again");
        connect.set_login("pi-1", "pw");
        assert!(matches!(
            i.inspect(&v4(rumqttc::Packet::Connect(connect))),
            Step::Refuse(_)
        ));
    }

    #[test]
    fn mqtt5_topic_aliases_are_followed() {
        use rumqttc::v5::mqttbytes::v5::{Packet, Publish, PublishProperties};
        use rumqttc::v5::mqttbytes::QoS;
        let aliased = |topic: &str, alias: u16| {
            let props = PublishProperties {
                topic_alias: Some(alias),
                ..Default::default()
            };
            v5(Packet::Publish(Publish::new(
                topic,
                QoS::AtLeastOnce,
                "x",
                Some(props),
            )))
        };
        let mut i = Inspector::new(Version::V5, MAX);
        i.admit(node_grants());
        assert_eq!(
            i.inspect(&aliased("punnet/v1/nodes/pi-1/status", 1)),
            Step::Forward
        );
        assert_eq!(
            i.inspect(&aliased("", 1)),
            Step::Forward,
            "alias 1 is its own status"
        );
        assert!(
            matches!(i.inspect(&aliased("", 2)), Step::Refuse(_)),
            "unknown alias"
        );
        assert!(matches!(
            i.inspect(&aliased("punnet/v1/nodes/pi-2/status", 1)),
            Step::Refuse(_)
        ));

        let mut op = Inspector::new(Version::V5, MAX);
        op.admit(Grants::for_login(
            &Principal::Token {
                id: "a".into(),
                role: Role::Operator,
            },
            &crate::acl::Scope::new("punnet/v1", None),
            "tool",
        ));
        let sub = |f: &str| {
            use rumqttc::v5::mqttbytes::v5::{Filter, Subscribe};
            v5(Packet::Subscribe(Subscribe::new(
                Filter::new(f, QoS::AtMostOnce),
                None,
            )))
        };
        assert_eq!(op.inspect(&sub("punnet/v1/status/#")), Step::Forward);
        assert!(matches!(op.inspect(&sub("punnet/v1/#")), Step::Refuse(_)));
    }

    #[test]
    fn garbage_is_refused_not_a_panic() {
        let mut i = Inspector::new(Version::V4, MAX);
        for junk in [&[0x10, 0x02, 0xff, 0xff][..], &[0x10, 0x00], &[0x00, 0x00]] {
            assert!(matches!(
                i.inspect(&Bytes::copy_from_slice(junk)),
                Step::Refuse(_)
            ));
        }
        i.admit(node_grants());
        for junk in [
            &[0x30, 0x02, 0x00, 0x09][..],
            &[0x82, 0x01, 0x00],
            &[0x32, 0x00],
        ] {
            assert!(matches!(
                i.inspect(&Bytes::copy_from_slice(junk)),
                Step::Refuse(_)
            ));
        }
    }
}
