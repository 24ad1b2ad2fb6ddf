//! `pangea serve`: a storage node in the foreground.

use std::path::PathBuf;

use nix::sys::signal::{SigSet, Signal};
use pangea::net::online::NetSetup;
use pangea::node::serve::{ServeConfig, StorageNode};

pub fn run(dir: PathBuf, quota: u64, net: NetSetup) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PANGEA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
    // Signals are taken by sigwait below: blocked before any thread exists.
    let mut sigs = SigSet::empty();
    sigs.add(Signal::SIGINT);
    sigs.add(Signal::SIGTERM);
    sigs.thread_block()?;
    let node = StorageNode::open(ServeConfig {
        data_dir: dir,
        quota,
        net,
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("pangea serve: peer id {}", node.peer_id());
    println!("network {}", node.network_id());
    for a in node.listen_addrs() {
        println!("listening on {a}");
    }
    println!("data dir {}", node.data_dir().display());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let sig = sigs.wait()?;
    tracing::info!(signal = ?sig, "stopping");
    node.shutdown();
    Ok(())
}
