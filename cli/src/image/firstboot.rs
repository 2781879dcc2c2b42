//! The files that make a flashed board join the fleet on its first boot, as text:
//! `punnet-setup.sh` (installs the agent, its config and unit, names the board, queues
//! preloaded images), and the two ways Raspberry Pi OS runs something on first boot,
//! written the way Raspberry Pi Imager writes them: `firstrun.sh` started by
//! `systemd.run=` on the kernel command line (Bookworm-era releases), or cloud-init's
//! `user-data`, `network-config` and `meta-data` (releases from Trixie on). Both end by
//! running setup.sh, so a board comes up the same either way. Pure: no I/O.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;

/// The payload's files sit in the boot partition's top directory, all named
/// `punnet-*`. Not in a directory of their own: fatfs 0.3 writes long-name entries
/// for a new directory's `.` and `..`, which `fsck.vfat` rejects (found by the tests).
pub const PAYLOAD_PREFIX: &str = "punnet-";
pub const SETUP: &str = "punnet-setup.sh";
pub const AGENT_CONFIG: &str = "punnet-agent.yaml";
pub const CA: &str = "punnet-ca.pem";
pub const UNIT: &str = "punnet-agent.service";

/// `punnet-agent-<flavour>` (see `arch::Flavour::name`): setup.sh picks by the name.
pub fn agent_file(flavour: &str) -> String {
    format!("punnet-agent-{flavour}")
}

/// `punnet-preload-<archive>`: copied into the agent's import directory.
pub fn preload_file(archive: &str) -> String {
    format!("punnet-preload-{archive}")
}

/// Whether a boot partition file is part of a payload (an earlier build's, replaced).
pub fn is_payload(name: &str) -> bool {
    name.to_ascii_lowercase().starts_with(PAYLOAD_PREFIX)
}

/// Settings that both first-boot mechanisms share.
#[derive(Debug, Clone)]
pub struct Board {
    /// Where Raspberry Pi OS mounts the boot partition: `/boot/firmware` since
    /// Bookworm, `/boot` before.
    pub boot_mount: String,
    pub hostname_prefix: String,
    pub ssh_key: Option<String>,
    pub wifi: Option<Wifi>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wifi {
    pub ssid: String,
    /// The 64 hex digits of the WPA pre-shared key (see `wpa_psk`): the passphrase
    /// itself never lands on the card, as with Imager.
    pub psk: String,
    /// ISO 3166 country code: the regulatory domain (channels and power allowed).
    pub country: String,
}

/// The WPA-PSK key for a network, as `wpa_passphrase` and Imager compute it:
/// PBKDF2-HMAC-SHA1(passphrase, ssid, 4096 rounds, 32 bytes). A 64-hex-digit
/// `passphrase` is taken as the key itself.
pub fn wpa_psk(ssid: &str, passphrase: &str) -> Result<String, String> {
    if passphrase.len() == 64 && passphrase.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(passphrase.to_ascii_lowercase());
    }
    if !(8..=63).contains(&passphrase.len()) || !passphrase.is_ascii() {
        return Err(format!(
            "--wifi-psk: a WPA passphrase is 8 to 63 ASCII characters (or 64 hex digits), this one has {} bytes",
            passphrase.len()
        ));
    }
    let mut key = [0u8; 32];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA1,
        std::num::NonZeroU32::new(4096).expect("non-zero"),
        ssid.as_bytes(),
        passphrase.as_bytes(),
        &mut key,
    );
    Ok(hex::encode(key))
}

/// Quotes `s` for sh: `'…'` with each `'` written as `'"'"'`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\"'\"'"))
}

/// The agent's config file (`/etc/punnet/agent.yaml` on the board): the keys of
/// punnet-agent's `--config` file. setup.sh appends `name:`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AgentYaml {
    pub broker: String,
    pub token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_plaintext: bool,
}

pub fn agent_yaml(config: &AgentYaml) -> String {
    let body = serde_norway::to_string(config).expect("plain strings serialize");
    format!("# Written by `punnet image build`; setup.sh adds the board's name.\n{body}")
}

/// The systemd unit. `KillMode=process`: containers and their shims outlive the agent
/// (an agent upgrade or crash never stops a Pod), and systemd's default would kill
/// them with it. `Restart=always`: an agent that lost its controller comes back.
pub const AGENT_UNIT: &str = "\
[Unit]
Description=Punnet node agent
Wants=network-online.target
After=network-online.target time-sync.target

[Service]
ExecStart=/usr/local/bin/punnet-agent --config /etc/punnet/agent.yaml
Restart=always
RestartSec=10
KillMode=process
Delegate=yes

[Install]
WantedBy=multi-user.target
";

/// The first-boot installer. Runs as root, once (firstrun.sh or cloud-init), safe to
/// run again by hand: `sudo sh /boot/firmware/punnet-setup.sh`.
pub fn setup_sh(board: &Board) -> String {
    let prefix = sh_quote(&board.hostname_prefix);
    format!(
        r#"#!/bin/sh
# Punnet first-boot setup, written by `punnet image build`: installs the agent, its
# config and systemd unit, names the board and queues the preloaded images. Started
# once by firstrun.sh or cloud-init; safe to run again: sudo sh {boot}/punnet-setup.sh
set -eu
umask 077
SRC="$(cd "$(dirname "$0")" && pwd)"
PREFIX={prefix}
DATA=/var/lib/punnet-agent

# A unique name: the prefix and the board's serial number (device tree, else cpuinfo;
# boards and VMs without one use the machine id).
serial=""
if [ -r /proc/device-tree/serial-number ]; then
    serial=$(tr -d '\000' </proc/device-tree/serial-number)
fi
if [ -z "$serial" ]; then
    serial=$(sed -n 's/^Serial[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -n 1)
fi
if [ -z "$serial" ] && [ -s /etc/machine-id ]; then
    serial=$(cut -c 1-12 /etc/machine-id)
fi
serial=$(printf '%s' "$serial" | tr 'A-Z' 'a-z' | tr -cd 'a-z0-9' | sed 's/^0*//')
if [ -z "$serial" ]; then
    serial=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
fi
name="$PREFIX$serial"
echo "punnet: this board is $name"

# The hostname, as Raspberry Pi Imager sets it.
current=$(tr -d ' \t\n\r' </etc/hostname 2>/dev/null || true)
if [ -x /usr/lib/raspberrypi-sys-mods/imager_custom ]; then
    /usr/lib/raspberrypi-sys-mods/imager_custom set_hostname "$name"
else
    echo "$name" >/etc/hostname
    if grep -q '^127\.0\.1\.1' /etc/hosts; then
        sed -i "s/^127\.0\.1\.1.*/127.0.1.1\t$name/" /etc/hosts
    else
        printf '127.0.1.1\t%s\n' "$name" >>/etc/hosts
    fi
fi
hostname "$name" 2>/dev/null || true

# The agent binary for this CPU: an ARMv6 board (Pi 1, Zero) takes the ARMv6 build,
# every other board the most specific one the image carries.
case "$(uname -m)" in
    armv6*) order="armv6 arm" ;;
    *) order="arm64 armv7 armv6 arm" ;;
esac
bin=""
for flavour in $order; do
    if [ -f "$SRC/punnet-agent-$flavour" ]; then
        bin="$SRC/punnet-agent-$flavour"
        break
    fi
done
if [ -z "$bin" ]; then
    echo "punnet: no agent in $SRC for this $(uname -m) board; rebuild the image with one" >&2
    exit 1
fi
install -D -m 0755 "$bin" /usr/local/bin/punnet-agent.new
mv /usr/local/bin/punnet-agent.new /usr/local/bin/punnet-agent

# Its config (it holds the bootstrap token until the agent has enrolled and removes it:
# root only) and the controller's CA.
install -d -m 0700 /etc/punnet
if [ -f "$SRC/punnet-ca.pem" ]; then
    install -m 0644 "$SRC/punnet-ca.pem" /etc/punnet/ca.pem
fi
{{
    cat "$SRC/punnet-agent.yaml"
    printf 'name: %s\n' "$name"
    # Pods get a network of their own through the CNI plugins; without them
    # (Raspberry Pi OS does not ship containernetworking-plugins) they share the host's.
    if [ ! -x /usr/lib/cni/bridge ] && [ ! -x /opt/cni/bin/bridge ]; then
        echo "punnet: no CNI plugins: Pods will use the host network" >&2
        printf 'pod-network: false\n'
    fi
}} >/etc/punnet/agent.yaml.new
mv /etc/punnet/agent.yaml.new /etc/punnet/agent.yaml

# Preloaded images: the agent imports them from here when it starts, before it
# connects, so nothing already on the card is pulled.
for archive in "$SRC"/punnet-preload-*; do
    if [ -f "$archive" ]; then
        install -d -m 0755 "$DATA" "$DATA/images" "$DATA/images/import"
        cp "$archive" "$DATA/images/import/${{archive##*/punnet-preload-}}"
    fi
done

install -m 0644 "$SRC/punnet-agent.service" /etc/systemd/system/punnet-agent.service
if ! systemctl enable punnet-agent.service 2>/dev/null; then
    install -d -m 0755 /etc/systemd/system/multi-user.target.wants
    ln -sf /etc/systemd/system/punnet-agent.service /etc/systemd/system/multi-user.target.wants/punnet-agent.service
fi
# cloud-init runs this on a booted system: start now. After firstrun.sh the board
# reboots into the agent.
if [ "${{1:-}}" = "--start" ]; then
    systemctl daemon-reload || true
    systemctl --no-block start punnet-agent.service || true
fi

# The token and the binaries are installed: take them off the card (anyone holding
# the card could read the FAT partition).
rm -f "$SRC"/punnet-agent-* "$SRC"/punnet-preload-* "$SRC/punnet-agent.yaml" \
    "$SRC/punnet-ca.pem" "$SRC/punnet-agent.service" "$SRC/punnet-setup.sh"
echo "punnet: agent installed; it enrols with the controller as $name"
"#,
        boot = board.boot_mount,
    )
}

/// `firstrun.sh` for `systemd.run=`: the same steps and wording as Raspberry Pi
/// Imager's (imager_custom where the image has it, the classic files otherwise), then
/// setup.sh, then it removes itself and its kernel arguments; systemd reboots.
pub fn firstrun_sh(board: &Board) -> String {
    let boot = &board.boot_mount;
    let mut s = String::from("#!/bin/bash\n# Written by `punnet image build`, as Raspberry Pi Imager writes it.\n\nset +e\n\n");
    s.push_str("FIRSTUSER=$(getent passwd 1000 | cut -d: -f1)\n");
    s.push_str("FIRSTUSERHOME=$(getent passwd 1000 | cut -d: -f6)\n");
    if let Some(key) = &board.ssh_key {
        let k = sh_quote(key);
        s.push_str(&format!(
            r#"if [ -f /usr/lib/raspberrypi-sys-mods/imager_custom ]; then
   /usr/lib/raspberrypi-sys-mods/imager_custom enable_ssh -k {k}
else
   install -o "$FIRSTUSER" -m 700 -d "$FIRSTUSERHOME/.ssh"
   printf '%s\n' {k} >"$FIRSTUSERHOME/.ssh/authorized_keys"
   chown "$FIRSTUSER:$FIRSTUSER" "$FIRSTUSERHOME/.ssh/authorized_keys"
   chmod 600 "$FIRSTUSERHOME/.ssh/authorized_keys"
   echo 'PasswordAuthentication no' >>/etc/ssh/sshd_config
   systemctl enable ssh
fi
# Images without a user (Bookworm and later) get `pi`, with its password locked: the
# key is the way in. This also skips the first-boot user wizard.
if [ -f /usr/lib/userconf-pi/userconf ] && [ -z "$FIRSTUSER" ]; then
   /usr/lib/userconf-pi/userconf 'pi' '!'
fi
"#
        ));
    }
    if let Some(w) = &board.wifi {
        let (ssid, psk, cc) = (sh_quote(&w.ssid), sh_quote(&w.psk), sh_quote(&w.country));
        let conf_ssid = w.ssid.replace('\\', "\\\\").replace('"', "\\\"");
        // imager_custom writes a NetworkManager connection (Bookworm and later);
        // older images read wpa_supplicant.conf.
        s.push_str(&format!(
            r#"if [ -f /usr/lib/raspberrypi-sys-mods/imager_custom ]; then
   /usr/lib/raspberrypi-sys-mods/imager_custom set_wlan {ssid} {psk} {cc}
else
cat >/etc/wpa_supplicant/wpa_supplicant.conf <<'WPAEOF'
country={country}
ctrl_interface=DIR=/var/run/wpa_supplicant GROUP=netdev
ap_scan=1

update_config=1
network={{
	ssid="{conf_ssid}"
	key_mgmt=WPA-PSK SAE
	psk={hex}
	ieee80211w=1
}}
WPAEOF
   chmod 600 /etc/wpa_supplicant/wpa_supplicant.conf
   rfkill unblock wifi
   for filename in /var/lib/systemd/rfkill/*:wlan ; do
       echo 0 > $filename
   done
fi
"#,
            country = w.country,
            hex = w.psk,
        ));
    }
    s.push_str(&format!(
        r#"if ! /bin/sh {boot}/punnet-setup.sh >>/var/log/punnet-setup.log 2>&1; then
   echo "punnet: first-boot setup failed, see /var/log/punnet-setup.log; run it again with: sudo sh {boot}/punnet-setup.sh" >/dev/console
fi
rm -f {boot}/firstrun.sh
sed -i 's| systemd.run.*||g' {boot}/cmdline.txt
exit 0
"#
    ));
    s
}

/// cloud-init's `user-data`: setup.sh from `runcmd`, the SSH key on user `pi` as
/// Imager writes it.
pub fn user_data(board: &Board) -> String {
    let mut doc = serde_json::Map::new();
    // setup.sh names the board from its serial number; cloud-init must not rename it
    // back on a later boot.
    doc.insert("preserve_hostname".into(), json!(true));
    if let Some(key) = &board.ssh_key {
        doc.insert("enable_ssh".into(), json!(true));
        doc.insert(
            "users".into(),
            json!([{
                "name": "pi",
                "groups": "users,adm,dialout,audio,netdev,video,plugdev,cdrom,games,input,gpio,spi,i2c,render,sudo",
                "shell": "/bin/bash",
                "lock_passwd": true,
                "ssh_authorized_keys": [key],
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
            }]),
        );
    }
    let boot = &board.boot_mount;
    doc.insert(
        "runcmd".into(),
        json!([[
            "sh",
            "-c",
            format!("sh {boot}/punnet-setup.sh --start >>/var/log/punnet-setup.log 2>&1")
        ]]),
    );
    let body = serde_norway::to_string(&doc).expect("JSON values serialize");
    format!("#cloud-config\n# Written by `punnet image build`.\n{body}")
}

/// cloud-init's `network-config` for Wi-Fi (netplan v2, rendered by NetworkManager on
/// Raspberry Pi OS), as Imager writes it.
pub fn network_config(wifi: &Wifi) -> String {
    let doc = json!({
        "network": {
            "version": 2,
            "wifis": {
                "wlan0": {
                    "dhcp4": true,
                    "regulatory-domain": wifi.country,
                    "access-points": { wifi.ssid.clone(): { "password": wifi.psk } },
                    "optional": true,
                }
            }
        }
    });
    let body = serde_norway::to_string(&doc).expect("JSON values serialize");
    format!("# Written by `punnet image build`.\n{body}")
}

/// cloud-init's `meta-data`: a new instance id makes cloud-init run on this card even
/// if the base image was booted before.
pub fn meta_data(instance: &str) -> String {
    format!("instance-id: punnet-{instance}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board() -> Board {
        Board {
            boot_mount: "/boot/firmware".into(),
            hostname_prefix: "pi-".into(),
            ssh_key: Some("ssh-ed25519 AAAAC3Nza it's-me".into()),
            wifi: Some(Wifi {
                ssid: "Home \"5G\"".into(),
                psk: wpa_psk("Home \"5G\"", "correct horse").unwrap(),
                country: "GB".into(),
            }),
        }
    }

    #[test]
    fn wpa_psk_matches_the_ieee_test_vector() {
        // IEEE 802.11i-2004, annex H.4.
        assert_eq!(
            wpa_psk("IEEE", "password").unwrap(),
            "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
        );
        let raw = "AB".repeat(32);
        assert_eq!(wpa_psk("x", &raw).unwrap(), raw.to_lowercase());
        assert!(wpa_psk("x", "short").unwrap_err().contains("8 to 63"));
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(sh_quote("it's"), r#"'it'"'"'s'"#);
    }

    #[test]
    fn firstrun_mirrors_imager_and_runs_setup() {
        let s = firstrun_sh(&board());
        assert!(s.contains("imager_custom enable_ssh -k 'ssh-ed25519 AAAAC3Nza it'\"'\"'s-me'"));
        assert!(s.contains("imager_custom set_wlan 'Home \"5G\"' '"), "{s}");
        assert!(s.contains("\tssid=\"Home \\\"5G\\\"\""), "{s}");
        assert!(!s.contains("correct horse"));
        assert!(s.contains("/bin/sh /boot/firmware/punnet-setup.sh"));
        assert!(s.ends_with("sed -i 's| systemd.run.*||g' /boot/firmware/cmdline.txt\nexit 0\n"));
        let bare = firstrun_sh(&Board {
            ssh_key: None,
            wifi: None,
            ..board()
        });
        assert!(!bare.contains("enable_ssh") && !bare.contains("set_wlan"));
    }

    #[test]
    fn cloud_init_files_are_yaml_with_the_settings() {
        let b = board();
        let ud = user_data(&b);
        assert!(ud.starts_with("#cloud-config\n"));
        let v: serde_json::Value = serde_norway::from_str(&ud).unwrap();
        assert_eq!(
            v["users"][0]["ssh_authorized_keys"][0],
            "ssh-ed25519 AAAAC3Nza it's-me"
        );
        assert_eq!(v["preserve_hostname"], true);
        assert!(v["runcmd"][0][2]
            .as_str()
            .unwrap()
            .contains("/boot/firmware/punnet-setup.sh --start"));
        let nc: serde_json::Value =
            serde_norway::from_str(&network_config(b.wifi.as_ref().unwrap())).unwrap();
        let wlan = &nc["network"]["wifis"]["wlan0"];
        assert_eq!(wlan["regulatory-domain"], "GB");
        assert_eq!(
            wlan["access-points"]["Home \"5G\""]["password"]
                .as_str()
                .unwrap()
                .len(),
            64
        );
        assert_eq!(meta_data("7"), "instance-id: punnet-7\n");
    }

    #[test]
    fn setup_script_names_installs_and_cleans_up() {
        let s = setup_sh(&board());
        assert!(s.contains("PREFIX='pi-'"));
        assert!(s.contains("/proc/device-tree/serial-number"));
        assert!(s.contains("$DATA/images/import"));
        assert!(s.contains("systemctl enable punnet-agent.service"));
        assert!(s.contains("rm -f \"$SRC\"/punnet-agent-* \"$SRC\"/punnet-preload-*"));
        let yaml = agent_yaml(&AgentYaml {
            broker: "mqtts://fleet.lan:8883".into(),
            token: "0123456789ab.s3cret".into(),
            ca: Some("/etc/punnet/ca.pem".into()),
            labels: BTreeMap::from([("site".to_string(), "barn: north".to_string())]),
            allow_plaintext: false,
        });
        let v: serde_json::Value = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(v["labels"]["site"], "barn: north");
        assert!(v.get("allow-plaintext").is_none());
    }
}
