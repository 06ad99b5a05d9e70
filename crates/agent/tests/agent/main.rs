//! The real `spot-agent` binary against an IMDSv2 emulator and a stand-in for the Lambda API (through
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT` and `AWS_ENDPOINT_URL`): it gets a token before reading, hands each notice to
//! the function exactly once with the signed identity, survives bad metadata and a failing Lambda, and exits 0 on
//! SIGTERM and SIGINT. On Kubernetes (`NODE_NAME`, and a stub API server through `KUBECONFIG`), it labels its own Node
//! out of the external load balancers on a notice, once, and removes only its own label when the node comes back.
//! `probes` covers its listener: the probes and the metrics.

mod imds;
mod kubernetes;
mod probes;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use imds::Imds;
use kubernetes::KubeApi;
use serde_json::{Value, json};
use spot_cleanup_test_support::http::{HttpServer, Reply, Request};

const FUNCTION: &str = "spot-cleanup";
const INVOKE_PATH: &str = "/2015-03-31/functions/spot-cleanup/invocations";
const INSTANCE: &str = "i-0123456789abcdef0";
const SIGNATURE: &str = "dGhpcyBpcyB0aGUgc2lnbmF0dXJl\nb2YgdGhlIGRvY3VtZW50\n";
const WAIT: Duration = Duration::from_secs(30);

/// Shaped like the real document: pretty-printed, more fields than the agent reads.
fn identity_document() -> String {
    format!(
        "{{\n  \"accountId\" : \"123456789012\",\n  \"architecture\" : \"x86_64\",\n  \"availabilityZone\" : \
         \"eu-west-1b\",\n  \"imageId\" : \"ami-0abcdef1234567890\",\n  \"instanceId\" : \"{INSTANCE}\",\n  \
         \"instanceType\" : \"m5.large\",\n  \"pendingTime\" : \"2026-11-22T00:00:00Z\",\n  \"region\" : \
         \"eu-west-1\",\n  \"version\" : \"2017-09-30\"\n}}"
    )
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The payload the function must receive for a notice.
fn expected_payload(action: &str, time: &str) -> Value {
    json!({
        "instance_id": INSTANCE,
        "action": action,
        "time": time,
        "region": "eu-west-1",
        "account": "123456789012",
        "identity_document": identity_document(),
        "identity_signature": SIGNATURE,
    })
}

/// The Lambda API: answers the first `failures` invokes with a 500, then accepts each with 202, as an asynchronous
/// invoke does.
fn lambda(failures: usize) -> HttpServer {
    let seen = Mutex::new(0);
    HttpServer::start(move |_| {
        let mut n = seen.lock().unwrap();
        *n += 1;
        if *n <= failures {
            Reply::new(500, r#"{"message":"internal failure"}"#).header("x-amzn-errortype", "ServiceException")
        } else {
            Reply::new(202, "").header("x-amzn-requestid", format!("req-{n}"))
        }
    })
}

fn invokes(lambda: &HttpServer) -> Vec<Request> {
    lambda.requests()
}

/// Every invoke is an asynchronous one of our function, signed for the instance's region.
fn assert_is_event_invoke(request: &Request) {
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, INVOKE_PATH);
    assert_eq!(request.header("x-amz-invocation-type"), Some("Event"), "{request:?}");
    let auth = request.header("authorization").unwrap_or_default();
    assert!(
        auth.contains("/eu-west-1/lambda/aws4_request"),
        "signed for the instance's region: {auth}"
    );
}

fn payload(request: &Request) -> Value {
    serde_json::from_slice(&request.body)
        .unwrap_or_else(|e| panic!("the payload is JSON ({e}): {}", request.body_text()))
}

/// The agent process; killed when the test ends, however it ends.
struct Agent {
    child: Child,
    logs: Arc<Mutex<Vec<Value>>>,
}

impl Agent {
    fn start(imds_endpoint: &str, lambda: &HttpServer, extra: &[(&str, &str)]) -> Agent {
        let mut command = Command::new(env!("CARGO_BIN_EXE_spot-agent"));
        command
            .env_clear()
            .env("SPOT_CLEANUP_FUNCTION", FUNCTION)
            .env("SPOT_AGENT_POLL_INTERVAL", "1")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds_endpoint)
            .env("AWS_ENDPOINT_URL", lambda.url())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_CONFIG_FILE", "/nonexistent/config")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
            .env("RUST_LOG", "info");
        for (name, value) in extra {
            command.env(name, value);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spot-agent starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let logs = logs.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                    logs.lock().unwrap().push(value);
                }
            });
        }
        Agent { child, logs }
    }

    fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }

    /// Log lines whose message contains `text`.
    fn lines(&self, text: &str) -> Vec<Value> {
        self.logs()
            .into_iter()
            .filter(|l| l["message"].as_str().is_some_and(|m| m.contains(text)))
            .collect()
    }

    fn wait_for_line(&self, text: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self.lines(text).into_iter().next() {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {text:?}; logs: {:#?}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("the agent can be waited for") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not exit; logs: {:#?}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every line the agent wrote is one JSON object with a level and a timestamp.
    fn assert_json_logs(&self) {
        for line in self.logs() {
            assert!(
                line.is_object() && line["level"].is_string() && line["timestamp"].is_string(),
                "not a JSON log line: {line}"
            );
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait for `rounds` more reads of `path`, so that "nothing more happened" is proven over real polls, not time.
fn wait_rounds(imds: &Imds, path: &str, status: u16, rounds: usize) {
    imds.wait_for(path, status, imds.count(path, status) + rounds);
}

#[test]
fn a_spot_interruption_is_handed_to_the_function_once_with_the_signed_identity() {
    let imds = Imds::start(&identity_document(), SIGNATURE);
    let lambda = lambda(0);
    let mut agent = Agent::start(&imds.endpoint(), &lambda, &[]);

    // Before a notice, the path is 404 and nothing is invoked.
    imds.wait_for(imds::INSTANCE_ACTION_PATH, 404, 2);
    assert!(invokes(&lambda).is_empty());

    let time = rfc3339(Utc::now() + TimeDelta::minutes(2));
    imds.set(
        imds::INSTANCE_ACTION_PATH,
        Some(&format!(r#"{{"action": "terminate", "time": "{time}"}}"#)),
    );
    lambda.wait_for("an invoke", WAIT, |r| !r.is_empty());
    // The notice stays in metadata until the end: later rounds see it again and invoke nothing more.
    wait_rounds(&imds, imds::INSTANCE_ACTION_PATH, 200, 3);
    let sent = invokes(&lambda);
    assert_eq!(sent.len(), 1, "exactly one invoke per notice");
    assert_is_event_invoke(&sent[0]);
    assert_eq!(payload(&sent[0]), expected_payload("terminate", &time));
    let accepted = agent.wait_for_line("accepted the notice");
    assert_eq!(accepted["attempts"], 1);
    assert_eq!(accepted["instance_id"], INSTANCE);

    // The token flow: a token first, with a TTL, and every read carried a token the emulator issued.
    let answers = imds.answers();
    assert_eq!(answers[0].request.method, "PUT");
    assert_eq!(answers[0].request.path, imds::TOKEN_PATH);
    assert_eq!(answers[0].request.header(imds::TTL_HEADER), Some("21600"));
    let reads: Vec<_> = answers.iter().filter(|a| a.request.method == "GET").collect();
    assert!(reads.iter().all(|a| a.status != 401), "no read without a valid token");
    assert_eq!(imds.count(imds::TOKEN_PATH, 200), 1, "a six-hour token is reused");

    agent.signal("TERM");
    assert_eq!(agent.wait_exit().code(), Some(0));
    agent.wait_for_line("stopping");
    agent.assert_json_logs();
}

#[test]
fn rebalance_and_scale_in_are_handed_on_once_each_and_only_terminated_counts() {
    let imds = Imds::start(&identity_document(), SIGNATURE);
    imds.set(imds::LIFECYCLE_STATE_PATH, Some("InService"));
    let lambda = lambda(0);
    let mut agent = Agent::start(&imds.endpoint(), &lambda, &[]);

    wait_rounds(&imds, imds::LIFECYCLE_STATE_PATH, 200, 2);
    assert!(invokes(&lambda).is_empty(), "InService is not a notice");

    imds.set(imds::REBALANCE_PATH, Some(r#"{"noticeTime": "2026-11-22T01:00:00Z"}"#));
    lambda.wait_for("the rebalance invoke", WAIT, |r| r.len() == 1);
    imds.set(imds::LIFECYCLE_STATE_PATH, Some("Terminated"));
    lambda.wait_for("the scale-in invoke", WAIT, |r| r.len() == 2);
    wait_rounds(&imds, imds::LIFECYCLE_STATE_PATH, 200, 3);

    let sent = invokes(&lambda);
    assert_eq!(sent.len(), 2, "one invoke per notice");
    for request in &sent {
        assert_is_event_invoke(request);
    }
    assert_eq!(payload(&sent[0]), expected_payload("rebalance", "2026-11-22T01:00:00Z"));
    let scale_in = payload(&sent[1]);
    let seen_at = scale_in["time"].as_str().expect("a time");
    DateTime::parse_from_rfc3339(seen_at).expect("the time the agent saw the state, in RFC 3339");
    assert_eq!(scale_in, expected_payload("scale-in", seen_at));

    agent.signal("INT");
    assert_eq!(agent.wait_exit().code(), Some(0));
    agent.assert_json_logs();
}

#[test]
fn malformed_metadata_is_reported_once_and_never_invokes() {
    let imds = Imds::start(&identity_document(), SIGNATURE);
    imds.set(imds::INSTANCE_ACTION_PATH, Some("{\"action\": \"terminate\""));
    imds.set(imds::REBALANCE_PATH, Some(r#"{"noticeTime": "soon"}"#));
    imds.set(imds::LIFECYCLE_STATE_PATH, Some("<html>"));
    let lambda = lambda(0);
    let agent = Agent::start(&imds.endpoint(), &lambda, &[]);

    wait_rounds(&imds, imds::LIFECYCLE_STATE_PATH, 200, 3);
    assert!(invokes(&lambda).is_empty());
    let reported = agent.lines("ignoring a malformed answer");
    let paths: Vec<_> = reported
        .iter()
        .map(|l| l["path"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        paths,
        [
            imds::INSTANCE_ACTION_PATH,
            imds::REBALANCE_PATH,
            imds::LIFECYCLE_STATE_PATH
        ],
        "each path's garbage is reported once, not every round"
    );

    // An action Spot does not have is refused too; a real one then goes through.
    imds.set(
        imds::INSTANCE_ACTION_PATH,
        Some(r#"{"action": "reboot", "time": "2026-11-22T01:02:00Z"}"#),
    );
    agent.wait_for_line("ignoring a malformed answer");
    wait_rounds(&imds, imds::INSTANCE_ACTION_PATH, 200, 2);
    assert!(invokes(&lambda).is_empty());
    assert!(
        agent.lines("ignoring a malformed answer")[3]["error"]
            .as_str()
            .is_some_and(|e| e.contains("reboot"))
    );
    imds.set(
        imds::INSTANCE_ACTION_PATH,
        Some(r#"{"action": "stop", "time": "2026-11-22T01:02:00Z"}"#),
    );
    lambda.wait_for("the stop invoke", WAIT, |r| !r.is_empty());
    assert_eq!(
        payload(&invokes(&lambda)[0]),
        expected_payload("stop", "2026-11-22T01:02:00Z")
    );
}

#[test]
fn reads_without_a_token_are_refused_and_a_refused_token_is_replaced() {
    let imds = Imds::start(&identity_document(), SIGNATURE);
    let lambda = lambda(0);

    // The emulator is strict, like IMDSv2 with tokens required: a read without a token gets 401.
    let plain = std::net::TcpStream::connect(("127.0.0.1", imds.server().port)).unwrap();
    let mut plain_writer = plain.try_clone().unwrap();
    std::io::Write::write_all(
        &mut plain_writer,
        format!("GET {} HTTP/1.1\r\nhost: x\r\n\r\n", imds::DOCUMENT_PATH).as_bytes(),
    )
    .unwrap();
    let mut status = String::new();
    BufReader::new(plain).read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");

    let agent = Agent::start(&imds.endpoint(), &lambda, &[]);
    imds.wait_for(imds::INSTANCE_ACTION_PATH, 404, 1);
    imds.revoke_tokens();
    // The agent's cached token is refused; it gets a new one and goes on reading.
    imds.wait_until("a read with the revoked token", |answers| {
        answers.iter().any(|a| a.status == 401)
    });
    imds.wait_for(imds::TOKEN_PATH, 200, 2);
    wait_rounds(&imds, imds::INSTANCE_ACTION_PATH, 404, 2);
    agent.wait_for_line("refused the session token");

    imds.set(imds::REBALANCE_PATH, Some(r#"{"noticeTime": "2026-11-22T01:00:00Z"}"#));
    lambda.wait_for("an invoke", WAIT, |r| r.len() == 1);
}

#[test]
fn short_lived_tokens_are_renewed_and_never_used_expired() {
    let imds = Imds::start(&identity_document(), SIGNATURE);
    // Tokens that live one second: the client must not keep using one past its TTL.
    imds.limit_token_ttl(1);
    let lambda = lambda(0);
    let _agent = Agent::start(&imds.endpoint(), &lambda, &[]);

    imds.wait_for(imds::INSTANCE_ACTION_PATH, 404, 4);
    imds.set(
        imds::INSTANCE_ACTION_PATH,
        Some(r#"{"action": "hibernate", "time": "2026-11-22T01:02:00Z"}"#),
    );
    lambda.wait_for("an invoke", WAIT, |r| r.len() == 1);
    assert!(
        imds.count(imds::TOKEN_PATH, 200) >= 4,
        "a new token as each one expires"
    );
    let refused: Vec<_> = imds.answers().into_iter().filter(|a| a.status == 401).collect();
    assert!(refused.is_empty(), "no read with an expired token: {refused:?}");
    assert_eq!(
        payload(&invokes(&lambda)[0]),
        expected_payload("hibernate", "2026-11-22T01:02:00Z")
    );
}

#[test]
fn a_token_that_never_arrives_is_reported_with_the_hop_limit_fix_and_the_agent_recovers() {
    let imds = Imds::start(&identity_document(), SIGNATURE);
    // What a pod sees when the hop limit is 1: the token's answer never arrives in time.
    imds.slow_down_tokens(3, Duration::from_secs(3));
    let lambda = lambda(0);
    let agent = Agent::start(&imds.endpoint(), &lambda, &[]);

    let failed = agent.wait_for_line("instance metadata failed");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("session token"), "{error}");
    assert!(error.contains("hop limit to 2"), "the log says what to do: {error}");
    assert!(error.contains("--http-put-response-hop-limit 2"), "{error}");

    agent.wait_for_line("instance metadata answers again");
    imds.set(
        imds::INSTANCE_ACTION_PATH,
        Some(r#"{"action": "terminate", "time": "2026-11-22T01:02:00Z"}"#),
    );
    lambda.wait_for("an invoke", WAIT, |r| r.len() == 1);
    assert_eq!(
        agent.lines("instance metadata failed").len(),
        1,
        "one line for the whole streak of failures"
    );
}

#[test]
fn a_failed_invoke_is_retried_until_lambda_accepts_it_and_not_after() {
    let imds = Imds::start(&identity_document(), SIGNATURE);
    let lambda = lambda(2);
    let agent = Agent::start(&imds.endpoint(), &lambda, &[]);

    let time = rfc3339(Utc::now() + TimeDelta::minutes(2));
    imds.set(
        imds::INSTANCE_ACTION_PATH,
        Some(&format!(r#"{{"action": "terminate", "time": "{time}"}}"#)),
    );
    let accepted = agent.wait_for_line("accepted the notice");
    assert_eq!(accepted["attempts"], 3);
    wait_rounds(&imds, imds::INSTANCE_ACTION_PATH, 200, 3);
    let sent = invokes(&lambda);
    assert_eq!(sent.len(), 3, "two failures, one success, then nothing");
    for request in &sent {
        assert_is_event_invoke(request);
        assert_eq!(payload(request), expected_payload("terminate", &time));
    }
    assert_eq!(agent.lines("invoke failed; retrying").len(), 2);
}

#[test]
fn retries_stop_at_the_termination_time() {
    let imds = Imds::start(&identity_document(), SIGNATURE);
    let lambda = lambda(usize::MAX);
    let agent = Agent::start(&imds.endpoint(), &lambda, &[]);

    let time = rfc3339(Utc::now() + TimeDelta::seconds(4));
    imds.set(
        imds::INSTANCE_ACTION_PATH,
        Some(&format!(r#"{{"action": "terminate", "time": "{time}"}}"#)),
    );
    let gave_up = agent.wait_for_line("giving up");
    let attempts = gave_up["attempts"].as_u64().expect("attempts");
    assert!(attempts >= 2, "it retried before the deadline: {gave_up}");
    assert!(
        gave_up["error"]
            .as_str()
            .is_some_and(|e| e.contains("ServiceException")),
        "{gave_up}"
    );
    wait_rounds(&imds, imds::INSTANCE_ACTION_PATH, 200, 3);
    assert_eq!(
        invokes(&lambda).len() as u64,
        attempts,
        "nothing is sent after giving up"
    );
}

#[test]
fn without_a_function_it_refuses_to_start_and_without_metadata_it_still_stops_cleanly() {
    let lambda = lambda(0);
    let mut command = Command::new(env!("CARGO_BIN_EXE_spot-agent"));
    let output = command.env_clear().output().expect("spot-agent runs");
    assert_eq!(output.status.code(), Some(2));
    let line: Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
    assert!(
        line["error"]
            .as_str()
            .is_some_and(|e| e.contains("SPOT_CLEANUP_FUNCTION")),
        "{line}"
    );

    // Nothing listens at this metadata endpoint: the agent keeps trying, and a SIGTERM still ends it with 0.
    let closed = format!("http://127.0.0.1:{}", spot_cleanup_test_support::free_port());
    let mut agent = Agent::start(&closed, &lambda, &[]);
    agent.wait_for_line("instance metadata failed");
    agent.signal("TERM");
    assert_eq!(agent.wait_exit().code(), Some(0));
    assert!(invokes(&lambda).is_empty());
}

/// The DaemonSet's Kubernetes environment: the Node's name from the downward API, and (instead of the pod's service
/// account) a kubeconfig for the stub API server.
fn on_kubernetes(api: &KubeApi) -> [(&'static str, String); 2] {
    [
        ("NODE_NAME", kubernetes::NODE.to_owned()),
        ("KUBECONFIG", api.kubeconfig()),
    ]
}

fn start_on(imds: &Imds, lambda: &HttpServer, env: &[(&str, String)]) -> Agent {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Agent::start(&imds.endpoint(), lambda, &env)
}

fn patch_labels(request: &Request) -> Value {
    let body: Value = serde_json::from_slice(&request.body).expect("a JSON patch");
    let metadata = body["metadata"].as_object().expect("a metadata patch");
    let mut keys: Vec<&str> = metadata.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["labels", "resourceVersion"],
        "labels only, guarded by the version read: {body}"
    );
    assert_eq!(body.as_object().unwrap().len(), 1, "nothing but metadata: {body}");
    metadata["labels"].clone()
}

/// Every request went to the agent's own Node, with the service account's token, only read or patched it, and asked
/// for its metadata only.
fn assert_only_own_node(api: &KubeApi) {
    for request in api.requests() {
        assert_eq!(
            request.path.split('?').next(),
            Some(kubernetes::NODE_PATH),
            "{request:?}"
        );
        assert!(matches!(request.method.as_str(), "GET" | "PATCH"), "{request:?}");
        let accept = request.header("accept").unwrap_or_default();
        assert!(accept.contains("as=PartialObjectMetadata"), "metadata only: {accept}");
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {}", kubernetes::TOKEN).as_str())
        );
    }
}

#[test]
fn a_notice_labels_the_agents_own_node_once_and_touches_nothing_else() {
    let imds = Imds::start(&identity_document(), SIGNATURE);
    let lambda = lambda(0);
    let api = KubeApi::start(&[("kubernetes.io/os", "linux")]);
    let agent = start_on(&imds, &lambda, &on_kubernetes(&api));

    // At start, one look at the node: nothing of ours on it, nothing to remove.
    api.wait_for("the look at start", |r| r.len() == 1);
    wait_rounds(&imds, imds::INSTANCE_ACTION_PATH, 404, 3);
    assert!(api.patches().is_empty());

    let time = rfc3339(Utc::now() + TimeDelta::minutes(2));
    imds.set(
        imds::INSTANCE_ACTION_PATH,
        Some(&format!(r#"{{"action": "terminate", "time": "{time}"}}"#)),
    );
    api.wait_for("the label", |r| r.iter().any(|r| r.method == "PATCH"));
    lambda.wait_for("the invoke", WAIT, |r| r.len() == 1);
    wait_rounds(&imds, imds::INSTANCE_ACTION_PATH, 200, 3);

    let patches = api.patches();
    assert_eq!(patches.len(), 1, "exactly one patch per notice");
    assert_eq!(patch_labels(&patches[0]), json!({kubernetes::LABEL: "spot-cleanup"}));
    assert_eq!(api.label().as_deref(), Some("spot-cleanup"));
    assert_only_own_node(&api);
    let line = agent.wait_for_line("node excluded from external load balancers");
    assert_eq!(line["changed"], true);
    assert_eq!(payload(&invokes(&lambda)[0]), expected_payload("terminate", &time));
}

#[test]
fn a_label_written_meanwhile_is_never_overwritten() {
    let imds = Imds::start(&identity_document(), SIGNATURE);
    let lambda = lambda(0);
    let api = KubeApi::start(&[]);
    let _agent = start_on(&imds, &lambda, &on_kubernetes(&api));
    api.wait_for("the look at start", |r| r.len() == 1);

    // Between the agent's read and its patch, someone else changes the node: the patch names the version it read,
    // the API server refuses it, and the agent reads again before patching.
    api.race_next_read();
    imds.set(imds::LIFECYCLE_STATE_PATH, Some("Terminated"));
    api.wait_for("the second patch", |r| {
        r.iter().filter(|r| r.method == "PATCH").count() == 2
    });
    wait_rounds(&imds, imds::LIFECYCLE_STATE_PATH, 200, 3);

    let patches = api.patches();
    assert_eq!(patches.len(), 2, "one refused as stale, one applied");
    let versions: Vec<Value> = patches
        .iter()
        .map(|p| serde_json::from_slice::<Value>(&p.body).unwrap()["metadata"]["resourceVersion"].clone())
        .collect();
    assert_eq!(versions, [json!("99"), json!("100")]);
    assert_eq!(api.label().as_deref(), Some("spot-cleanup"));
    assert_only_own_node(&api);
}

#[test]
fn a_restarted_agent_on_a_node_with_our_label_removes_it_once() {
    let imds = Imds::start(&identity_document(), SIGNATURE);
    let lambda = lambda(0);
    // The node was stopped with our label on it, and is back: no notice in metadata.
    let api = KubeApi::start(&[(kubernetes::LABEL, "spot-cleanup")]);
    let agent = start_on(&imds, &lambda, &on_kubernetes(&api));

    api.wait_for("the label's removal", |r| r.iter().any(|r| r.method == "PATCH"));
    wait_rounds(&imds, imds::INSTANCE_ACTION_PATH, 404, 3);
    let patches = api.patches();
    assert_eq!(patches.len(), 1, "removed once");
    assert_eq!(patch_labels(&patches[0]), json!({kubernetes::LABEL: null}));
    assert_eq!(api.label(), None);
    assert_eq!(agent.wait_for_line("our exclusion label checked")["changed"], true);
    assert!(invokes(&lambda).is_empty());

    // The next interruption labels it again, once.
    imds.set(
        imds::INSTANCE_ACTION_PATH,
        Some(r#"{"action": "stop", "time": "2026-11-22T01:02:00Z"}"#),
    );
    api.wait_for("the new label", |r| {
        r.iter().filter(|r| r.method == "PATCH").count() == 2
    });
    wait_rounds(&imds, imds::INSTANCE_ACTION_PATH, 200, 3);
    assert_eq!(api.patches().len(), 2);
    assert_eq!(api.label().as_deref(), Some("spot-cleanup"));
    assert_only_own_node(&api);
}

#[test]
fn another_tools_label_and_a_pending_notice_are_left_alone() {
    // NTH (excludeFromLoadBalancers) labelled the node: it is excluded already, and the label is theirs to remove.
    let imds = Imds::start(&identity_document(), SIGNATURE);
    let lambda_api = lambda(0);
    let theirs = KubeApi::start(&[(kubernetes::LABEL, "aws-node-termination-handler")]);
    let _agent = start_on(&imds, &lambda_api, &on_kubernetes(&theirs));
    theirs.wait_for("the look at start", |r| r.len() == 1);
    imds.set(imds::LIFECYCLE_STATE_PATH, Some("Terminated"));
    lambda_api.wait_for("the invoke", WAIT, |r| r.len() == 1);
    theirs.wait_for("the look at the notice", |r| r.len() == 2);
    wait_rounds(&imds, imds::LIFECYCLE_STATE_PATH, 200, 3);
    assert!(theirs.patches().is_empty(), "{:?}", theirs.patches());
    assert_eq!(theirs.label().as_deref(), Some("aws-node-termination-handler"));

    // An agent restarted while its notice is still pending keeps the node excluded: nothing to patch.
    let imds = Imds::start(&identity_document(), SIGNATURE);
    let lambda_api = lambda(0);
    imds.set(
        imds::INSTANCE_ACTION_PATH,
        Some(&format!(
            r#"{{"action": "terminate", "time": "{}"}}"#,
            rfc3339(Utc::now() + TimeDelta::minutes(1))
        )),
    );
    let ours = KubeApi::start(&[(kubernetes::LABEL, "spot-cleanup")]);
    let _agent = start_on(&imds, &lambda_api, &on_kubernetes(&ours));
    lambda_api.wait_for("the invoke", WAIT, |r| r.len() == 1);
    ours.wait_for("the look at the notice", |r| !r.is_empty());
    wait_rounds(&imds, imds::INSTANCE_ACTION_PATH, 200, 3);
    assert!(ours.patches().is_empty(), "{:?}", ours.patches());
    assert_eq!(ours.label().as_deref(), Some("spot-cleanup"));
}

#[test]
fn without_kubernetes_or_when_switched_off_the_agent_never_tries() {
    let api = KubeApi::start(&[]);
    let kubeconfig = ("KUBECONFIG", api.kubeconfig());
    let switched_off = [
        // The systemd agent: no NODE_NAME (even with a kubeconfig lying around).
        vec![kubeconfig.clone()],
        // The DaemonSet with labelling switched off.
        vec![
            ("NODE_NAME", kubernetes::NODE.to_owned()),
            kubeconfig.clone(),
            ("SPOT_AGENT_LABEL_NODE", "false".to_owned()),
        ],
    ];
    for env in switched_off {
        let imds = Imds::start(&identity_document(), SIGNATURE);
        let lambda_api = lambda(0);
        let _agent = start_on(&imds, &lambda_api, &env);
        imds.set(imds::LIFECYCLE_STATE_PATH, Some("Terminated"));
        lambda_api.wait_for("the invoke", WAIT, |r| r.len() == 1);
        wait_rounds(&imds, imds::LIFECYCLE_STATE_PATH, 200, 3);
    }
    assert!(api.requests().is_empty(), "{:?}", api.requests());
}
