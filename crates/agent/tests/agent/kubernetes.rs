//! A stub Kubernetes API server that knows one Node: `GET /api/v1/nodes/<name>` answers it, and a JSON merge patch
//! of it applies its labels, refused with 409 when it names a `resourceVersion` that is not the current one, as the
//! real API server does. Every request is recorded; a kubeconfig file points the agent at it with a bearer token.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};
use spot_cleanup_test_support::http::{HttpServer, Reply, Request};

pub const NODE: &str = "ip-10-0-1-10.eu-west-1.compute.internal";
pub const NODE_PATH: &str = "/api/v1/nodes/ip-10-0-1-10.eu-west-1.compute.internal";
pub const LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
pub const TOKEN: &str = "agent-service-account-token";

struct State {
    labels: Map<String, Value>,
    version: u64,
    /// Answer this many next reads with the node as it was one version ago: another writer got in before the patch.
    stale_reads: u32,
}

pub struct KubeApi {
    server: HttpServer,
    state: Arc<Mutex<State>>,
    kubeconfig: PathBuf,
}

impl KubeApi {
    /// The node, with these labels.
    pub fn start(labels: &[(&str, &str)]) -> Self {
        let state = Arc::new(Mutex::new(State {
            labels: labels.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect(),
            version: 100,
            stale_reads: 0,
        }));
        let shared = state.clone();
        let server = HttpServer::start(move |request| answer(&mut shared.lock().unwrap(), request));
        let kubeconfig =
            std::env::temp_dir().join(format!("spot-agent-kubeconfig-{}-{}", std::process::id(), server.port));
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: stub\n  cluster:\n    server: {}\ncontexts:\n- name: stub\n  \
                 context:\n    cluster: stub\n    user: spot-agent\ncurrent-context: stub\nusers:\n- name: spot-agent\n  user:\n    \
                 token: {TOKEN}\n",
                server.url()
            ),
        )
        .expect("the kubeconfig is written");
        Self {
            server,
            state,
            kubeconfig,
        }
    }

    pub fn kubeconfig(&self) -> String {
        self.kubeconfig.display().to_string()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.server.requests()
    }

    pub fn patches(&self) -> Vec<Request> {
        self.requests().into_iter().filter(|r| r.method == "PATCH").collect()
    }

    pub fn label(&self) -> Option<String> {
        let state = self.state.lock().unwrap();
        state.labels.get(LABEL).and_then(Value::as_str).map(str::to_owned)
    }

    /// The next read returns the node one version old, so the patch built on it is refused as stale.
    pub fn race_next_read(&self) {
        self.state.lock().unwrap().stale_reads = 1;
    }

    pub fn wait_for(&self, what: &str, done: impl Fn(&[Request]) -> bool) -> Vec<Request> {
        self.server.wait_for(what, std::time::Duration::from_secs(30), done)
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

/// The node as asked for: its metadata only (`as=PartialObjectMetadata` in Accept), or the whole object.
fn node(state: &State, request: &Request) -> Value {
    let metadata = json!({"name": NODE, "resourceVersion": state.version.to_string(), "labels": state.labels});
    if request
        .header("accept")
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
    {
        return json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": metadata});
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": metadata,
        "spec": {"providerID": "aws:///eu-west-1b/i-0123456789abcdef0"},
        "status": {"images": [{"names": ["public.ecr.aws/example/app:1"], "sizeBytes": 123456789}]},
    })
}

fn status(code: u16, reason: &str, message: &str) -> Reply {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message, "code": code});
    Reply::new(code, body.to_string()).header("content-type", "application/json")
}

fn answer(state: &mut State, request: &Request) -> Reply {
    if request.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
        return status(401, "Unauthorized", "no or wrong bearer token");
    }
    let path = request.path.split('?').next().unwrap_or_default();
    if path != NODE_PATH {
        return status(404, "NotFound", &format!("{path} is not the agent's node"));
    }
    match request.method.as_str() {
        "GET" => {
            let mut seen = node(state, request);
            if state.stale_reads > 0 {
                state.stale_reads -= 1;
                seen["metadata"]["resourceVersion"] = (state.version - 1).to_string().into();
            }
            Reply::new(200, seen.to_string()).header("content-type", "application/json")
        }
        "PATCH" if request.header("content-type") == Some("application/merge-patch+json") => {
            let Ok(patch) = serde_json::from_slice::<Value>(&request.body) else {
                return status(400, "BadRequest", "not JSON");
            };
            let metadata = &patch["metadata"];
            if let Some(version) = metadata["resourceVersion"].as_str()
                && version != state.version.to_string()
            {
                return status(
                    409,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version",
                );
            }
            for (key, value) in metadata["labels"].as_object().into_iter().flatten() {
                match value {
                    Value::Null => state.labels.remove(key),
                    other => state.labels.insert(key.clone(), other.clone()),
                };
            }
            state.version += 1;
            Reply::new(200, node(state, request).to_string()).header("content-type", "application/json")
        }
        _ => status(405, "MethodNotAllowed", "only GET and JSON merge patches of the node"),
    }
}
