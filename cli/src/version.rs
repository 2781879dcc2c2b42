//! `punnet version`: this client's version, then the controller's `/version`.

use std::io::Write;

use crate::error::Result;
use crate::Ctx;

pub const CLIENT_VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// Takes the context as a `Result` so the client version prints even when the
/// configuration is broken.
pub async fn version(ctx: Result<Ctx>, out: &mut dyn Write) -> Result<()> {
    writeln!(out, "Client Version: {CLIENT_VERSION}")?;
    let ctx = ctx?;
    let v = ctx.client.get(&["version".to_string()], &[]).await?;
    let field = |name: &str| {
        v[name]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("<unknown>")
            .to_string()
    };
    writeln!(out, "Server Version: {}", field("gitVersion"))?;
    writeln!(out, "Server Platform: {}", field("platform"))?;
    Ok(())
}
