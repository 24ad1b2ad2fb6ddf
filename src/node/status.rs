//! What `pangea status` and `pangea peers` show, as JSON, and the control
//! socket's handler for each kind of node (docs: README, "pangea status").

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use super::control::{ControlRequest, Handler};
use crate::fs::Fs;
use crate::net::held::HeldStore;
use crate::net::online::OnlineHandle;

/// The longest an invite may live.
const MAX_INVITE: Duration = Duration::from_secs(30 * 24 * 3600);

fn network_json(net: Option<&OnlineHandle>) -> Value {
    match net {
        Some(n) => {
            let s = &n.stats;
            json!({
                "identity": n.identity_json(),
                "guard": n.guard.totals(),
                "transfers": {
                    "puts": s.puts.load(Ordering::Relaxed),
                    "put_failures": s.put_failures.load(Ordering::Relaxed),
                    "shards_fetched": s.shards_fetched.load(Ordering::Relaxed),
                    "bytes_fetched": s.bytes_fetched.load(Ordering::Relaxed),
                    "bad_shards": s.bad_shards.load(Ordering::Relaxed),
                    "fetch_failures": s.fetch_failures.load(Ordering::Relaxed),
                    "hedged": s.hedged.load(Ordering::Relaxed),
                },
            })
        }
        None => Value::Null,
    }
}

/// What the mount's control socket answers from.
pub struct MountContext {
    pub fs: std::sync::Weak<Fs>,
    pub net: Option<OnlineHandle>,
    /// The healer's counters (None: no healer, the node is alone).
    pub healer: Option<Arc<crate::workers::HealerStats>>,
    /// The scrubber's counters and pause switch.
    pub scrub: Option<Arc<crate::workers::ScrubStats>>,
    /// The index backup's counters (None: no backup runs here).
    pub backup: Option<Arc<super::backup::BackupStats>>,
    /// The tuner's last choice, inputs and candidates.
    pub tune: Arc<std::sync::Mutex<Option<Value>>>,
    /// The workers' status rows.
    pub workers: Vec<Arc<std::sync::Mutex<crate::workers::WorkerStatus>>>,
}

fn workers_json(workers: &[Arc<std::sync::Mutex<crate::workers::WorkerStatus>>]) -> Value {
    Value::Array(
        workers
            .iter()
            .map(|w| {
                let w = w.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let counters: serde_json::Map<String, Value> = w
                    .progress
                    .counters
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), json!(v)))
                    .collect();
                json!({
                    "name": w.name,
                    "state": format!("{:?}", w.state).to_lowercase(),
                    "queue": w.progress.queue_length,
                    "counters": counters,
                })
            })
            .collect(),
    )
}

fn healer_json(fs: &Fs, stats: Option<&crate::workers::HealerStats>) -> Value {
    let Some(s) = stats else { return Value::Null };
    let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let failing = fs
        .heal_queue()
        .list(10_000)
        .map(|v| v.iter().filter(|q| q.entry.attempts > 0).count())
        .unwrap_or(0);
    json!({
        "queued": r(&s.queued_now),
        "failing": failing,
        "checked": r(&s.chunks_checked),
        "repaired": r(&s.chunks_repaired),
        "shards_rebuilt": r(&s.shards_rebuilt),
        "failed": r(&s.repairs_failed),
        "bytes_moved": r(&s.bytes_moved),
        "scans": r(&s.scans_finished),
        "oldest_degraded_s": r(&s.oldest_degraded_secs),
    })
}

/// `pangea stat FILE`: each chunk of the file, its (k, m), where its
/// shards are (here, and which member holds which index, up or not) and
/// its health.
fn stat_file(fs: &Fs, ctx: &MountContext, ino: u64) -> Result<Value, String> {
    let chunks = fs
        .file_chunks(crate::fs::Ino(ino))
        .map_err(|e| e.to_string())?;
    let queue = fs.upload_queue();
    let layer = fs.chunk_layer();
    let names: std::collections::HashMap<String, String> = ctx
        .net
        .as_ref()
        .map(|n| {
            n.members
                .roster()
                .members
                .iter()
                .filter_map(|m| Some((m.peer_id()?.to_string(), m.name.clone())))
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::with_capacity(chunks.len());
    for id in &chunks {
        let Some(entry) = layer.table().get(id).map_err(|e| e.to_string())? else {
            continue;
        };
        let m = &entry.manifest;
        let holders: Vec<Value> = queue
            .holders(id)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(index, peer)| {
                let id = crate::net::NetPeerId::from_bytes(peer.as_bytes())
                    .map(|p| p.to_string())
                    .unwrap_or_else(|_| format!("{peer:#}"));
                json!({
                    "shard": index,
                    "peer": id,
                    "name": names.get(&id),
                    "live": ctx.net.as_ref().is_some_and(|n| n.is_live(&peer)),
                })
            })
            .collect();
        out.push(json!({
            "chunk": format!("{id:#}"),
            "k": m.params.k(),
            "m": m.params.m(),
            "shard_bytes": m.shard_len,
            "here": match entry.rec.location {
                crate::chunks::Location::Inline => "inline",
                crate::chunks::Location::File => "chunk file",
                crate::chunks::Location::Remote => "evicted",
            },
            "queued_for_placement": queue.is_queued(id).unwrap_or(false),
            "queued_for_repair": fs.heal_queue().is_queued(id).unwrap_or(false),
            "holders": holders,
            "health": health_of(fs, ctx.net.as_ref(), std::slice::from_ref(id)),
        }));
    }
    Ok(json!({
        "ino": ino,
        "health": health_of(fs, ctx.net.as_ref(), &chunks),
        "chunks": out,
    }))
}

fn scrub_json(stats: Option<&crate::workers::ScrubStats>) -> Value {
    let Some(s) = stats else { return Value::Null };
    let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    json!({
        "paused": s.paused.load(Ordering::Relaxed),
        "local_chunks": r(&s.local_chunks),
        "local_bytes": r(&s.local_bytes),
        "local_bad": r(&s.local_bad),
        "local_passes": r(&s.local_passes),
        "challenges": r(&s.challenges),
        "challenges_failed": r(&s.challenges_failed),
        "remote_passes": r(&s.remote_passes),
    })
}

/// `pangea heal [--now]`: the queue, its errors; `now` makes every entry
/// due and starts a scan.
fn heal_request(fs: &Fs, ctx: &MountContext, now: bool) -> Result<Value, String> {
    let stats = ctx
        .healer
        .as_ref()
        .ok_or("this node has no healer (it is not on a network)")?;
    let queue = fs.heal_queue();
    let retried = if now {
        stats.rescan_now.store(true, Ordering::Relaxed);
        queue.retry_all_now().map_err(|e| e.to_string())?
    } else {
        0
    };
    let entries = queue.list(1000).map_err(|e| e.to_string())?;
    let errors: Vec<Value> = entries
        .iter()
        .filter(|q| q.entry.attempts > 0)
        .map(|q| {
            json!({
                "chunk": q.chunk.to_string(),
                "attempts": q.entry.attempts,
                "spare": q.spare,
                "error": q.entry.last_error,
                "due_ms": q.due_ms,
            })
        })
        .collect();
    Ok(json!({
        "queued": entries.len(),
        "retried_now": retried,
        "errors": errors,
        "healer": healer_json(fs, Some(stats)),
    }))
}

/// A filesystem node's status.
pub fn mount_status(fs: &Fs, net: Option<&OnlineHandle>) -> Result<Value, String> {
    let queue = fs.upload_queue();
    let (chunks, bytes) = queue.backlog().map_err(|e| e.to_string())?;
    let health = queue
        .health(&|p| net.is_some_and(|n| n.is_live(p)))
        .map_err(|e| e.to_string())?;
    let stats = fs.chunk_layer().stats();
    Ok(json!({
        "role": "mount",
        "peers": net.map_or(Value::Array(Vec::new()), OnlineHandle::peers_json),
        "upload_backlog": { "chunks": chunks, "bytes": bytes },
        "safe_to_unplug": net.is_some()
            && chunks == 0
            && health.degraded == 0
            && health.local_only == 0,
        "chunks": {
            "placed": health.placed,
            "degraded": health.degraded,
            "local_only": health.local_only,
            "lost": stats.lost,
        },
        "network": network_json(net),
    }))
}

/// A storage node's status.
pub fn serve_status(held: &HeldStore, net: &OnlineHandle) -> Value {
    json!({
        "role": "serve",
        "peers": net.peers_json(),
        "held": held.stats(),
        "network": network_json(Some(net)),
    })
}

fn network_request(net: Option<&OnlineHandle>, req: &ControlRequest) -> Result<Value, String> {
    let net = net.ok_or("this node is not on a network (mount with --listen or --join)")?;
    match req {
        ControlRequest::Peers => Ok(net.peers_json()),
        ControlRequest::Invite { expires_s, uses } => {
            let expires = Duration::from_secs(*expires_s).min(MAX_INVITE);
            let token = net.invite(expires, *uses).map_err(|e| e.to_string())?;
            Ok(json!({ "token": token, "expires_s": expires.as_secs(), "uses": uses }))
        }
        ControlRequest::Remove { peer } => {
            net.remove(peer).map_err(|e| e.to_string())?;
            Ok(json!({ "removed": peer }))
        }
        ControlRequest::Status => Err("unreachable".into()),
        ControlRequest::Heal { .. } => Err("only a filesystem node heals".into()),
        ControlRequest::Scrub { .. } => Err("only a filesystem node scrubs".into()),
        ControlRequest::Tune => Err("only a filesystem node chooses (k, m)".into()),
        ControlRequest::Stat { .. } => Err("a storage node holds no files".into()),
    }
}

/// What `user.pangea.health` says of a file's chunks: how many are placed
/// on live peers whole, degraded (some shards), local only, or lost (fewer
/// than k shards on live peers and no local copy), and how many are
/// domain-safe (the loss of any one failure domain, this node's disk
/// included, leaves k shards).
pub fn health_of(fs: &Fs, net: Option<&OnlineHandle>, chunks: &[crate::ces::ChunkId]) -> String {
    let (mut placed, mut degraded, mut local_only, mut lost) = (0, 0, 0, 0);
    let mut domain_safe = 0;
    let queue = fs.upload_queue();
    let layer = fs.chunk_layer();
    for id in chunks {
        let Ok(Some(entry)) = layer.table().get(id) else {
            lost += 1;
            continue;
        };
        let total = entry.manifest.params.total();
        let k = usize::from(entry.manifest.params.k());
        let holders: Vec<(u16, crate::placement::PeerId)> = queue
            .holders(id)
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, p)| net.is_some_and(|n| n.is_live(p)))
            .collect();
        let live: std::collections::HashSet<u16> = holders.iter().map(|(i, _)| *i).collect();
        let local = match entry.rec.location {
            crate::chunks::Location::Inline => true,
            crate::chunks::Location::Remote => false,
            crate::chunks::Location::File => layer
                .local()
                .files()
                .exists(entry.file().as_bytes())
                .unwrap_or(false),
        };
        // Domain-safe: losing any one failure domain (this node's disk is
        // one, each peer's domain another) leaves k shards somewhere.
        let mut by_domain: std::collections::HashMap<String, std::collections::HashSet<u16>> =
            std::collections::HashMap::new();
        for (i, p) in &holders {
            let d = net
                .and_then(|n| n.book.domain(p))
                .unwrap_or_else(|| format!("{p:#}"));
            by_domain.entry(d).or_default().insert(*i);
        }
        let survives_peer_domain = by_domain.values().all(|lost_here| {
            local
                || holders
                    .iter()
                    .filter(|(i, _)| !lost_here.contains(i))
                    .map(|(i, _)| *i)
                    .collect::<std::collections::HashSet<u16>>()
                    .len()
                    >= k
        });
        if survives_peer_domain && live.len() >= k && (local || by_domain.len() > 1) {
            domain_safe += 1;
        }
        if live.len() < k && !local {
            lost += 1;
        } else if live.len() >= total {
            placed += 1;
        } else if live.is_empty() {
            local_only += 1;
        } else {
            degraded += 1;
        }
    }
    format!(
        "chunks={} placed={placed} degraded={degraded} local_only={local_only} lost={lost} domain_safe={domain_safe}",
        chunks.len()
    )
}

/// Waits until every one of `chunks` has at least k+1 shards (all, if
/// fewer) on live peers, or `deadline` passes (an error saying how many
/// are short).
pub fn wait_on_peers(
    fs: &Fs,
    net: &OnlineHandle,
    chunks: &[crate::ces::ChunkId],
    deadline: Duration,
) -> Result<(), String> {
    let until = std::time::Instant::now() + deadline;
    let queue = fs.upload_queue();
    let layer = fs.chunk_layer();
    // Only chunks still on their way: a close after reading, or after
    // writing nothing new, does not wait for old chunks (even degraded
    // ones: re-placing those is the healer's work).
    let mut pending: Vec<crate::ces::ChunkId> = Vec::new();
    for id in chunks {
        if queue.is_queued(id).map_err(|e| e.to_string())? {
            pending.push(*id);
        }
    }
    loop {
        let mut short = Vec::new();
        for id in pending {
            let Ok(Some(entry)) = layer.table().get(&id) else {
                continue; // deleted meanwhile
            };
            let p = entry.manifest.params;
            let need = (usize::from(p.k()) + 1).min(p.total());
            let live: std::collections::HashSet<u16> = queue
                .holders(&id)
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|(_, peer)| net.is_live(peer))
                .map(|(i, _)| i)
                .collect();
            if live.len() < need {
                short.push(id);
            }
        }
        if short.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() >= until {
            return Err(format!(
                "{} chunk(s) not on enough peers within {}s",
                short.len(),
                deadline.as_secs()
            ));
        }
        pending = short;
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The control socket's handler on a filesystem node.
/// It holds the filesystem weakly: a client still talking at shutdown does
/// not keep the index open.
pub fn mount_handler(ctx: MountContext) -> Arc<Handler> {
    Arc::new(move |req: &ControlRequest| {
        let fs = ctx.fs.upgrade().ok_or("the node is shutting down")?;
        match req {
            ControlRequest::Status => {
                let mut v = mount_status(&fs, ctx.net.as_ref())?;
                v["healer"] = healer_json(&fs, ctx.healer.as_deref());
                v["scrubber"] = scrub_json(ctx.scrub.as_deref());
                v["backup"] = ctx.backup.as_ref().map_or(Value::Null, |b| b.json());
                v["workers"] = workers_json(&ctx.workers);
                Ok(v)
            }
            ControlRequest::Heal { now } => heal_request(&fs, &ctx, *now),
            ControlRequest::Stat { ino } => stat_file(&fs, &ctx, *ino),
            ControlRequest::Tune => {
                let p = fs.chunk_layer().shard_params();
                let explained = ctx.tune.lock().unwrap_or_else(|e| e.into_inner()).clone();
                Ok(json!({
                    "k": p.k(),
                    "m": p.m(),
                    "explain": explained,
                }))
            }
            ControlRequest::Scrub { pause } => {
                let s = ctx
                    .scrub
                    .as_ref()
                    .ok_or("this node has no scrubber (it is not on a network)")?;
                if let Some(p) = pause {
                    s.paused.store(*p, Ordering::Relaxed);
                }
                Ok(scrub_json(Some(s)))
            }
            other => network_request(ctx.net.as_ref(), other),
        }
    })
}

/// The control socket's handler on a storage node.
pub fn serve_handler(held: Arc<HeldStore>, net: OnlineHandle) -> Arc<Handler> {
    Arc::new(move |req: &ControlRequest| match req {
        ControlRequest::Status => Ok(serve_status(&held, &net)),
        other => network_request(Some(&net), other),
    })
}
