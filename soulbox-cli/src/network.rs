//! `--network`, `--allow-out` and `--deny-out`: whether `run` and `create`
//! give the new sandbox internet access, and where it may send to.

use clap::Args;
use soulbox_core::{Network, SandboxOptions};

/// The network of the new sandbox.
#[derive(Debug, Args)]
pub struct NetworkArgs {
    /// `none` (loopback only, the default) or `internet`: outbound access
    /// through slirp4netns, which must be installed (package slirp4netns).
    #[arg(long, value_name = "none|internet", default_value = "none", value_parser = parse_network)]
    network: Network,
    /// IPv4 address or CIDR block that the sandbox may send to even where
    /// a --deny-out network contains it. Repeatable; needs --network
    /// internet.
    #[arg(long = "allow-out", value_name = "CIDR")]
    allow_out: Vec<String>,
    /// IPv4 address or CIDR block (0.0.0.0/0 for all) that the sandbox may
    /// not send to, TCP and UDP alike, unless --allow-out names it.
    /// Repeatable; needs --network internet.
    #[arg(long = "deny-out", value_name = "CIDR")]
    deny_out: Vec<String>,
}

impl NetworkArgs {
    /// Sets the network and egress rules given to `options`.
    pub fn apply(&self, options: &mut SandboxOptions) {
        options.network = self.network;
        options.allow_out.clone_from(&self.allow_out);
        options.deny_out.clone_from(&self.deny_out);
    }
}

fn parse_network(text: &str) -> Result<Network, String> {
    text.parse()
        .map_err(|_| format!("expected `none` or `internet`, got {text:?}"))
}
