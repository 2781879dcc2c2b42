//! The command line, in kubectl's shapes: global connection and namespace flags, then
//! one subcommand per verb. Parsed with clap; `run` in lib.rs dispatches on it.

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "punnet",
    version,
    about = "Control a Punnet fleet: apply manifests, list and inspect Pods, Deployments and Nodes"
)]
pub struct Cli {
    /// Controller URL (else $PUNNET_SERVER, else the config file, else https://127.0.0.1:6443).
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// CA file the controller's certificate is checked against (else $PUNNET_CA, else
    /// `ca:` in the config file, else the system's CAs).
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// Accept an http:// server: the token and everything else cross the network
    /// unencrypted.
    #[arg(long, global = true)]
    pub allow_plaintext: bool,
    /// Bearer token (else $PUNNET_TOKEN, else the config file).
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Namespace to work in (default "default").
    #[arg(short = 'n', long, global = true, value_name = "NS")]
    pub namespace: Option<String>,
    /// List across all namespaces.
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update objects from manifests (server-side apply).
    Apply(ApplyArgs),
    /// List objects or show some by name.
    Get(GetArgs),
    /// Show one object in detail.
    Describe(DescribeArgs),
    /// Delete objects by name or by manifest.
    Delete(DeleteArgs),
    /// Set the number of replicas of a Deployment.
    Scale(ScaleArgs),
    /// Print the logs of a container.
    Logs(LogsArgs),
    /// Show CPU and memory use of nodes or Pods.
    Top(TopArgs),
    /// Create a Secret or ConfigMap from literals and files.
    #[command(subcommand)]
    Create(CreateCommand),
    /// Manage the rollout of a Deployment: status, history, undo, restart, pause, resume.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Print the client and server versions.
    Version,
    /// Mark a node unschedulable: no new Pods are placed on it.
    Cordon(CordonArgs),
    /// Mark a node schedulable again.
    Uncordon(CordonArgs),
    /// Cordon a node and evict its Pods, for maintenance.
    Drain(DrainArgs),
    /// Make tokens: bootstrap (enrol boards), admin, read-only, operator (MQTT commands).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Make flashable board images (Raspberry Pi OS that boots into the fleet).
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Write a copy of a Raspberry Pi OS image that installs the agent and enrols on its
    /// first boot. The base is never changed; only the copy's boot partition is edited.
    /// Here --token is the bootstrap token the boards enrol with (`punnet token create`),
    /// --ca the controller's ca.pem they trust, --allow-plaintext lets them use mqtt://.
    Build(ImageBuildArgs),
}

#[derive(Debug, Args)]
pub struct ImageBuildArgs {
    /// The Raspberry Pi OS image to start from (.img or .img.xz).
    #[arg(long, value_name = "RASPIOS.img[.xz]")]
    pub base: std::path::PathBuf,
    /// The image to write.
    #[arg(long, value_name = "FLEET.img")]
    pub out: std::path::PathBuf,
    /// The controller's MQTT broker the boards connect to: mqtts://HOST[:8883].
    #[arg(long, value_name = "URL")]
    pub controller: String,
    /// Each board is named PREFIX + its serial number (also its hostname).
    #[arg(long, value_name = "PREFIX", default_value = "pi-")]
    pub hostname_prefix: String,
    /// A label for every board (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Wi-Fi network to join (with --wifi-psk and --wifi-country).
    #[arg(long, value_name = "SSID")]
    pub wifi_ssid: Option<String>,
    /// Its passphrase; only the derived WPA key is written to the image.
    #[arg(
        long,
        value_name = "PASSPHRASE",
        env = "PUNNET_WIFI_PSK",
        hide_env_values = true
    )]
    pub wifi_psk: Option<String>,
    /// Wi-Fi country (regulatory domain), e.g. GB.
    #[arg(long, value_name = "CC")]
    pub wifi_country: Option<String>,
    /// An SSH public key for user `pi` (SSH is turned on).
    #[arg(long, value_name = "FILE")]
    pub ssh_key: Option<std::path::PathBuf>,
    /// An OCI archive to load on first boot, before anything is pulled (repeatable).
    #[arg(long, value_name = "IMAGE.tar")]
    pub preload: Vec<std::path::PathBuf>,
    /// The agent binary to install, instead of DIST/<target>/punnet-agent.
    #[arg(long, value_name = "FILE")]
    pub agent: Option<std::path::PathBuf>,
    /// Where `cross/build` put the binaries (repeatable) [default: ./dist, then a dist/
    /// beside this program's checkout].
    #[arg(long, value_name = "DIR")]
    pub dist: Vec<std::path::PathBuf>,
    /// First-boot mechanism: cloud-init (Trixie and later), firstrun (Bookworm-era
    /// systemd.run=), or auto (cloud-init when the image carries its seed files).
    #[arg(long, value_name = "MECHANISM", default_value = "auto", value_parser = ["auto", "cloud-init", "firstrun"])]
    pub first_boot: String,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token and print it (its secret is shown only this once).
    Create(TokenCreateArgs),
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// How long the token is valid (`24h`, `30m`); for ever when not given.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Option<std::time::Duration>,
    /// How many boards it may enrol; unlimited when not given.
    #[arg(long, value_name = "N")]
    pub uses: Option<u32>,
    /// A label given to every node the token enrols (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// bootstrap (enrolment), admin, read-only or operator.
    #[arg(long, default_value = "bootstrap", value_parser = ["bootstrap", "admin", "read-only", "operator"])]
    pub role: String,
}

#[derive(Debug, Args)]
pub struct CordonArgs {
    pub node: String,
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    pub node: String,
    /// Leave DaemonSet-managed Pods running (drain refuses otherwise).
    #[arg(long)]
    pub ignore_daemonsets: bool,
    /// Evict Pods that use emptyDir volumes (their data is lost).
    #[arg(long)]
    pub delete_emptydir_data: bool,
    /// Also evict Pods that no controller would recreate.
    #[arg(long)]
    pub force: bool,
    /// Seconds each Pod gets to stop; the Pod's own terminationGracePeriodSeconds when
    /// negative or not given.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub grace_period: Option<i64>,
    /// Give up after this long (`60s`, `5m`); 0 or unset waits for ever.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<std::time::Duration>,
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Watch a rollout until it finishes (exits 1 if it exceeds its progress deadline).
    Status(RolloutStatusArgs),
    /// List the revisions of a Deployment, or show one with --revision.
    History(RolloutHistoryArgs),
    /// Go back to the previous revision, or to --to-revision.
    Undo(RolloutUndoArgs),
    /// Restart every Pod by rolling out the same template again.
    Restart(RolloutTarget),
    /// Stop rolling out template changes (scaling goes on).
    Pause(RolloutTarget),
    /// Roll out template changes again.
    Resume(RolloutTarget),
}

#[derive(Debug, Args)]
pub struct RolloutTarget {
    /// `deployment` (then NAME) or `deployment/NAME`.
    pub resource: String,
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct RolloutStatusArgs {
    #[command(flatten)]
    pub target: RolloutTarget,
    /// Give up after this long (`0s`: wait for ever): `60s`, `2m`.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Print the state once instead of watching.
    #[arg(short = 'w', long, value_name = "BOOL", num_args = 0..=1, default_value_t = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub watch: bool,
}

#[derive(Debug, Args)]
pub struct RolloutHistoryArgs {
    #[command(flatten)]
    pub target: RolloutTarget,
    /// Show the Pod template of this revision.
    #[arg(long, value_name = "N")]
    pub revision: Option<i64>,
}

#[derive(Debug, Args)]
pub struct RolloutUndoArgs {
    #[command(flatten)]
    pub target: RolloutTarget,
    /// The revision to go back to (0: the previous one).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub to_revision: i64,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A manifest file, a directory of them (.yaml, .yml, .json) or `-` for stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Wide,
    Json,
    Yaml,
    Name,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// pods, deployments, nodes, configmaps or secrets (or an alias, or KIND/NAME).
    pub resource: String,
    /// Names of objects to show; all when none.
    pub names: Vec<String>,
    /// Label selector, e.g. `app=web,tier!=db`.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    #[arg(short = 'o', long, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
    /// After listing, watch for changes (resumes after disconnects; Ctrl-C to stop).
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Watch for changes without listing first.
    #[arg(long)]
    pub watch_only: bool,
    /// Events only: those of one object, e.g. `--for pod/web-1`.
    #[arg(long = "for", value_name = "KIND/NAME")]
    pub for_object: Option<String>,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// pod, deployment, node, configmap or secret (or an alias, or KIND/NAME).
    pub resource: String,
    /// Names of objects to describe; all in the namespace when none.
    pub names: Vec<String>,
    /// Label selector, used when no name is given.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// pods, deployments or nodes (or KIND/NAME).
    pub resource: Option<String>,
    pub names: Vec<String>,
    /// Delete the objects a manifest file (or directory, or `-`) describes.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub files: Vec<String>,
    /// Treat objects that do not exist as deleted.
    #[arg(long)]
    pub ignore_not_found: bool,
    /// Delete the objects of the kind that match this label selector, e.g. `app=web`.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Wait until the objects are gone (`--wait=false` returns once they are deleting).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value_t = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub wait: bool,
    /// How long to wait for the objects to be gone: `60s`, `2m`, `500ms`.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Seconds a Pod's containers get to stop; the Pod's own
    /// `terminationGracePeriodSeconds` when not given. 0 needs --force.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub grace_period: Option<i64>,
    /// Stop at once: the same as --grace-period=1.
    #[arg(long)]
    pub now: bool,
    /// Remove the objects from the API at once, without waiting for their containers
    /// to stop (with --grace-period=0, which it implies).
    #[arg(long)]
    pub force: bool,
    /// What happens to the objects' dependents (a DaemonSet's or Job's Pods):
    /// `background` (default: deleted after the owner), `foreground` (the owner is
    /// gone only once they are) or `orphan` (they stay, without the owner).
    #[arg(long, value_name = "MODE", default_value = "background", num_args = 0..=1, default_missing_value = "background")]
    pub cascade: String,
}

/// A duration as kubectl takes it: a number with `ms`, `s`, `m` or `h` (plain seconds
/// without a unit).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 60s, 2m, 500ms"))?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        _ => {
            return Err(format!(
                "invalid duration {text:?}: expected e.g. 60s, 2m, 500ms"
            ))
        }
    };
    Ok(std::time::Duration::from_millis(ms))
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// `deployment` (then NAME) or `deployment/NAME`.
    pub resource: String,
    pub name: Option<String>,
    #[arg(long, value_name = "N")]
    pub replicas: u32,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// A Pod name, `pod/NAME`, or `deployment/NAME` for the first Pod of a Deployment.
    pub target: String,
    #[arg(short = 'c', long, value_name = "CONTAINER")]
    pub container: Option<String>,
    /// Keep streaming new lines.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines (-1 for all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub tail: Option<i64>,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// `nodes` or `pods` (or an alias).
    pub resource: String,
    /// Only this node or Pod.
    pub name: Option<String>,
    /// Show each container of the Pods.
    #[arg(long)]
    pub containers: bool,
}

#[derive(Debug, Subcommand)]
pub enum CreateCommand {
    /// Create a Secret.
    #[command(subcommand)]
    Secret(CreateSecret),
    /// Create a ConfigMap from literals and files.
    #[command(alias = "cm")]
    Configmap(FromSources),
    /// Create a Namespace.
    #[command(alias = "ns")]
    Namespace(CreateNamespaceArgs),
}

#[derive(Debug, Args)]
pub struct CreateNamespaceArgs {
    pub name: String,
    /// Print the object instead of creating it (`client`).
    #[arg(long, value_name = "MODE")]
    pub dry_run: Option<String>,
    #[arg(short = 'o', long, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
}

#[derive(Debug, Subcommand)]
pub enum CreateSecret {
    /// A Secret of type kubernetes.io/dockerconfigjson for `imagePullSecrets`.
    DockerRegistry(DockerRegistryArgs),
    /// An Opaque Secret from literals and files.
    Generic(FromSources),
}

#[derive(Debug, Args)]
pub struct DockerRegistryArgs {
    pub name: String,
    /// The registry, e.g. `registry.lan:5000` (default: Docker Hub).
    #[arg(long, default_value = "https://index.docker.io/v1/")]
    pub docker_server: String,
    #[arg(long)]
    pub docker_username: String,
    #[arg(long)]
    pub docker_password: String,
    #[arg(long)]
    pub docker_email: Option<String>,
    /// Print the object instead of creating it (`client`).
    #[arg(long, value_name = "MODE")]
    pub dry_run: Option<String>,
    #[arg(short = 'o', long, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
}

#[derive(Debug, Args)]
pub struct FromSources {
    pub name: String,
    /// `KEY=VALUE` (repeatable).
    #[arg(long = "from-literal", value_name = "KEY=VALUE")]
    pub literals: Vec<String>,
    /// `[KEY=]PATH`: a file's content under its name (or KEY); a directory adds each
    /// regular file in it (repeatable).
    #[arg(long = "from-file", value_name = "[KEY=]PATH")]
    pub files: Vec<String>,
    /// Print the object instead of creating it (`client`).
    #[arg(long, value_name = "MODE")]
    pub dry_run: Option<String>,
    #[arg(short = 'o', long, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
}
