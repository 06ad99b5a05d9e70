//! Serving more than one region and account: each event names where its instance lives, and the cleanup runs with
//! clients for that (region, account). They are built the first time a place is seen and kept for the container's
//! life. Another account is reached through the role `CROSS_ACCOUNT_ROLE_NAME` there; without that setting an event
//! for another account is refused.
//!
//! Summaries are still published with the home clients, to the one configured topic. The registration index covers
//! the home region and account only, so other places are cleaned by the Auto Scaling fast path and the sweep.

use std::collections::HashMap;
use std::sync::Arc;

use aws_config::{Region, SdkConfig};
// Every SDK crate re-exports the same type; this one is at hand.
use aws_sdk_ec2::config::SharedCredentialsProvider;
use tokio::sync::Mutex;

use super::Place;
use crate::aws::Clients;
use crate::config::Config;
use crate::trust::scope::{AccountNotAllowed, check_account};

/// A region and an account.
pub type PlaceKey = (String, String);

pub struct Places {
    shared: SdkConfig,
    home_key: PlaceKey,
    role_name: Option<String>,
    built: Mutex<HashMap<PlaceKey, Arc<Place>>>,
}

impl Places {
    /// `shared` is the function's own configuration (its region and credentials); `home_account` its account;
    /// `role_name` the role to assume in other accounts.
    pub fn new(shared: SdkConfig, home_account: String, role_name: Option<String>) -> Self {
        let region = shared.region().map(|r| r.to_string()).unwrap_or_default();
        Places {
            shared,
            home_key: (region, home_account),
            role_name,
            built: Mutex::new(HashMap::new()),
        }
    }

    /// Where a request with this region and account (either may be absent: the home one then) is cleaned.
    pub fn key(&self, region: Option<&str>, account: Option<&str>) -> PlaceKey {
        (
            region.unwrap_or(&self.home_key.0).to_owned(),
            account.unwrap_or(&self.home_key.1).to_owned(),
        )
    }

    pub fn is_home(&self, key: &PlaceKey) -> bool {
        *key == self.home_key
    }

    /// The clients of another place, and what is built on them, made on first use and kept. Summaries still go to
    /// the home topic, and the registration index is the home place's only.
    pub async fn place(
        &self,
        config: &Config,
        home_place: &Place,
        key: &PlaceKey,
    ) -> Result<Arc<Place>, AccountNotAllowed> {
        let mut built = self.built.lock().await;
        if let Some(place) = built.get(key) {
            return Ok(Arc::clone(place));
        }
        let (region, account) = key;
        let mut shared = self.shared.to_builder();
        shared.set_region(Some(Region::new(region.clone())));
        check_account(Some(&self.home_key.1), Some(account), self.role_name.is_some())?;
        if let Some(role_name) = self.role_name.as_ref().filter(|_| *account != self.home_key.1) {
            let partition = partition(region);
            let role = format!("arn:{partition}:iam::{account}:role/{role_name}");
            tracing::info!(%role, %region, "serving another account");
            let provider = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name("spot-cleanup")
                .region(Region::new(region.clone()))
                .configure(&self.shared)
                .build()
                .await;
            shared.set_credentials_provider(Some(SharedCredentialsProvider::new(provider)));
        }
        let rate = config.elb_describe_rate as u32;
        let mut clients = Clients::going_by(&shared.build(), &home_place.clients.budget, rate);
        clients.sns = home_place.clients.sns.clone();
        let place = Arc::new(Place::new(config, clients, None));
        built.insert(key.clone(), Arc::clone(&place));
        Ok(place)
    }
}

/// The ARN partition a region belongs to.
fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_follow_the_region() {
        assert_eq!(partition("us-east-1"), "aws");
        assert_eq!(partition("cn-north-1"), "aws-cn");
        assert_eq!(partition("us-gov-west-1"), "aws-us-gov");
    }

    #[test]
    fn an_absent_region_or_account_is_the_home_one() {
        let shared = SdkConfig::builder().region(Region::new("us-east-1")).build();
        let places = Places::new(shared, "123456789012".into(), None);
        let home = places.key(None, None);
        assert!(places.is_home(&home));
        assert_eq!(home, ("us-east-1".to_owned(), "123456789012".to_owned()));
        let west = places.key(Some("us-west-2"), None);
        assert_eq!(west, ("us-west-2".to_owned(), "123456789012".to_owned()));
        assert!(!places.is_home(&west));
    }
}
