//! A recording HTTP proxy between the function binary and moto: the binary's SDK cannot take the in-process
//! `CallCounter`, so this records its AWS operations on the wire instead (the query protocol's `Action=`, or the JSON
//! protocol's `X-Amz-Target`), with each request's body. One request per connection: it asks moto to close, and
//! closes in turn.
//!
//! It can also kill the function: at the k-th write of a cleanup, it relays the request, reads moto's whole answer
//! (so AWS has applied the write), kills the process, and never hands the answer back. That is a crash at that exact
//! point, as a panic under `panic = "abort"`, an out-of-memory kill or a lost execution environment would be.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// The calls that change something in AWS.
pub const WRITES: [&str; 13] = [
    "CreateTags",
    "DeleteTags",
    "ModifyNetworkInterfaceAttribute",
    "DeregisterTargets",
    "RegisterTargets",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
    "Publish",
    "CompleteLifecycleAction",
    "RecordLifecycleActionHeartbeat",
    "ModifyInstanceAttribute",
];

/// One request as it crossed the proxy.
#[derive(Clone, Debug)]
pub struct Call {
    pub action: String,
    pub body: String,
}

impl Call {
    /// The delivery marker recording the cleanup as done: the `handled` tag, or the claim item's `done` state.
    pub fn marks_done(&self) -> bool {
        (self.action == "CreateTags" && self.body.contains("spot-cleanup%3Ahandled"))
            || (self.action == "UpdateItem" && self.body.contains("claim#") && self.body.contains(r#"{"S":"done"}"#))
    }

    /// A write a cleanup depends on. A claim's renewal is not one: it writes nothing a retry reads but the lease,
    /// and the cut right after the claim itself already covers a claim held by a process that died.
    pub fn is_cleanup_write(&self, seen_claim_keys: &mut Vec<String>) -> bool {
        if !WRITES.contains(&self.action.as_str()) {
            return false;
        }
        if self.action == "UpdateItem" && self.body.contains("SET lease_until = :until") {
            return false;
        }
        if self.action == "CreateTags" && self.body.contains("spot-cleanup%3Aclaim%3A") {
            let key = self
                .body
                .split('&')
                .find_map(|pair| pair.strip_prefix("Tag.1.Key="))
                .unwrap_or_default()
                .to_owned();
            if seen_claim_keys.contains(&key) {
                return false;
            }
            seen_claim_keys.push(key);
        }
        true
    }
}

#[derive(Clone, Default)]
pub struct WireCalls(Arc<Mutex<Vec<Call>>>);

impl WireCalls {
    /// Every operation so far, in order.
    pub fn sequence(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.action).collect()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.0.lock().unwrap().clone()
    }

    /// The writes a cleanup depends on, in order (see `Call::is_cleanup_write`).
    pub fn cleanup_writes(&self) -> Vec<Call> {
        let mut claims = Vec::new();
        self.calls()
            .into_iter()
            .filter(|c| c.is_cleanup_write(&mut claims))
            .collect()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    /// The groups each ModifyNetworkInterfaceAttribute asked for, by ENI, in the order they were sent.
    pub fn modifications(&self) -> BTreeMap<String, Vec<BTreeSet<String>>> {
        let mut asked: BTreeMap<String, Vec<BTreeSet<String>>> = BTreeMap::new();
        for call in self
            .calls()
            .iter()
            .filter(|c| c.action == "ModifyNetworkInterfaceAttribute")
        {
            let mut eni = String::new();
            let mut groups = BTreeSet::new();
            for pair in call.body.split('&') {
                if let Some(id) = pair.strip_prefix("NetworkInterfaceId=") {
                    eni = id.to_owned();
                } else if let Some((key, group)) = pair.split_once('=')
                    && key.starts_with("SecurityGroupId.")
                {
                    groups.insert(group.to_owned());
                }
            }
            asked.entry(eni).or_default().push(groups);
        }
        asked
    }

    /// The writes sent so far (see `WRITES`), by action.
    pub fn writes(&self) -> Vec<String> {
        self.sequence()
            .into_iter()
            .filter(|a| WRITES.contains(&a.as_str()))
            .collect()
    }
}

/// When to kill which process.
#[derive(Default)]
struct Kill {
    /// Kill after the k-th cleanup write (1-based) has been applied.
    at: Option<usize>,
    pid: u32,
    writes: usize,
    claim_keys: Vec<String>,
    killed: bool,
}

#[derive(Clone)]
pub struct Proxy {
    pub endpoint: String,
    pub calls: WireCalls,
    kill: Arc<Mutex<Kill>>,
    /// Extra time before an action is forwarded, by action.
    slow: Arc<Mutex<BTreeMap<String, std::time::Duration>>>,
}

impl Proxy {
    /// Kill process `pid` right after the `at`-th cleanup write from now is applied.
    pub fn kill_at(&self, at: usize, pid: u32) {
        *self.kill.lock().unwrap() = Kill {
            at: Some(at),
            pid,
            ..Kill::default()
        };
    }

    /// Stop killing.
    pub fn disarm(&self) {
        *self.kill.lock().unwrap() = Kill::default();
    }

    pub fn killed(&self) -> bool {
        self.kill.lock().unwrap().killed
    }

    /// Hold every `action` for `by` before forwarding it, as a loaded service would.
    pub fn slow_down(&self, action: &str, by: std::time::Duration) {
        self.slow.lock().unwrap().insert(action.to_owned(), by);
    }
}

/// Start the proxy in front of `upstream` (`http://127.0.0.1:<port>`); returns its endpoint and the recorder.
pub fn start(upstream: &str) -> (String, WireCalls) {
    let proxy = start_proxy(upstream);
    (proxy.endpoint, proxy.calls)
}

/// The proxy with its kill switch.
pub fn start_proxy(upstream: &str) -> Proxy {
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = Proxy {
        endpoint: format!("http://{}", listener.local_addr().unwrap()),
        calls: WireCalls::default(),
        kill: Arc::new(Mutex::new(Kill::default())),
        slow: Arc::default(),
    };
    let shared = proxy.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let (upstream, proxy) = (upstream.clone(), shared.clone());
            std::thread::spawn(move || {
                let _ = relay(client, &upstream, &proxy);
            });
        }
    });
    proxy
}

fn relay(client: TcpStream, upstream: &str, proxy: &Proxy) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut length = 0usize;
    let mut target = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("x-amz-target:") {
            target = line
                .split(':')
                .nth(1)
                .map(|t| t.trim().rsplit('.').next().unwrap_or("").to_owned());
        }
        if lower.starts_with("connection:") {
            continue;
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        head.extend_from_slice(line.as_bytes());
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let text = String::from_utf8_lossy(&body).into_owned();
    let action = target.or_else(|| {
        text.split('&')
            .find_map(|pair| pair.strip_prefix("Action=").map(str::to_owned))
    });
    let call = Call {
        action: action.unwrap_or_else(|| "?".into()),
        body: text,
    };
    proxy.calls.0.lock().unwrap().push(call.clone());
    let pause = proxy.slow.lock().unwrap().get(&call.action).copied();
    if let Some(pause) = pause {
        std::thread::sleep(pause);
    }
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(&head)?;
    server.write_all(&body)?;
    let mut response = Vec::new();
    server.read_to_end(&mut response)?;
    if kill_now(proxy, &call) {
        // AWS applied the write; the process dies before it hears so.
        return Ok(());
    }
    let mut client = client;
    client.write_all(&response)?;
    client.shutdown(std::net::Shutdown::Both)
}

/// Whether this call is the one to die after; if so, the process is killed before this returns.
fn kill_now(proxy: &Proxy, call: &Call) -> bool {
    let mut kill = proxy.kill.lock().unwrap();
    let Some(at) = kill.at else { return false };
    if kill.killed {
        // Anything still in flight from the dead process goes unanswered too.
        return true;
    }
    let mut keys = std::mem::take(&mut kill.claim_keys);
    let counted = call.is_cleanup_write(&mut keys);
    kill.claim_keys = keys;
    if !counted {
        return false;
    }
    kill.writes += 1;
    if kill.writes < at {
        return false;
    }
    let _ = Command::new("kill").args(["-KILL", &kill.pid.to_string()]).status();
    kill.killed = true;
    true
}
