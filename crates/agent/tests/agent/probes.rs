//! The agent's listener (`SPOT_AGENT_LISTEN_ADDRESS`): the probes answer while it polls, readiness follows what
//! instance metadata does, `/metrics` counts a notice once and every Invoke call, and bad requests change nothing.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use spot_cleanup_test_support::{free_port, wait_for_port};

use super::{Agent, SIGNATURE, WAIT, identity_document, imds, invokes, lambda, rfc3339, wait_rounds};
use imds::Imds;

/// One request on its own connection: (status, content type, body).
fn get(port: u16, method: &str, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the listener accepts");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: agent\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("an answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers, then a body");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
    let content_type = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_owned))
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// Ask `path` until it answers `status` with a body containing `text`.
fn wait_for_answer(port: u16, path: &str, status: u16, text: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (got, _, body) = get(port, "GET", path);
        if got == status && body.contains(text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still answers {got} {body:?}, not {status} {text:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of one series in a Prometheus text page.
fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{page}"))
}

fn listening(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

#[test]
fn the_probes_answer_while_it_polls_and_readiness_follows_instance_metadata() {
    let imds = Imds::start(&identity_document(), SIGNATURE);
    // No identity document yet: the agent cannot know its instance, so it is alive but not ready.
    imds.set(imds::DOCUMENT_PATH, None);
    // Tokens that live a second, so that slow tokens later make whole rounds fail.
    imds.limit_token_ttl(1);
    let lambda = lambda(0);
    let port = free_port();
    let address = listening(port);
    let agent = Agent::start(&imds.endpoint(), &lambda, &[("SPOT_AGENT_LISTEN_ADDRESS", &address)]);
    wait_for_port(port, "the agent's listener");

    imds.wait_for(imds::DOCUMENT_PATH, 404, 2);
    assert_eq!(get(port, "GET", "/healthz").0, 200, "alive while the rounds go on");
    let (status, content_type, body) = get(port, "GET", "/readyz");
    assert_eq!((status, body.as_str()), (503, "reading the instance identity\n"));
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert_eq!(get(port, "GET", "/metrics").0, 404, "metrics are off unless asked for");

    imds.set(imds::DOCUMENT_PATH, Some(&identity_document()));
    wait_for_answer(port, "/readyz", 200, "watching");
    agent.wait_for_line("serving the probes");

    // Instance metadata stops answering (no token comes in time): still alive, no longer ready; then back.
    imds.slow_down_tokens(3, Duration::from_secs(3));
    wait_for_answer(port, "/readyz", 503, "instance metadata is not answering");
    assert_eq!(
        get(port, "GET", "/healthz"),
        (200, "text/plain; charset=utf-8".into(), "polling\n".into())
    );
    wait_for_answer(port, "/readyz", 200, "watching");
    wait_rounds(&imds, imds::INSTANCE_ACTION_PATH, 404, 2);
    assert_eq!(get(port, "GET", "/healthz").0, 200);
    assert!(invokes(&lambda).is_empty());
}

#[test]
fn the_metrics_count_a_notice_once_and_every_invoke_call() {
    let imds = Imds::start(&identity_document(), SIGNATURE);
    // The first Invoke fails, the retry is accepted.
    let lambda = lambda(1);
    let port = free_port();
    let address = listening(port);
    let agent = Agent::start(
        &imds.endpoint(),
        &lambda,
        &[("SPOT_AGENT_LISTEN_ADDRESS", &address), ("SPOT_AGENT_METRICS", "true")],
    );
    wait_for_port(port, "the agent's listener");
    wait_for_answer(port, "/readyz", 200, "watching");
    let (status, content_type, page) = get(port, "GET", "/metrics");
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert_eq!(sample(&page, "spot_agent_notices_total{action=\"terminate\"}"), 0.0);
    assert_eq!(sample(&page, "spot_agent_ready"), 1.0);

    let time = rfc3339(Utc::now() + TimeDelta::minutes(2));
    imds.set(
        imds::INSTANCE_ACTION_PATH,
        Some(&format!(r#"{{"action": "terminate", "time": "{time}"}}"#)),
    );
    agent.wait_for_line("accepted the notice");
    // The notice stays in metadata: later rounds see it again and count nothing more.
    wait_rounds(&imds, imds::INSTANCE_ACTION_PATH, 200, 3);
    let page = get(port, "GET", "/metrics").2;
    assert_eq!(
        sample(&page, "spot_agent_notices_total{action=\"terminate\"}"),
        1.0,
        "{page}"
    );
    assert_eq!(sample(&page, "spot_agent_notices_total{action=\"rebalance\"}"), 0.0);
    assert_eq!(sample(&page, "spot_agent_invocations_total"), 2.0);
    assert_eq!(sample(&page, "spot_agent_invocation_failures_total"), 1.0);
    assert_eq!(sample(&page, "spot_agent_deliveries_total{result=\"accepted\"}"), 1.0);
    assert_eq!(sample(&page, "spot_agent_deliveries_total{result=\"gave-up\"}"), 0.0);
    assert_eq!(invokes(&lambda).len(), 2, "the page counts what was sent");
    let polled = sample(&page, "spot_agent_last_poll_timestamp_seconds");
    let now = Utc::now().timestamp_millis() as f64 / 1000.0;
    assert!(
        (now - polled).abs() < 5.0,
        "the last poll ended just now: {polled}, now {now}"
    );

    // The last poll moves on with every round.
    wait_rounds(&imds, imds::INSTANCE_ACTION_PATH, 200, 2);
    let later = sample(
        &get(port, "GET", "/metrics").2,
        "spot_agent_last_poll_timestamp_seconds",
    );
    assert!(later > polled, "{later} after {polled}");

    imds.set(imds::REBALANCE_PATH, Some(r#"{"noticeTime": "2026-11-22T01:00:00Z"}"#));
    lambda.wait_for("the rebalance invoke", WAIT, |r| r.len() == 3);
    wait_rounds(&imds, imds::REBALANCE_PATH, 200, 2);
    let page = get(port, "GET", "/metrics").2;
    assert_eq!(sample(&page, "spot_agent_notices_total{action=\"rebalance\"}"), 1.0);
    assert_eq!(sample(&page, "spot_agent_notices_total{action=\"terminate\"}"), 1.0);
    assert_eq!(sample(&page, "spot_agent_invocations_total"), 3.0);
}

#[test]
fn bad_requests_change_nothing_and_a_taken_port_stops_start_up() {
    let imds = Imds::start(&identity_document(), SIGNATURE);
    let lambda = lambda(0);
    let port = free_port();
    let address = listening(port);
    let agent = Agent::start(
        &imds.endpoint(),
        &lambda,
        &[("SPOT_AGENT_LISTEN_ADDRESS", &address), ("SPOT_AGENT_METRICS", "true")],
    );
    wait_for_port(port, "the agent's listener");
    wait_for_answer(port, "/readyz", 200, "watching");

    assert_eq!(get(port, "POST", "/readyz").0, 405);
    assert_eq!(get(port, "GET", "/").0, 404);
    assert_eq!(get(port, "HEAD", "/healthz").0, 200);
    for garbage in [
        &b"\x00\x01\x02 not http\r\n\r\n"[..],
        b"GET /healthz HTTP/9.9\r\n\r\n",
        &[b'A'; 70_000][..],
    ] {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = stream.write_all(garbage);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
    }
    // A client that connects and says nothing holds no slot for long, and does not block the others.
    let _silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(get(port, "GET", "/healthz").0, 200);
    wait_rounds(&imds, imds::INSTANCE_ACTION_PATH, 404, 2);
    assert_eq!(get(port, "GET", "/readyz").0, 200);
    assert!(agent.lines("cannot run").is_empty());

    // The port is taken: the agent says so and stops, rather than running without its probes.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_address = taken.local_addr().unwrap().to_string();
    let mut second = Agent::start(
        &imds.endpoint(),
        &lambda,
        &[("SPOT_AGENT_LISTEN_ADDRESS", &taken_address)],
    );
    assert_eq!(second.wait_exit().code(), Some(1));
    let line = second.wait_for_line("cannot run");
    let error = line["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&taken_address) && error.contains("SPOT_AGENT_LISTEN_ADDRESS"),
        "{error}"
    );
}
