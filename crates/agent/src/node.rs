//! Tells the cluster: on a notice, the agent labels its own Node
//! `node.kubernetes.io/exclude-from-external-load-balancers=spot-cleanup`, through the Kubernetes API with its service
//! account. The AWS Load Balancer Controller and the cloud provider's service controller leave a node with that label
//! out of their target groups, so they do not register it again while its pods, still Ready, drain; the function has
//! just taken it out.
//!
//! Only the agent's own Node, only that label, and only when it is not there already: a node that Karpenter or NTH has
//! labelled is excluded just as well, and its value stays theirs. When the node comes back (after a Spot stop or
//! hibernation), the agent that starts on it removes the label, but only if its value is still ours. Both changes are
//! merge patches that carry the Node's `resourceVersion`, so a label someone else wrote between the read and the
//! patch is never overwritten: the API server refuses the patch (409) and the agent reads again. Reads and patches
//! ask for the Node's metadata only (`PartialObjectMetadata`): a Node's status, with its image list, is large, and the
//! agent needs none of it.
//!
//! Without a Kubernetes environment (the systemd agent: no `NODE_NAME`), none of this is tried.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

/// The label the load balancer controllers honour, and the value that says it is ours.
pub const LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
pub const OURS: &str = "spot-cleanup";

/// A read or a patch must not hang on an API server that does not answer; the next attempt tries again.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a patch refused for a stale `resourceVersion` is tried again with a fresh read.
const CONFLICT_RETRIES: u32 = 3;
/// Backoff between failed attempts, as for the invoke.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("no Kubernetes client configuration (in-cluster service account or KUBECONFIG): {0}")]
    Config(String),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(String),
    #[error("the Kubernetes API refused to {what} node {node}: {error}")]
    Api {
        what: &'static str,
        node: String,
        error: String,
    },
    #[error("node {node} kept changing under the agent: {CONFLICT_RETRIES} patches refused as stale")]
    Conflicts { node: String },
}

/// What one change found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The label was patched (added or removed).
    Patched,
    /// Nothing to do: already excluded (by us, or by another tool), or, on release, no label of ours.
    Unchanged,
}

/// The agent's own Node, through the Kubernetes API.
#[derive(Clone)]
pub struct NodeLabel {
    nodes: Api<Node>,
    name: String,
}

impl NodeLabel {
    /// A client the way every Kubernetes tool finds one: `KUBECONFIG` (or `~/.kube/config`), else the pod's service
    /// account (in-cluster). Reads no Node yet.
    pub async fn connect(name: String) -> Result<Self, NodeError> {
        let mut config = kube::Config::infer()
            .await
            .map_err(|e| NodeError::Config(e.to_string()))?;
        config.read_timeout = Some(CALL_TIMEOUT);
        config.write_timeout = Some(CALL_TIMEOUT);
        config.connect_timeout = Some(CALL_TIMEOUT);
        let client = kube::Client::try_from(config).map_err(|e| NodeError::Client(e.to_string()))?;
        Ok(Self {
            nodes: Api::all(client),
            name,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Exclude the node from external load balancers, unless its label already does.
    pub async fn exclude(&self) -> Result<Change, NodeError> {
        self.change(|value| value.is_none().then(|| Value::from(OURS))).await
    }

    /// The node is back: remove the label if, and only if, it is still ours.
    pub async fn release(&self) -> Result<Change, NodeError> {
        self.change(|value| (value == Some(OURS)).then_some(Value::Null)).await
    }

    /// Read the node; `wanted` says, from the label's value, what to set it to (`Null` removes it), or None to leave
    /// it. The patch names the `resourceVersion` read, so it applies only to the node as read.
    async fn change(&self, wanted: impl Fn(Option<&str>) -> Option<Value>) -> Result<Change, NodeError> {
        for _ in 0..CONFLICT_RETRIES {
            let node = self
                .nodes
                .get_metadata(&self.name)
                .await
                .map_err(|e| self.error("read", e))?;
            let value = node
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL))
                .map(String::as_str);
            let Some(new) = wanted(value) else {
                return Ok(Change::Unchanged);
            };
            let patch = json!({"metadata": {
                "resourceVersion": node.metadata.resource_version,
                "labels": {LABEL: new},
            }});
            match self
                .nodes
                .patch_metadata(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(Change::Patched),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => return Err(self.error("patch", e)),
            }
        }
        Err(NodeError::Conflicts {
            node: self.name.clone(),
        })
    }

    fn error(&self, what: &'static str, error: kube::Error) -> NodeError {
        NodeError::Api {
            what,
            node: self.name.clone(),
            error: error.to_string(),
        }
    }
}

/// Try `change` until it succeeds or `deadline` passes (there is always one attempt); log how it ended.
pub async fn until<F, Fut>(node: &NodeLabel, what: &'static str, deadline: DateTime<Utc>, change: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Change, NodeError>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let error = match change().await {
            Ok(change) => {
                tracing::info!(
                    node = node.name(),
                    label = LABEL,
                    attempts,
                    changed = change == Change::Patched,
                    "{what}"
                );
                return;
            }
            Err(e) => e.to_string(),
        };
        let left = (deadline - Utc::now()).to_std().unwrap_or_default();
        if left.is_zero() {
            tracing::error!(node = node.name(), label = LABEL, attempts, error, "giving up: {what}");
            return;
        }
        let wait = backoff.min(left);
        tracing::warn!(
            node = node.name(),
            attempts,
            retry_in_ms = wait.as_millis() as u64,
            error,
            "{what}: failed; retrying"
        );
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
