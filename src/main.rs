//! The Lambda bootstrap: logging, configuration, clients, then the runtime loop.
// The handler's future nests every step's; its layout needs more than the default 128 query levels.
#![recursion_limit = "256"]

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use spot_cleanup::{App, Clients, Config, handle};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    spot_cleanup::logging::init();
    let config = Config::from_env().inspect_err(|e| tracing::error!(error = %e, "bad configuration"))?;
    let shared = spot_cleanup::clients::load_shared().await;
    let app = App::new(config, Clients::from_shared(&shared)).serving_other_places(shared);
    if app.config.warm_up {
        let warmed = spot_cleanup::warm::warm_up(&app).await;
        tracing::info!(warm_up = ?warmed, "connections warmed during init");
    }
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| handle(&app, event))).await
}
