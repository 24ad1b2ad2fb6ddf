//! `pangea bench-transfer`: the bare transfer ceiling of the network layer
//! (scripts/bench-swarm): two nodes of one network in this process, on
//! loopback, one pushing shards to the other with a number in flight; the
//! receiver checks each shard against its address and keeps nothing (no
//! disk). Prints MB/s and the CPU seconds per GiB moved (both ends).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use pangea::ces::ShardId;
use pangea::net::member::{Invite, MemberFiles, Role};
use pangea::net::roster::Membership;
use pangea::net::swarm::{NetConfig, Network, ShardService};
use pangea::net::wire::{Refusal, Request, Response, check_shard};

struct Sink;

impl ShardService for Sink {
    fn serve(&self, _: &pangea::net::NetPeerId, r: Request) -> Response {
        match r {
            Request::Put { address, bytes } if check_shard(&address, &bytes).is_ok() => {
                Response::Stored
            }
            _ => Response::Refused(Refusal::BadAddress),
        }
    }
}

/// CPU seconds this process has used (user + system).
fn cpu_seconds() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if r != 0 {
        return 0.0;
    }
    // SAFETY: initialized by the successful call above.
    let ru = unsafe { ru.assume_init() };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

pub fn run(transport: &str, mib: usize, shard_kib: usize, in_flight: usize) -> anyhow::Result<()> {
    let listen = match transport {
        "tcp" => "/ip4/127.0.0.1/tcp/0",
        "quic" => "/ip4/127.0.0.1/udp/0/quic-v1",
        _ => bail!("--transport: tcp or quic"),
    };
    let tmp = std::env::temp_dir().join(format!("pangea-bench-transfer-{}", std::process::id()));
    let a_key = pangea::net::NetKeypair::generate_ed25519();
    let b_key = pangea::net::NetKeypair::generate_ed25519();
    let a_id = a_key.public().to_peer_id();
    let b_id = b_key.public().to_peer_id();
    let admin = Arc::new(Membership::create(
        MemberFiles::new(&tmp.join("a")),
        &a_id,
        Role::Mount,
        "a",
        &[],
    )?);
    let token = admin.invite(Duration::from_secs(60), 1, vec![])?;
    let (invite, _) = Invite::parse(&token)?;
    admin.admit(&invite, &b_id, Role::Serve, "b", &[])?;
    let b_members = Arc::new(Membership::joined(
        MemberFiles::new(&tmp.join("b")),
        admin.network().clone(),
        admin.signed(),
        &b_id,
    )?);
    let start = |key, m, svc: Arc<dyn ShardService>| {
        Network::start(
            NetConfig::new(key, vec![listen.parse().expect("addr")]),
            m,
            svc,
        )
    };
    let a = start(a_key, admin, Arc::new(Sink)).context("node a")?;
    let b = start(b_key, b_members, Arc::new(Sink)).context("node b")?;
    let addrs = b.client().listeners()?;
    let shard_len = shard_kib << 10;
    let count = (mib << 20) / shard_len;
    // Distinct shards (a counter in the first bytes), addresses computed
    // before the clock starts.
    let shards: Vec<(ShardId, Vec<u8>)> = (0..in_flight.max(1) * 2)
        .map(|i| {
            let mut v = vec![0u8; shard_len];
            for (j, w) in v.chunks_mut(8).enumerate() {
                let x = ((i as u64) << 40 ^ j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                w.copy_from_slice(&x.to_le_bytes()[..w.len()]);
            }
            (ShardId::of(&v), v)
        })
        .collect();
    let client = a.client();
    // Warm the connection.
    client.request(
        b_id,
        addrs.clone(),
        Request::Has { addresses: vec![] },
        Duration::from_secs(10),
    )?;
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| -> anyhow::Result<()> {
        let mut hs = Vec::new();
        for _ in 0..in_flight.max(1) {
            hs.push(s.spawn(|| -> anyhow::Result<()> {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= count {
                        return Ok(());
                    }
                    let (address, bytes) = &shards[i % shards.len()];
                    let r = client.request(
                        b_id,
                        Vec::new(),
                        Request::Put {
                            address: *address,
                            bytes: bytes.clone(),
                        },
                        Duration::from_secs(60),
                    )?;
                    if r != Response::Stored {
                        bail!("unexpected answer {r:?}");
                    }
                }
            }));
        }
        for h in hs {
            h.join()
                .map_err(|_| anyhow::anyhow!("a sender panicked"))??;
        }
        Ok(())
    })?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let bytes = (count * shard_len) as f64;
    println!(
        "transfer {transport}: {:.0} MB/s, {:.2} CPU-s/GiB (both ends), {count} shards of {shard_kib} KiB, {in_flight} in flight, {secs:.2} s",
        bytes / 1e6 / secs,
        cpu / (bytes / (1u64 << 30) as f64)
    );
    drop((a, b));
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
