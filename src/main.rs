//! The Lambda bootstrap: logging, configuration, clients, then the runtime loop.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use spot_cleanup::{App, Clients, Config, handle};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    spot_cleanup::logging::init();
    let config = Config::from_env().inspect_err(|e| tracing::error!(error = %e, "bad configuration"))?;
    let app = App::new(config, Clients::from_env().await);
    if app.config.warm_up {
        let warmed = spot_cleanup::warm::warm_up(&app).await;
        tracing::info!(warm_up = ?warmed, "connections warmed during init");
    }
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| handle(&app, event))).await
}
