//! punnet: the kubectl-like client of a Punnet fleet. `run` carries out one parsed
//! command line against the controller's REST API (see API-CONTRACT.md); each verb
//! lives in its own module, output formatting in `table`, `age` and `describe`.

pub mod age;
pub mod apply;
pub mod args;
pub mod client;
pub mod config;
pub mod create;
pub mod delete;
pub mod describe;
pub mod drain;
pub mod error;
pub mod events;
pub mod get;
pub mod image;
pub mod image_cmd;
pub mod kinds;
pub mod labels;
pub mod logs;
pub mod manifests;
pub mod rollout;
pub mod scale;
pub mod table;
pub mod tls;
pub mod tokens;
pub mod top;
pub mod version;
pub mod watch;
pub mod workloads;

use std::io::{ErrorKind, Write};

pub use args::{Cli, Command};
pub use error::{Error, Result};

use client::Client;
use kinds::Kind;

/// What every command needs: the client and the namespace scope.
pub struct Ctx {
    pub client: Client,
    /// `-n`, else `default`.
    pub namespace: String,
    /// `-n` exactly as given: apply and delete -f only refuse an object's namespace
    /// when the user named another one.
    pub namespace_flag: Option<String>,
    pub all_namespaces: bool,
}

impl Ctx {
    pub fn new(cli: &Cli) -> Result<Ctx> {
        let config = config::resolve(&config::Flags {
            server: cli.server.clone(),
            token: cli.token.clone(),
            ca: cli.ca.clone(),
            allow_plaintext: cli.allow_plaintext,
        })?;
        let namespace_flag = cli.namespace.clone().filter(|n| !n.is_empty());
        Ok(Ctx {
            client: Client::new(&config)?,
            namespace: namespace_flag
                .clone()
                .unwrap_or_else(|| punnet_api::DEFAULT_NAMESPACE.to_string()),
            namespace_flag,
            all_namespaces: cli.all_namespaces,
        })
    }

    /// The namespace a list of `kind` is scoped to; `None` means all namespaces.
    pub fn list_namespace(&self, kind: Kind) -> Option<&str> {
        if self.all_namespaces || !kind.namespaced() {
            None
        } else {
            Some(&self.namespace)
        }
    }
}

/// Runs one command with the process's stdout and stderr.
pub async fn run(cli: Cli) -> Result<()> {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    match run_with(cli, &mut out, &mut err).await {
        // `punnet logs x | head` closing the pipe is not a failure.
        Err(Error::Output(e)) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Runs one command, writing its output to `out` and notes and per-object errors to
/// `err`; the error returned is for the caller to print (see `Error::report`).
pub async fn run_with(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
    match &cli.command {
        Command::Version => version::version(Ctx::new(&cli), out).await,
        Command::Apply(a) => apply::apply(&Ctx::new(&cli)?, a, out, err).await,
        Command::Get(a) if tokens::is_tokens(&a.resource) => {
            tokens::get(&Ctx::new(&cli)?, &a.names, out).await
        }
        Command::Get(a) => get::get(&Ctx::new(&cli)?, a, out, err).await,
        Command::Describe(a) => describe::describe(&Ctx::new(&cli)?, a, out, err).await,
        Command::Delete(a) if a.resource.as_deref().is_some_and(tokens::is_tokens) => {
            tokens::delete(&Ctx::new(&cli)?, &a.names, out).await
        }
        Command::Delete(a) => delete::delete(&Ctx::new(&cli)?, a, out, err).await,
        Command::Scale(a) => scale::scale(&Ctx::new(&cli)?, a, out).await,
        Command::Logs(a) => logs::logs(&Ctx::new(&cli)?, a, out, err).await,
        Command::Top(a) => top::top(&Ctx::new(&cli)?, a, out).await,
        Command::Create(a) => create::create(&Ctx::new(&cli)?, a, out).await,
        Command::Cordon(a) => drain::cordon(&Ctx::new(&cli)?, a, out).await,
        Command::Uncordon(a) => drain::uncordon(&Ctx::new(&cli)?, a, out).await,
        Command::Drain(a) => drain::drain(&Ctx::new(&cli)?, a, out, err).await,
        Command::Rollout(a) => rollout::rollout(&Ctx::new(&cli)?, a, out, err).await,
        Command::Token(args::TokenCommand::Create(a)) => {
            tokens::create(&Ctx::new(&cli)?, a, out).await
        }
        // Works offline: no controller is asked, so no Ctx.
        Command::Image(args::ImageCommand::Build(a)) => image_cmd::build(&cli, a, out),
    }
}
