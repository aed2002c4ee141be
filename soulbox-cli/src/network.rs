//! `--network`: whether `run` and `create` give the new sandbox internet
//! access.

use clap::Args;
use soulbox_core::{Network, SandboxOptions};

/// The network of the new sandbox.
#[derive(Debug, Args)]
pub struct NetworkArgs {
    /// `none` (loopback only, the default) or `internet`: outbound access
    /// through slirp4netns, which must be installed (package slirp4netns).
    #[arg(long, value_name = "none|internet", default_value = "none", value_parser = parse_network)]
    network: Network,
}

impl NetworkArgs {
    /// Sets the network given to `options`.
    pub fn apply(&self, options: &mut SandboxOptions) {
        options.network = self.network;
    }
}

fn parse_network(text: &str) -> Result<Network, String> {
    text.parse()
        .map_err(|_| format!("expected `none` or `internet`, got {text:?}"))
}
