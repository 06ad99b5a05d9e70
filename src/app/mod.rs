//! The composition root: `App` holds the configuration, the clients of this function's own region and account (and,
//! built on first use, of every other place an event names), the one `Publisher`, and the monitoring step. Only
//! `main` and the handler see it. It hands each workflow a small context of borrowed handles.
//!
//! It is the handler's one door: the handler imports no workflow and no concern, only `App` and the answer types its
//! methods return, named here (`tests/it/layers.rs` holds that).

mod places;
mod serve;
pub mod warm;

use std::collections::BTreeMap;

use crate::aws::{Bucket, CallBudget, Clients};
use crate::cleanup;
use crate::config::Config;
use crate::deadline::Deadline;
use crate::input::Request;
use crate::locate::{AutoScaling, Index, Locator};
use crate::monitoring::Monitoring;
use crate::monitoring::secrets::SecretClients;
use crate::notify::Publisher;
use crate::restore;
use crate::steps::claim::ClaimStore;
use crate::steps::lifecycle::DrainWait;
use crate::steps::quarantine::QuarantineGroupCache;
use crate::steps::records::Signer;
use crate::trust::scope::{AccountNotAllowed, check_account};
use crate::wave::{Roster, Wave};
use places::{PlaceKey, Places};

// What the handler's calls answer with: defined by the workflows and concerns below `App`, named here so that the
// handler sees them through `App` alone.
pub(crate) use crate::cleanup::{Handled, InstanceError, Report};
pub(crate) use crate::index::IndexError;
pub(crate) use crate::trust::Refusal;
pub(crate) use crate::trust::scope::Home;

/// Everything an invocation needs, built once at init.
pub struct App {
    pub(crate) config: Config,
    /// This function's own region and account.
    pub(crate) home_place: Place,
    pub(crate) publisher: Publisher,
    monitoring: Monitoring,
    /// Signs and checks the records a restore acts on, with the home account's key; None without `RECORD_KEY_ID`.
    pub(crate) signer: Option<Signer>,
    /// Other regions and accounts; None serves only the home place.
    places: Option<Places>,
}

/// What works for one region and account: its clients and what is built on them.
pub(crate) struct Place {
    pub clients: Clients,
    /// The registration index's table; the home place's only (the index covers the home region and account).
    pub table: Option<String>,
    fast_locators: Vec<Box<dyn Locator>>,
    /// The wave: shared with the cleanups running at the same time when there is a table, else this cleanup's own.
    wave: Wave,
    /// A slower pace for the index refresh, which is background work, on top of the ELB budget.
    pub refresh_pace: Bucket,
    /// The quarantine groups by VPC, looked up during init (see `warm`) and again when stale.
    pub quarantine_groups: QuarantineGroupCache,
}

impl Place {
    /// The wiring of one place: the registration index when it has one (it knows exact ports and zones), the Auto
    /// Scaling fast path, and the wave, shared through the table when there is one.
    fn new(config: &Config, clients: Clients, table: Option<String>) -> Self {
        let mut fast_locators: Vec<Box<dyn Locator>> = Vec::new();
        if let Some(table) = &table {
            fast_locators.push(Box::new(Index::new(clients.dynamodb.clone(), table.clone())));
        }
        fast_locators.push(Box::new(AutoScaling::new(
            clients.autoscaling.clone(),
            clients.elb.clone(),
        )));
        let refresh_rate = crate::index::REFRESH_READS as u32;
        let roster = table.as_ref().map(|table| Roster {
            dynamodb: clients.roster.clone(),
            table: table.clone(),
            table_breaker: clients.table_breaker.clone(),
        });
        Place {
            table,
            fast_locators,
            wave: Wave::new(roster, config.claim_lease),
            refresh_pace: Bucket::new(refresh_rate, f64::from(refresh_rate)),
            quarantine_groups: QuarantineGroupCache::new(config.quarantine_groups.clone()),
            clients,
        }
    }

    fn claim_store(&self) -> ClaimStore {
        ClaimStore::new(self.table.as_deref(), &self.clients.dynamodb, &self.clients.ec2)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

impl App {
    /// The production wiring, from the environment: configuration, the SDK's standard chain for region, credentials and
    /// `AWS_ENDPOINT_URL`, other places served on demand, and the secret stores when a monitoring system needs them.
    pub async fn from_env() -> Result<Self, InitError> {
        let config = Config::from_env()?;
        let shared = crate::aws::load_shared().await;
        let monitored = !config.monitoring.is_empty();
        let rate = config.elb_describe_rate as u32;
        let mut app = App::new(config, Clients::going_by(&shared, &CallBudget::default(), rate));
        if monitored {
            app = app.with_secret_clients(SecretClients::from_shared(&shared));
        }
        Ok(app.serving_other_places(shared))
    }

    /// The wiring over given clients, serving the home place only (tests give clients pointed at moto or mocks).
    pub fn new(config: Config, clients: Clients) -> Self {
        let publisher = Publisher::new(clients.sns.clone(), config.sns_topic_arn.clone(), config.notify_format);
        let signer = config
            .record_key_id
            .as_ref()
            .map(|key| Signer::new(clients.kms.clone(), key.clone()));
        let home_place = Place::new(&config, clients, config.registration_index_table.clone());
        App {
            monitoring: Monitoring::new(config.monitoring.clone(), None),
            publisher,
            signer,
            home_place,
            config,
            places: None,
        }
    }

    /// Serve events from other regions and accounts too, with clients built from `shared` (this function's own SDK
    /// configuration) as each place is first seen.
    pub fn serving_other_places(mut self, shared: aws_config::SdkConfig) -> Self {
        let places = Places::new(
            shared,
            self.config.home_account.clone(),
            self.config.cross_account_role_name.clone(),
        );
        self.places = Some(places);
        self
    }

    /// Let the monitoring step read `ssm:` and `secretsmanager:` secrets.
    pub fn with_secret_clients(mut self, secrets: SecretClients) -> Self {
        self.monitoring = Monitoring::new(self.config.monitoring.clone(), Some(secrets));
        self
    }

    /// Start the warm-up (`WARM_UP=true`) beside the runtime loop.
    pub fn start_warm_up(&'static self) {
        if self.config.warm_up {
            tokio::spawn(warm::warm_up_in_background(self));
        }
    }

    fn cleanup_context<'a>(&'a self, place: &'a Place) -> cleanup::Context<'a> {
        cleanup::Context {
            clients: &place.clients,
            publisher: &self.publisher,
            config: &self.config,
            fast_locators: &place.fast_locators,
            wave: &place.wave,
            quarantine_groups: &place.quarantine_groups,
            monitoring: &self.monitoring,
            claim_store: place.claim_store(),
            signer: self.signer.as_ref(),
            drain_wait: self.config.lifecycle_wait_for_draining.then(DrainWait::default),
        }
    }

    fn restore_context(&self) -> restore::Context<'_> {
        restore::Context {
            clients: &self.home_place.clients,
            publisher: &self.publisher,
            config: &self.config,
            claim_store: self.home_place.claim_store(),
            signer: self.signer.as_ref(),
        }
    }

    /// Run every request where its instance lives; one report per distinct instance.
    pub(crate) async fn clean_up(&self, requests: &[Request], deadline: Deadline) -> Vec<Report> {
        let mut by_place: BTreeMap<PlaceKey, Vec<Request>> = BTreeMap::new();
        let mut reports = Vec::new();
        for request in requests {
            let (region, account) = (request.trigger.region.as_deref(), request.trigger.account.as_deref());
            match &self.places {
                Some(places) => by_place
                    .entry(places.key(region, account))
                    .or_default()
                    .push(request.clone()),
                // Wired without other places (tests): everything is served here, except another account's instances.
                None => match check_account(
                    Some(&self.config.home_account),
                    account,
                    self.config.cross_account_role_name.is_some(),
                ) {
                    Err(reason) => reports.push(not_served(request, reason)),
                    Ok(()) => by_place.entry(PlaceKey::default()).or_default().push(request.clone()),
                },
            }
        }
        for (key, requests) in by_place {
            let here = match &self.places {
                Some(places) if !places.is_home(&key) => match places.place(&self.config, &self.home_place, &key).await
                {
                    Ok(there) => cleanup::run(&self.cleanup_context(&there), &requests, deadline).await,
                    Err(reason) => requests.iter().map(|r| not_served(r, reason.clone())).collect(),
                },
                _ => cleanup::run(&self.cleanup_context(&self.home_place), &requests, deadline).await,
            };
            reports.extend(here);
        }
        reports
    }
}

fn not_served(request: &Request, reason: AccountNotAllowed) -> Report {
    let error = InstanceError::NotServed {
        instance: request.instance_id.clone(),
        reason: reason.to_string(),
    };
    Report::failed(&request.instance_id, error)
}
