//! The `guildhall` node binary. For now it only reports its version and protocol; the node
//! itself (store, gateway, federation) lands with the single-node issue.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "guildhall",
    version,
    about = "A federated, peer-to-peer community chat node"
)]
struct Cli {}

fn main() {
    Cli::parse();
    println!(
        "guildhall {} (protocol version {})",
        env!("CARGO_PKG_VERSION"),
        guildhall_proto::op::PROTOCOL_VERSION
    );
}
