//! The Lambda bootstrap: logging, the composition root, then the runtime loop.
// The handler's future nests every step's; its layout needs more than the default 128 query levels.
#![recursion_limit = "256"]

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use spot_cleanup::{App, handle};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    spot_cleanup::init_logging(&spot_cleanup::config::log_level());
    let app = App::from_env()
        .await
        .inspect_err(|e| tracing::error!(error = %e, "bad configuration"))?;
    // Lives as long as the process; the warm-up task and the handler both borrow it.
    let app: &'static App = Box::leak(Box::new(app));
    app.start_warm_up();
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| handle(app, event))).await
}
