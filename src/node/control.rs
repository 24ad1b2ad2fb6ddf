//! The control socket: how `pangea status`, `pangea peers`, `pangea
//! invite` and `pangea remove` talk to the running node. A Unix socket in
//! the data dir (`control.sock`, mode 0600 in a 0700 dir: only the owner),
//! one JSON request per connection and one JSON answer, both one line and
//! bounded; every wait has a deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

/// The socket's name in the data dir.
pub const SOCKET: &str = "control.sock";
/// The largest request or answer.
const MAX_MESSAGE: u64 = 1 << 20;
/// How long one exchange may take.
const IO_DEADLINE: Duration = Duration::from_secs(20);

/// What the CLI asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ControlRequest {
    Status,
    Peers,
    Invite {
        expires_s: u64,
        uses: u16,
    },
    Remove {
        peer: String,
    },
    /// `pangea tune [--explain]`.
    Tune,
    /// `pangea stat FILE`: the chunks of inode `ino`.
    Stat {
        ino: u64,
    },
    /// `pangea scrub [--pause|--resume]`.
    Scrub {
        pause: Option<bool>,
    },
    /// `pangea heal [--now]`.
    Heal {
        now: bool,
    },
}

/// The node's side: answers a request.
pub type Handler = dyn Fn(&ControlRequest) -> Result<serde_json::Value, String> + Send + Sync;

/// The listening socket and its thread; dropping it stops both and
/// removes the socket.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Listens on `data_dir/control.sock` (replacing a stale socket).
    pub fn start(data_dir: &Path, handler: Arc<Handler>) -> std::io::Result<ControlServer> {
        let path = data_dir.join(SOCKET);
        if path.exists() {
            if UnixStream::connect(&path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} is in use by another node", path.display()),
                ));
            }
            std::fs::remove_file(&path)?;
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("pangea-control".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let h = handler.clone();
                            // One thread per client: a slow one holds up no other.
                            let _ = std::thread::Builder::new()
                                .name("pangea-control-client".into())
                                .spawn(move || {
                                    if let Err(e) = serve_one(stream, h.as_ref()) {
                                        debug!(error = %e, "a control client failed");
                                    }
                                });
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Err(e) => {
                            warn!(error = %e, "control socket accept failed");
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
            })?;
        Ok(ControlServer {
            path,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_one(stream: UnixStream, handler: &Handler) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_DEADLINE))?;
    stream.set_write_timeout(Some(IO_DEADLINE))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_MESSAGE)).read_line(&mut line)?;
    let answer = match serde_json::from_str::<ControlRequest>(line.trim()) {
        Ok(req) => match handler(&req) {
            Ok(v) => serde_json::json!({ "ok": v }),
            Err(e) => serde_json::json!({ "error": e }),
        },
        Err(e) => serde_json::json!({ "error": format!("bad request: {e}") }),
    };
    let mut out = serde_json::to_vec(&answer).unwrap_or_default();
    out.push(b'\n');
    (&stream).write_all(&out)
}

/// The CLI's side: sends `request` to the node of `data_dir` and returns
/// its answer (or its error, as a sentence).
pub fn call(data_dir: &Path, request: &ControlRequest) -> Result<serde_json::Value, String> {
    let path = data_dir.join(SOCKET);
    let stream = UnixStream::connect(&path).map_err(|e| {
        format!(
            "no node is running on data dir {} ({}: {e}); start pangea-mount or pangea serve first, or pass --data-dir",
            data_dir.display(),
            path.display()
        )
    })?;
    let io = |e: std::io::Error| format!("talking to the node: {e}");
    stream.set_read_timeout(Some(IO_DEADLINE)).map_err(io)?;
    stream.set_write_timeout(Some(IO_DEADLINE)).map_err(io)?;
    let mut req = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    req.push(b'\n');
    (&stream).write_all(&req).map_err(io)?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_MESSAGE))
        .read_line(&mut line)
        .map_err(io)?;
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).map_err(|e| format!("the node's answer: {e}"))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(e.to_owned());
    }
    Ok(v.get("ok").cloned().unwrap_or(serde_json::Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_answered_and_the_socket_is_private() {
        let d = tempfile::tempdir().unwrap();
        let server = ControlServer::start(
            d.path(),
            Arc::new(|r: &ControlRequest| match r {
                ControlRequest::Status => Ok(serde_json::json!({"peers": []})),
                _ => Err("not here".into()),
            }),
        )
        .unwrap();
        let mode = std::fs::metadata(d.path().join(SOCKET))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            call(d.path(), &ControlRequest::Status).unwrap(),
            serde_json::json!({"peers": []})
        );
        assert_eq!(
            call(d.path(), &ControlRequest::Peers).unwrap_err(),
            "not here"
        );
        // A second node on the same socket is refused.
        assert!(
            ControlServer::start(
                d.path(),
                Arc::new(|_: &ControlRequest| Ok(serde_json::Value::Null))
            )
            .is_err()
        );
        drop(server);
        assert!(!d.path().join(SOCKET).exists());
        assert!(
            call(d.path(), &ControlRequest::Status)
                .unwrap_err()
                .contains("no node is running")
        );
    }
}
