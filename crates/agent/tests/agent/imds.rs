//! An IMDSv2 emulator: a session token from `PUT /latest/api/token` first, every read refused (401) without a valid
//! one, 404 for a path with nothing on it, and knobs to make tokens short-lived, slow to come, or revoked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spot_cleanup_test_support::http::{HttpServer, Reply, Request};

pub const TOKEN_PATH: &str = "/latest/api/token";
pub const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
pub const DOCUMENT_PATH: &str = "/latest/dynamic/instance-identity/document";
pub const SIGNATURE_PATH: &str = "/latest/dynamic/instance-identity/signature";
pub const INSTANCE_ACTION_PATH: &str = "/latest/meta-data/spot/instance-action";
pub const REBALANCE_PATH: &str = "/latest/meta-data/events/recommendations/rebalance";
pub const LIFECYCLE_STATE_PATH: &str = "/latest/meta-data/autoscaling/target-lifecycle-state";

/// What the emulator answered, for assertions on the client's behaviour.
#[derive(Clone, Debug)]
pub struct Answer {
    pub request: Request,
    pub status: u16,
}

#[derive(Default)]
struct State {
    paths: HashMap<String, String>,
    /// Issued tokens and when each stops being accepted.
    tokens: HashMap<String, Instant>,
    issued: u32,
    /// Grant at most this TTL, whatever was asked (a token that expires sooner than the client expects).
    max_ttl: Option<u64>,
    /// Answer this many next token requests only after `slow_delay`.
    slow_tokens: u32,
    slow_delay: Duration,
    answers: Vec<Answer>,
}

pub struct Imds {
    server: HttpServer,
    state: Arc<Mutex<State>>,
}

impl Imds {
    /// An instance with this identity document and signature, and no notice yet.
    pub fn start(document: &str, signature: &str) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        {
            let mut s = state.lock().unwrap();
            s.paths.insert(DOCUMENT_PATH.to_owned(), document.to_owned());
            s.paths.insert(SIGNATURE_PATH.to_owned(), signature.to_owned());
        }
        let shared = state.clone();
        let server = HttpServer::start(move |request| {
            let mut state = shared.lock().unwrap();
            let reply = answer(&mut state, request);
            state.answers.push(Answer {
                request: request.clone(),
                status: reply.status,
            });
            reply
        });
        Self { server, state }
    }

    /// For `AWS_EC2_METADATA_SERVICE_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        self.server.url()
    }

    /// Put text on a path, or take it away (None: 404 again).
    pub fn set(&self, path: &str, body: Option<&str>) {
        let mut state = self.state.lock().unwrap();
        match body {
            Some(body) => state.paths.insert(path.to_owned(), body.to_owned()),
            None => state.paths.remove(path),
        };
    }

    pub fn limit_token_ttl(&self, seconds: u64) {
        self.state.lock().unwrap().max_ttl = Some(seconds);
    }

    pub fn slow_down_tokens(&self, count: u32, delay: Duration) {
        let mut state = self.state.lock().unwrap();
        state.slow_tokens = count;
        state.slow_delay = delay;
    }

    /// Every token issued so far stops working, as after a restart of the metadata service.
    pub fn revoke_tokens(&self) {
        self.state.lock().unwrap().tokens.clear();
    }

    pub fn answers(&self) -> Vec<Answer> {
        self.state.lock().unwrap().answers.clone()
    }

    /// How many reads of `path` were answered with `status`.
    pub fn count(&self, path: &str, status: u16) -> usize {
        count(&self.answers(), path, status)
    }

    pub fn server(&self) -> &HttpServer {
        &self.server
    }

    /// Wait until the emulator has answered `path` with `status` at least `times` times.
    pub fn wait_for(&self, path: &str, status: u16, times: usize) {
        let what = format!("{times} answers {status} to {path}");
        self.wait_until(&what, |answers| count(answers, path, status) >= times);
    }

    /// Wait until `done` holds for the answers so far.
    pub fn wait_until(&self, what: &str, done: impl Fn(&[Answer]) -> bool) {
        let state = self.state.clone();
        self.server
            .wait_for(what, Duration::from_secs(30), |_| done(&state.lock().unwrap().answers));
    }
}

fn count(answers: &[Answer], path: &str, status: u16) -> usize {
    answers
        .iter()
        .filter(|a| a.request.path == path && a.status == status)
        .count()
}

fn answer(state: &mut State, request: &Request) -> Reply {
    match (request.method.as_str(), request.path.as_str()) {
        ("PUT", TOKEN_PATH) => {
            let Some(ttl) = request
                .header(TTL_HEADER)
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|ttl| (1..=21_600).contains(ttl))
            else {
                return Reply::new(400, "");
            };
            // Like the real service: a token request that looks forwarded is refused.
            if request.header("x-forwarded-for").is_some() {
                return Reply::new(403, "");
            }
            let ttl = state.max_ttl.map_or(ttl, |max| ttl.min(max));
            state.issued += 1;
            let token = format!("token-{}-{}", state.issued, "x".repeat(40));
            state
                .tokens
                .insert(token.clone(), Instant::now() + Duration::from_secs(ttl));
            let delay = if state.slow_tokens > 0 {
                state.slow_tokens -= 1;
                state.slow_delay
            } else {
                Duration::ZERO
            };
            Reply::new(200, token)
                .header(TTL_HEADER, ttl.to_string())
                .delayed(delay)
        }
        ("GET", path) => {
            let valid = request
                .header(TOKEN_HEADER)
                .and_then(|token| state.tokens.get(token))
                .is_some_and(|expiry| Instant::now() < *expiry);
            if !valid {
                return Reply::new(401, "");
            }
            match state.paths.get(path) {
                Some(body) => Reply::new(200, body.clone()),
                None => Reply::new(404, "<?xml version=\"1.0\"?><title>404 - Not Found</title>"),
            }
        }
        _ => Reply::new(405, ""),
    }
}
