//! Registrations handed over as their groups are read. A sweep's reads come back over seconds (the Describe* budget
//! paces them, and a slow ELB answers each late), and the shared sweep has its board to keep after them. A
//! registration handed over here can leave its group while the rest of the sweep is still running.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::Wanted;
use super::read::GroupRead;
use crate::instance::Instance;
use crate::registration::TargetRegistration;

/// Where a locator hands the registrations it finds, group by group. Cloned into each read's task; the receiving end
/// sees the channel close when the last clone is dropped.
#[derive(Clone)]
pub struct Found {
    to: Option<Arc<Handing>>,
}

struct Handing {
    wanted: Wanted,
    sender: mpsc::UnboundedSender<Vec<TargetRegistration>>,
}

impl Found {
    /// Hands nothing over: the locator's answer is all there is.
    pub fn nowhere() -> Self {
        Found { to: None }
    }

    /// A Found for `instances`, and what it hands over: each batch is one group read's registrations of them.
    pub fn channel(instances: &[Instance]) -> (Self, mpsc::UnboundedReceiver<Vec<TargetRegistration>>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let handing = Handing {
            wanted: Wanted::new(instances),
            sender,
        };
        (
            Found {
                to: Some(Arc::new(handing)),
            },
            receiver,
        )
    }

    /// Hand over the instances' registrations in one group's read, if it holds any.
    pub fn read(&self, read: &GroupRead) {
        if let Some(to) = &self.to {
            let located = to.wanted.located(std::slice::from_ref(read), false);
            Self::send(to, located.registrations);
        }
    }

    /// `read` as a function for a reader's tasks.
    pub fn hand(&self) -> impl Fn(&GroupRead) + Clone + Send + 'static {
        let found = self.clone();
        move |read: &GroupRead| found.read(read)
    }

    /// Hand over registrations found some other way (a locator that reads no group itself).
    pub fn registrations(&self, registrations: Vec<TargetRegistration>) {
        if let Some(to) = &self.to {
            Self::send(to, registrations);
        }
    }

    fn send(to: &Handing, registrations: Vec<TargetRegistration>) {
        if !registrations.is_empty() {
            // The receiver is gone only when the cleanup stopped listening; the locator's answer still has them.
            let _ = to.sender.send(registrations);
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::locate::sweep::read::{Candidate, Outcome, Seen};
    use crate::registration::TargetKind;
    use crate::testing::*;

    fn read_of(kind: TargetKind, ids: &[&str]) -> GroupRead {
        GroupRead {
            candidate: Candidate {
                arn: arn("web"),
                name: "web".into(),
                kind,
                vpc_id: Some(VPC.into()),
            },
            read_at: Utc::now(),
            outcome: Outcome::Targets(
                ids.iter()
                    .map(|id| Seen {
                        id: (*id).into(),
                        port: Some(80),
                        zone: None,
                        state: Some("healthy".into()),
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn only_the_instances_registrations_are_handed_over_one_batch_per_group() {
        let node = instance(INSTANCE, &[eni("eni-0aaa0000000000001", &[WEB_SG], &[PRIMARY_IP])]);
        let (found, mut batches) = Found::channel(std::slice::from_ref(&node));

        found.read(&read_of(TargetKind::Instance, &[NEIGHBOUR, INSTANCE]));
        found.read(&read_of(TargetKind::Instance, &[NEIGHBOUR]));
        found.read(&read_of(TargetKind::Ip, &[PRIMARY_IP, "10.0.1.99"]));
        drop(found);

        let first = batches.try_recv().unwrap();
        assert_eq!(
            first.iter().map(|r| r.target_id.as_str()).collect::<Vec<_>>(),
            [INSTANCE]
        );
        let second = batches.try_recv().unwrap();
        assert_eq!(
            second.iter().map(|r| r.target_id.as_str()).collect::<Vec<_>>(),
            [PRIMARY_IP]
        );
        assert!(
            batches.try_recv().is_err(),
            "a group without the instance hands nothing over, and the channel closed with the last clone"
        );
    }
}
