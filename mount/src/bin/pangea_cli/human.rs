//! `pangea status` and `pangea peers` for people: the JSON the node
//! answers, as a few lines.

use serde_json::Value;

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn u(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_u64().unwrap_or(0)
}

/// The status, for people.
pub fn status(v: &Value) -> String {
    let mut out = String::new();
    let role = v["role"].as_str().unwrap_or("?");
    let id = &v["network"]["identity"];
    if id.is_null() {
        out.push_str("network: none (this node is alone; its data lives on this disk only)\n");
    } else {
        out.push_str(&format!(
            "node {} ({role}) on network {}{}\n",
            id["peer_id"].as_str().unwrap_or("?"),
            id["network"].as_str().unwrap_or("?"),
            if id["admin"].as_bool() == Some(true) {
                ", admin"
            } else {
                ""
            }
        ));
    }
    if role == "mount" {
        let chunks = u(v, &["upload_backlog", "chunks"]);
        let verdict = if id.is_null() {
            "LOCAL ONLY: add a machine (pangea invite) to protect against losing this disk"
                .to_string()
        } else if v["safe_to_unplug"].as_bool() == Some(true) {
            "SAFE TO UNPLUG: every chunk is on the peers".to_string()
        } else if chunks == 0 {
            "NOT SAFE: some chunks lack copies on peers (see below)".to_string()
        } else {
            format!(
                "UPLOADING: {chunks} chunk(s), {} still to place on peers",
                bytes(u(v, &["upload_backlog", "bytes"]))
            )
        };
        out.push_str(&format!("{verdict}\n"));
        out.push_str(&format!(
            "chunks: {} placed, {} degraded, {} local only, {} lost\n",
            u(v, &["chunks", "placed"]),
            u(v, &["chunks", "degraded"]),
            u(v, &["chunks", "local_only"]),
            u(v, &["chunks", "lost"])
        ));
    } else {
        out.push_str(&format!(
            "holding {} shard(s), {} of {} quota\n",
            u(v, &["held", "shards"]),
            bytes(u(v, &["held", "bytes"])),
            bytes(u(v, &["held", "quota"]))
        ));
    }
    let h = &v["healer"];
    if !h.is_null() {
        let queued = u(h, &["queued"]);
        out.push_str(&format!(
            "healer: {} ({} repaired, {} shards rebuilt, {} moved, {} failed{})\n",
            if queued == 0 {
                "nothing to repair".to_string()
            } else {
                format!(
                    "{queued} chunk(s) waiting, oldest for {}s",
                    u(h, &["oldest_degraded_s"])
                )
            },
            u(h, &["repaired"]),
            u(h, &["shards_rebuilt"]),
            bytes(u(h, &["bytes_moved"])),
            u(h, &["failed"]),
            match u(h, &["failing"]) {
                0 => String::new(),
                n => format!("; {n} failing: see pangea heal"),
            }
        ));
    }
    if let Some(ws) = v["workers"].as_array() {
        let line: Vec<String> = ws
            .iter()
            .map(|w| {
                format!(
                    "{} {}",
                    w["name"].as_str().unwrap_or("?"),
                    w["state"].as_str().unwrap_or("?")
                )
            })
            .collect();
        if !line.is_empty() {
            out.push_str(&format!("workers: {}\n", line.join(", ")));
        }
    }
    let g = &v["network"]["guard"];
    if !g.is_null() {
        out.push_str(&format!(
            "guard: {} accepted, {} refused, {} throttled, {} banned; {} in, {} out\n",
            u(g, &["accepted"]),
            u(g, &["refused"]),
            u(g, &["throttled"]),
            u(g, &["banned"]),
            bytes(u(g, &["bytes_in"])),
            bytes(u(g, &["bytes_out"]))
        ));
    }
    out.push_str(&peers(&v["peers"]));
    out
}

/// The members, one line each.
pub fn peers(v: &Value) -> String {
    let list = v.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return "peers: none\n".into();
    }
    let mut out = format!("peers ({}):\n", list.len());
    for p in list {
        let rtt = p["srtt_ms"]
            .as_f64()
            .filter(|r| *r > 0.0)
            .or_else(|| p["rtt_ms"].as_f64())
            .map_or_else(|| "-".to_string(), |r| format!("{r:.1} ms"));
        let score = p["score"]
            .as_f64()
            .map_or_else(|| "-".to_string(), |s| format!("{s:.2}"));
        out.push_str(&format!(
            "  {:<10} {:<6} {:<13} rtt {:<9} score {:<5} {:<16} {}\n",
            p["name"].as_str().unwrap_or("?"),
            p["role"].as_str().unwrap_or("?"),
            if p["connected"].as_bool() == Some(true) {
                "connected"
            } else {
                "NOT CONNECTED"
            },
            rtt,
            score,
            p["domain"].as_str().unwrap_or("-"),
            p["id"].as_str().unwrap_or("?"),
        ));
    }
    out
}

/// `pangea heal`, for people.
pub fn heal(v: &Value) -> String {
    let mut out = format!("{} chunk(s) queued for repair", u(v, &["queued"]));
    let retried = u(v, &["retried_now"]);
    if retried > 0 {
        out.push_str(&format!("; {retried} retried now"));
    }
    out.push('\n');
    let errors = v["errors"].as_array().cloned().unwrap_or_default();
    if !errors.is_empty() {
        out.push_str(&format!("failing ({}):\n", errors.len()));
        for e in errors.iter().take(50) {
            out.push_str(&format!(
                "  {} after {} attempt(s): {}\n",
                e["chunk"].as_str().unwrap_or("?"),
                u(e, &["attempts"]),
                e["error"].as_str().unwrap_or("?")
            ));
        }
    }
    out
}

/// `pangea tune [--explain]`, for people.
pub fn tune(v: &Value, explain: bool) -> String {
    let e = &v["explain"];
    let mut out = format!(
        "new chunks: k={} m={} ({})\n",
        u(v, &["k"]),
        u(v, &["m"]),
        e["choice"]["how"].as_str().unwrap_or("given with --k/--m")
    );
    if !explain || e.is_null() {
        return out;
    }
    let i = &e["inputs"];
    out.push_str(&format!(
        "inputs: {} storage peers, network {}, repair every {:.2} h, target P(loss) <= {:e}, load {:.2}/core\n",
        i["peers"].as_array().map_or(0, Vec::len),
        i["net"].as_str().unwrap_or("?"),
        i["repair_h"].as_f64().unwrap_or(0.0),
        i["target"].as_f64().unwrap_or(0.0),
        i["cpu_load"].as_f64().unwrap_or(0.0),
    ));
    for p in i["peers"].as_array().cloned().unwrap_or_default() {
        out.push_str(&format!(
            "  peer in {}: watched {:.1} h, {} loss(es)\n",
            p["domain"].as_str().unwrap_or("?"),
            p["observed_h"].as_f64().unwrap_or(0.0),
            u(&p, &["losses"])
        ));
    }
    out.push_str("candidates (k+m, overhead, P(loss) per repair interval):\n");
    for c in e["candidates"].as_array().cloned().unwrap_or_default() {
        out.push_str(&format!(
            "  {:>2}+{:<2} {:.3}x  {:.3e} {}\n",
            u(&c, &["k"]),
            u(&c, &["m"]),
            c["overhead"].as_f64().unwrap_or(0.0),
            c["p_loss"].as_f64().unwrap_or(1.0),
            if c["meets"].as_bool() == Some(true) {
                "meets"
            } else {
                ""
            }
        ));
    }
    out
}

/// `pangea stat FILE`, for people.
pub fn stat(file: &std::path::Path, v: &Value) -> String {
    let chunks = v["chunks"].as_array().cloned().unwrap_or_default();
    let mut out = format!(
        "{}: {}\n",
        file.display(),
        v["health"].as_str().unwrap_or("?")
    );
    for c in chunks {
        let holders: Vec<String> = c["holders"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|h| {
                format!(
                    "{}:{}{}",
                    u(h, &["shard"]),
                    h["name"].as_str().unwrap_or("?"),
                    if h["live"].as_bool() == Some(true) {
                        ""
                    } else {
                        "(down)"
                    }
                )
            })
            .collect();
        out.push_str(&format!(
            "  {} {}+{} {}, {}{}{}; {}\n",
            c["chunk"].as_str().unwrap_or("?"),
            u(&c, &["k"]),
            u(&c, &["m"]),
            bytes(u(&c, &["shard_bytes"])),
            c["here"].as_str().unwrap_or("?"),
            if c["queued_for_placement"].as_bool() == Some(true) {
                ", uploading"
            } else {
                ""
            },
            if c["queued_for_repair"].as_bool() == Some(true) {
                ", repair queued"
            } else {
                ""
            },
            if holders.is_empty() {
                "no copies on peers".to_string()
            } else {
                holders.join(" ")
            }
        ));
    }
    out
}
