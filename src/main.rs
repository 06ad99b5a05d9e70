//! The Lambda bootstrap: logging, configuration, clients, then the runtime loop.
// The handler's future nests every step's; its layout needs more than the default 128 query levels.
#![recursion_limit = "256"]

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use spot_cleanup::monitoring::secrets::SecretClients;
use spot_cleanup::{App, Clients, Config, handle};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    spot_cleanup::logging::init();
    let config = Config::from_env().inspect_err(|e| tracing::error!(error = %e, "bad configuration"))?;
    let monitored = !config.monitoring.is_empty();
    let shared = spot_cleanup::clients::load_shared().await;
    let mut app = App::new(config, Clients::from_shared(&shared)).serving_other_places(shared);
    if monitored {
        app = app.with_secret_clients(SecretClients::from_env().await);
    }
    // Lives as long as the process; the warm-up task and the handler both borrow it.
    let app: &'static App = Box::leak(Box::new(app));
    if app.config.warm_up {
        tokio::spawn(spot_cleanup::warm::warm_up_in_background(app));
    }
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| handle(app, event))).await
}
