//! `punnet image build`: maps the command line onto `image::build` and prints what it
//! made. Offline: it talks to no controller.

use std::io::Write;

use crate::args::{Cli, ImageBuildArgs};
use crate::image::{self, human, BuildOptions, Mechanism};
use crate::Result;

pub fn build(cli: &Cli, a: &ImageBuildArgs, out: &mut dyn Write) -> Result<()> {
    let options = BuildOptions {
        base: a.base.clone(),
        out: a.out.clone(),
        controller: a.controller.clone(),
        // Only the flag: $PUNNET_TOKEN and the config file hold the user's own token,
        // which must never land on a card.
        token: cli.token.clone(),
        ca: cli.ca.clone(),
        allow_plaintext: cli.allow_plaintext,
        hostname_prefix: a.hostname_prefix.clone(),
        labels: a.labels.clone(),
        wifi_ssid: a.wifi_ssid.clone(),
        wifi_psk: a.wifi_psk.clone(),
        wifi_country: a.wifi_country.clone(),
        ssh_key: a.ssh_key.clone(),
        preload: a.preload.clone(),
        agent: a.agent.clone(),
        dist: a.dist.clone(),
        mechanism: match a.first_boot.as_str() {
            "cloud-init" => Some(Mechanism::CloudInit),
            "firstrun" => Some(Mechanism::Firstrun),
            _ => None,
        },
        instance: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis().to_string())
            .unwrap_or_default(),
    };
    let built = image::build(&options)?;
    let from = if built.decompressed {
        format!(" (decompressed, {})", human(built.image_bytes))
    } else {
        String::new()
    };
    writeln!(out, "base:        {}{from}", a.base.display())?;
    writeln!(
        out,
        "image:       {}; boot partition {} ({})",
        built.arch,
        built.partition.number,
        human(built.partition.len)
    )?;
    for (flavour, path, len) in &built.agents {
        writeln!(
            out,
            "agent:       {} from {} ({})",
            flavour.name(),
            path.display(),
            human(*len)
        )?;
    }
    writeln!(out, "first boot:  {}", built.mechanism)?;
    if built.preloaded > 0 {
        writeln!(
            out,
            "preloaded:   {} image archive(s), {}",
            a.preload.len(),
            human(built.preloaded)
        )?;
    }
    writeln!(out, "cmdline.txt: {}", built.cmdline)?;
    writeln!(
        out,
        "wrote {}: boards install the agent from {}/punnet-* on first boot and enrol; the boot partition has {} free",
        a.out.display(),
        built.boot_mount,
        human(built.free_after)
    )?;
    Ok(())
}
