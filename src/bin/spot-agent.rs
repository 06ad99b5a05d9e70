//! The node agent's start-up: JSON logs, configuration, then the watch loop until SIGTERM or SIGINT.

use std::process::ExitCode;

use spot_cleanup::agent::{self, AgentConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    spot_cleanup::logging::init_timestamped();
    let config = match AgentConfig::from_env() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %e, "bad configuration");
            return ExitCode::from(2);
        }
    };
    match agent::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cannot run");
            ExitCode::FAILURE
        }
    }
}
