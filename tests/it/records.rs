//! The function acts only on records it wrote, and only the restore entry point undoes a quarantine. The real binary
//! under the Lambda runtime loop, deployed twice as template.yaml does it (the cleanup function, and the restore
//! function with `ENTRY_POINT=restore`), against moto behind the recording proxy, so that "no change" is counted on
//! the wire: every refusal below sends one SNS Publish (the security alert) and no other write.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Value, json};
use spot_cleanup::tags::{LEFT_TARGETS_MAC_TAG, LEFT_TARGETS_TAG, ORIGINAL_GROUPS_TAG};

use crate::common::fleet::{Fleet, Node, create_group};
use crate::common::proxy::{Proxy, start_proxy};
use crate::common::runtime::{LambdaRuntime, error_type, function_env};
use crate::common::{self, Moto};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_spot-cleanup"))
}

/// One deployment: both functions, talking to moto through the proxy.
struct Deployment {
    fleet: Fleet,
    proxy: Proxy,
    cleanup: LambdaRuntime,
    restore: LambdaRuntime,
    _moto: Moto,
}

impl Deployment {
    async fn start(spot: usize, extra: &[(&'static str, &str)]) -> Deployment {
        let moto = Moto::start();
        let fleet = Fleet::build(&moto.sdk_config().await, spot).await;
        let proxy = start_proxy(&moto.endpoint);
        let mut env: Vec<(&'static str, String)> = function_env(&moto, &fleet, false)
            .into_iter()
            .filter(|(name, _)| *name != "AWS_ENDPOINT_URL")
            .collect();
        env.push(("AWS_ENDPOINT_URL", proxy.endpoint.clone()));
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        let cleanup = LambdaRuntime::start(binary(), &env);
        env.push(("ENTRY_POINT", "restore".to_owned()));
        let restore = LambdaRuntime::start(binary(), &env);
        Deployment {
            fleet,
            proxy,
            cleanup,
            restore,
            _moto: moto,
        }
    }

    /// Spot stops the node (so it may come back), and the cleanup function cleans it up.
    async fn interrupt(&self, node: &Node) {
        let answer = self
            .cleanup
            .invoke_json(&common::event_for("spot-interruption-stop.json", &node.id))
            .expect("cleaned");
        assert_eq!(answer["outcome"], "cleaned", "{answer:#}");
        self.fleet.published().await;
    }

    fn restore_request(node: &Node) -> Value {
        json!({"action": "restore", "instance_id": node.id})
    }

    /// A restore the function must refuse with `error`: a security alert, and nothing else written.
    async fn assert_refused(&self, runtime: &LambdaRuntime, node: &Node, error: &str) -> Value {
        let enis = self.fleet.enis(node).await;
        let registrations = self.fleet.registrations().await;
        self.proxy.calls.clear();
        let refused = runtime.invoke_json(&Self::restore_request(node)).expect_err("refused");
        assert_eq!(error_type(&refused), Some(error), "{refused}");
        assert_eq!(self.proxy.calls.writes(), ["Publish"], "only the alert is sent");
        assert_eq!(self.fleet.enis(node).await, enis, "no ENI changed");
        assert_eq!(self.fleet.registrations().await, registrations);
        let published = self.fleet.published().await;
        assert_eq!(published.len(), 1);
        let alert = &published[0];
        assert_eq!(attribute(alert, "security"), "true", "{alert:#}");
        assert_eq!(attribute(alert, "error_type"), error);
        serde_json::from_str(alert["Message"].as_str().unwrap()).unwrap()
    }
}

fn attribute(note: &Value, name: &str) -> String {
    note["MessageAttributes"][name]["Value"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn tag(fleet: &Fleet, resource: &str, key: &str, value: &str) {
    let tag = aws_sdk_ec2::types::Tag::builder().key(key).value(value).build();
    fleet
        .ec2
        .create_tags()
        .resources(resource)
        .tags(tag)
        .send()
        .await
        .unwrap();
}

async fn untag(fleet: &Fleet, resource: &str, key: &str) {
    let tag = aws_sdk_ec2::types::Tag::builder().key(key).build();
    fleet
        .ec2
        .delete_tags()
        .resources(resource)
        .tags(tag)
        .send()
        .await
        .unwrap();
}

async fn instance_tags(fleet: &Fleet, node: &Node) -> BTreeMap<String, String> {
    let output = fleet
        .ec2
        .describe_instances()
        .instance_ids(&node.id)
        .send()
        .await
        .unwrap();
    let instance = &output.reservations()[0].instances()[0];
    instance
        .tags()
        .iter()
        .map(|t| (t.key().unwrap().to_owned(), t.value().unwrap_or_default().to_owned()))
        .collect()
}

/// A record planted before the interruption (someone who may tag the ENI chose `wide-open`) is not kept: the cleanup
/// replaces it with the ENI's real groups, signed, and publishes a security alert. The restore then puts back the
/// real groups, never the planted one.
#[tokio::test]
async fn a_record_planted_before_the_quarantine_is_replaced_with_an_alert_and_never_applied() {
    let deployment = Deployment::start(1, &[]).await;
    let (fleet, node) = (&deployment.fleet, &deployment.fleet.spot[0]);
    let wide_open = create_group(&fleet.ec2, &fleet.vpc_id, "wide-open").await;
    tag(fleet, &node.enis[0], ORIGINAL_GROUPS_TAG, &wide_open).await;
    let before = fleet.enis(node).await;

    let answer = deployment
        .cleanup
        .invoke_json(&common::event_for("spot-interruption-stop.json", &node.id))
        .expect("cleaned");
    assert_eq!(answer["outcome"], "cleaned", "{answer:#}");
    let warnings = answer["warnings"].to_string();
    assert!(warnings.contains("was replaced"), "{warnings}");
    let published = fleet.published().await;
    let alert = published
        .iter()
        .find(|n| attribute(n, "outcome") == "untrusted-record")
        .expect("a security alert");
    assert_eq!(attribute(alert, "security"), "true");
    assert_eq!(attribute(alert, "error_type"), "RecordNotTrusted");
    let after = fleet.enis(node).await;
    let record = &after[&node.enis[0]].1;
    let groups_before = &before[&node.enis[0]].0;
    let recorded: BTreeSet<String> = record[ORIGINAL_GROUPS_TAG].split(',').map(str::to_owned).collect();
    assert_eq!(&recorded, groups_before, "the real groups are recorded");
    assert!(record.contains_key(&format!("{ORIGINAL_GROUPS_TAG}:mac")), "{record:?}");

    deployment.proxy.calls.clear();
    let restored = deployment
        .restore
        .invoke_json(&Deployment::restore_request(node))
        .expect("restored");
    assert_eq!(restored["restore"]["outcome"], "restored", "{restored:#}");
    let asked = deployment.proxy.calls.modifications();
    for (eni, (groups, _)) in &before {
        assert_eq!(
            asked[eni].as_slice(),
            std::slice::from_ref(groups),
            "{eni} goes back to exactly its own groups"
        );
        assert!(!groups.contains(&wide_open));
    }
}

/// A record edited after the quarantine refuses the whole restore before anything changes: a group added, its MAC
/// removed, another ENI's valid record copied onto it. Each is a security alert naming the ENI.
#[tokio::test]
async fn an_edited_copied_or_unsigned_record_refuses_the_restore_and_changes_nothing() {
    let deployment = Deployment::start(2, &[]).await;
    let fleet = &deployment.fleet;
    let (node, other) = (&fleet.spot[0], &fleet.spot[1]);
    deployment.interrupt(node).await;
    deployment.interrupt(other).await;
    let wide_open = create_group(&fleet.ec2, &fleet.vpc_id, "wide-open").await;
    let eni = node.enis[0].clone();
    let signed = fleet.enis(node).await[&eni].1.clone();
    let copied = fleet.enis(other).await[&other.enis[0]].1.clone();
    let mac_key = format!("{ORIGINAL_GROUPS_TAG}:mac");

    let tamperings: Vec<(&str, BTreeMap<String, String>)> = vec![
        ("a group added", {
            let mut t = signed.clone();
            let groups = format!("{},{wide_open}", t[ORIGINAL_GROUPS_TAG]);
            t.insert(ORIGINAL_GROUPS_TAG.into(), groups);
            t
        }),
        ("its MAC removed", {
            let mut t = signed.clone();
            t.remove(&mac_key);
            t
        }),
        ("another ENI's record copied", copied.clone()),
    ];
    for (what, tampered) in tamperings {
        for key in signed.keys().filter(|k| k.starts_with(ORIGINAL_GROUPS_TAG)) {
            untag(fleet, &eni, key).await;
        }
        for (key, value) in tampered.iter().filter(|(k, _)| k.starts_with(ORIGINAL_GROUPS_TAG)) {
            tag(fleet, &eni, key, value).await;
        }
        let alert = deployment
            .assert_refused(&deployment.restore, node, "RecordNotTrusted")
            .await;
        let reasons = alert["reasons"].to_string();
        assert!(reasons.contains(&eni), "{what}: {reasons}");
        assert!(reasons.contains("not this function's"), "{what}: {reasons}");
    }

    // Put the signed record back: the restore goes through.
    for (key, value) in signed.iter().filter(|(k, _)| k.starts_with(ORIGINAL_GROUPS_TAG)) {
        tag(fleet, &eni, key, value).await;
    }
    let restored = deployment
        .restore
        .invoke_json(&Deployment::restore_request(node))
        .expect("restored");
    assert_eq!(restored["restore"]["outcome"], "restored", "{restored:#}");
}

/// With `REREGISTER_ON_RESTORE=true`, a target added to the record of left targets refuses the restore: no ENI and
/// no target group changes. The untouched record is then restored exactly: each ENI on exactly its own groups, and
/// exactly the targets the cleanup took out registered again.
#[tokio::test]
async fn a_planted_left_target_refuses_the_restore_and_the_true_record_registers_exactly_what_was_left() {
    let deployment = Deployment::start(1, &[("REREGISTER_ON_RESTORE", "true")]).await;
    let fleet = &deployment.fleet;
    let node = &fleet.spot[0];
    let before_enis = fleet.enis(node).await;
    let left = fleet.registrations_of(node, &fleet.registrations().await);
    assert_eq!(left.len(), 4);
    deployment.interrupt(node).await;
    let tags = instance_tags(fleet, node).await;
    let record = tags[LEFT_TARGETS_TAG].clone();
    assert!(tags.contains_key(LEFT_TARGETS_MAC_TAG), "{tags:?}");

    // The same group as the first entry, on a port the instance never served.
    let first = record.split(' ').next().unwrap();
    let group = first.split(',').next().unwrap();
    tag(
        fleet,
        &node.id,
        LEFT_TARGETS_TAG,
        &format!("{record} {group},{},31999", node.id),
    )
    .await;
    let alert = deployment
        .assert_refused(&deployment.restore, node, "RecordNotTrusted")
        .await;
    assert!(alert["reasons"].to_string().contains("targets it left"), "{alert:#}");

    tag(fleet, &node.id, LEFT_TARGETS_TAG, &record).await;
    deployment.proxy.calls.clear();
    let restored = deployment
        .restore
        .invoke_json(&Deployment::restore_request(node))
        .expect("restored");
    assert_eq!(restored["restore"]["outcome"], "restored", "{restored:#}");
    let asked = deployment.proxy.calls.modifications();
    for (eni, (groups, _)) in &before_enis {
        assert_eq!(asked[eni].as_slice(), std::slice::from_ref(groups), "{eni}");
    }
    assert_eq!(fleet.registrations_of(node, &fleet.registrations().await), left);
    let tags = instance_tags(fleet, node).await;
    assert!(!tags.keys().any(|k| k.starts_with(LEFT_TARGETS_TAG)), "{tags:?}");
}

/// Every delivery path reaches the cleanup function (a node agent's role may invoke it), so none of them may undo a
/// quarantine: a restore asked there, as a compromised node would send it, is refused as a security signal.
#[tokio::test]
async fn a_restore_asked_through_the_cleanup_function_is_refused() {
    let deployment = Deployment::start(1, &[]).await;
    let node = &deployment.fleet.spot[0];
    deployment.interrupt(node).await;
    let alert = deployment
        .assert_refused(&deployment.cleanup, node, "RestoreNotAuthorized")
        .await;
    assert!(
        alert["reasons"].to_string().contains("ENTRY_POINT=restore"),
        "{alert:#}"
    );
    // The restore entry point serves only restores: a cleanup sent there changes nothing either.
    let misrouted = deployment
        .restore
        .invoke_json(&common::event_for("spot-interruption-terminate.json", &node.id))
        .expect_err("rejected");
    assert_eq!(error_type(&misrouted), Some("InvalidInput"), "{misrouted}");
}
