//! A recording HTTP proxy between the function binary and moto: the binary's SDK cannot take the in-process
//! `CallCounter`, so this records its AWS operations on the wire instead (the query protocol's `Action=`, or the JSON
//! protocol's `X-Amz-Target`), with each request's body. One request per connection: it asks moto to close, and
//! closes in turn.
//!
//! It can also fail the way AWS does under load (`Faults`): answer a share of the ELB and EC2 calls with the service's
//! own throttling error, answer every call of a service with HTTP 503 (the service is down), or hold every call of a
//! service before forwarding it (the service is slow). Each call is noted with the time it arrived and whether it was
//! failed, so a test can read the order of the safety work.
//!
//! It can also kill the function: at the k-th write of a cleanup, it relays the request, reads moto's whole answer
//! (so AWS has applied the write), kills the process, and never hands the answer back. That is a crash at that exact
//! point, as a panic under `panic = "abort"`, an out-of-memory kill or a lost execution environment would be.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// The signing name of the service it was sent to (`elasticloadbalancing`, `ec2`, `dynamodb`, `kms`, `sns`, ...).
    pub service: String,
    /// When it arrived.
    pub at: Instant,
    /// Answered by the proxy with an error (a throttle, or its service down) instead of being forwarded.
    pub failed: bool,
}

impl Call {
    /// The claim recording the cleanup as done: the `handled` tag, or the claim item's `done` state.
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

/// AWS's documented request buckets, shared by every caller of the proxy as AWS shares them between the callers of an
/// account: ELB's account-level bucket (40, 10 a second) and its category's (RegisterTargets and DeregisterTargets
/// 20 and 4, Describe* 40 and 10, the rest 20 and 3), a call going through only if both have a token (ELB user
/// guide, "Request throttling for the ELB API"); EC2's per action (CreateTags 100 and 10,
/// ModifyNetworkInterfaceAttribute 100 and 5, other mutating actions 50 and 5, Describe* 100 and 20).
#[derive(Default)]
struct Meter {
    /// (tokens, capacity, per second, last refill) by bucket name.
    buckets: BTreeMap<String, (f64, f64, f64, Instant)>,
}

impl Meter {
    fn buckets_of(service: &str, action: &str) -> Vec<(String, f64, f64)> {
        let describe = action.starts_with("Describe");
        match service {
            "elasticloadbalancing" => {
                let category = match action {
                    "RegisterTargets" | "DeregisterTargets" => ("elb-registration", 20.0, 4.0),
                    _ if describe => ("elb-describe", 40.0, 10.0),
                    _ => ("elb-mutating", 20.0, 3.0),
                };
                vec![
                    ("elb-account".into(), 40.0, 10.0),
                    (category.0.into(), category.1, category.2),
                ]
            }
            "ec2" => {
                let (capacity, rate) = match action {
                    _ if describe => (100.0, 20.0),
                    "CreateTags" => (100.0, 10.0),
                    "ModifyNetworkInterfaceAttribute" => (100.0, 5.0),
                    _ => (50.0, 5.0),
                };
                vec![(format!("ec2:{action}"), capacity, rate)]
            }
            _ => Vec::new(),
        }
    }

    /// Whether the call finds a token in every bucket it draws on; it takes them only if so.
    fn admits(&mut self, service: &str, action: &str) -> bool {
        let now = Instant::now();
        let wanted = Meter::buckets_of(service, action);
        for (name, capacity, rate) in &wanted {
            let bucket = self
                .buckets
                .entry(name.clone())
                .or_insert((*capacity, *capacity, *rate, now));
            bucket.0 = (bucket.0 + now.duration_since(bucket.3).as_secs_f64() * bucket.2).min(bucket.1);
            bucket.3 = now;
        }
        if wanted.iter().any(|(name, ..)| self.buckets[name].0 < 1.0) {
            return false;
        }
        for (name, ..) in &wanted {
            self.buckets.get_mut(name).expect("made above").0 -= 1.0;
        }
        true
    }
}

/// How AWS misbehaves behind the proxy.
#[derive(Default)]
struct Faults {
    /// The share of ELB and EC2 calls answered with a throttling error, and the state of the generator that picks
    /// them (xorshift, seeded: a run is repeatable).
    throttle: Option<(f64, u64)>,
    /// Services (by signing name) answered with HTTP 503.
    down: BTreeSet<String>,
    /// Extra time before each call of a service is forwarded, by signing name.
    slow_services: BTreeMap<String, Duration>,
    /// AWS's request buckets, when metered.
    meter: Option<Meter>,
}

impl Faults {
    /// Whether this call is to be throttled: by AWS's buckets when metered, and by the set share of ELB and EC2 calls.
    fn throttles(&mut self, service: &str, action: &str) -> bool {
        if let Some(meter) = &mut self.meter
            && !meter.admits(service, action)
        {
            return true;
        }
        let Some((share, state)) = &mut self.throttle else {
            return false;
        };
        if service != "elasticloadbalancing" && service != "ec2" {
            return false;
        }
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        ((*state >> 11) as f64 / (1u64 << 53) as f64) < *share
    }
}

#[derive(Clone)]
pub struct Proxy {
    pub endpoint: String,
    pub calls: WireCalls,
    kill: Arc<Mutex<Kill>>,
    /// Extra time before an action is forwarded, by action.
    slow: Arc<Mutex<BTreeMap<String, Duration>>>,
    faults: Arc<Mutex<Faults>>,
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
    pub fn slow_down(&self, action: &str, by: Duration) {
        self.slow.lock().unwrap().insert(action.to_owned(), by);
    }

    /// Answer `share` of the ELB and EC2 calls (0.3: three in ten, picked by a generator seeded with `seed`) with the
    /// service's throttling error: ELB's `Throttling` (HTTP 400), EC2's `RequestLimitExceeded` (HTTP 503).
    pub fn throttle(&self, share: f64, seed: u64) {
        self.faults.lock().unwrap().throttle = Some((share, seed.max(1)));
    }

    /// Answer every call of `service` (its signing name: `dynamodb`, `kms`, `sns`) with HTTP 503.
    pub fn take_down(&self, service: &str) {
        self.faults.lock().unwrap().down.insert(service.to_owned());
    }

    /// Meter AWS's documented request buckets (see `Meter`) from now on, full.
    pub fn meter_aws_buckets(&self) {
        self.faults.lock().unwrap().meter = Some(Meter::default());
    }

    /// Bring every service back and stop throttling.
    pub fn heal(&self) {
        *self.faults.lock().unwrap() = Faults::default();
    }

    /// Hold every call of `service` (its signing name) for `by` before forwarding it.
    pub fn slow_service(&self, service: &str, by: Duration) {
        self.faults.lock().unwrap().slow_services.insert(service.to_owned(), by);
    }
}

/// The service's own error for a throttle or an outage, as its protocol shapes it: (status line, content type, body).
fn error_answer(service: &str, throttled: bool) -> (&'static str, &'static str, String) {
    match (service, throttled) {
        ("elasticloadbalancing", true) => (
            "400 Bad Request",
            "text/xml",
            "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>\
             <RequestId>proxy</RequestId></ErrorResponse>"
                .into(),
        ),
        ("ec2", true) => (
            "503 Service Unavailable",
            "text/xml",
            "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>\
             </Error></Errors><RequestID>proxy</RequestID></Response>"
                .into(),
        ),
        ("dynamodb" | "kms", _) => (
            "503 Service Unavailable",
            "application/x-amz-json-1.0",
            r#"{"__type":"ServiceUnavailableException","message":"Service unavailable"}"#.into(),
        ),
        _ => (
            "503 Service Unavailable",
            "text/xml",
            "<ErrorResponse><Error><Type>Receiver</Type><Code>ServiceUnavailable</Code><Message>Service unavailable\
             </Message></Error><RequestId>proxy</RequestId></ErrorResponse>"
                .into(),
        ),
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
        faults: Arc::default(),
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
    let mut service = String::new();
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
        if let Some(scope) = lower.strip_prefix("authorization:") {
            // Credential=<key>/<date>/<region>/<service>/aws4_request
            service = scope
                .split("credential=")
                .nth(1)
                .and_then(|c| c.split('/').nth(3))
                .unwrap_or_default()
                .to_owned();
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
    let (failed, service_pause) = {
        let mut faults = proxy.faults.lock().unwrap();
        let throttled = faults.throttles(&service, action.as_deref().unwrap_or("?"));
        let down = faults.down.contains(&service);
        let failure = (throttled || down).then(|| error_answer(&service, throttled));
        (failure, faults.slow_services.get(&service).copied())
    };
    let call = Call {
        action: action.unwrap_or_else(|| "?".into()),
        body: text,
        service,
        at: Instant::now(),
        failed: failed.is_some(),
    };
    proxy.calls.0.lock().unwrap().push(call.clone());
    let pause = proxy.slow.lock().unwrap().get(&call.action).copied();
    if let Some(pause) = pause.into_iter().chain(service_pause).max() {
        std::thread::sleep(pause);
    }
    if let Some((status, content_type, body)) = failed {
        let mut client = client;
        write!(
            client,
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return client.shutdown(std::net::Shutdown::Both);
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
