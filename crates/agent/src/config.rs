//! The agent's environment -> `AgentConfig`, read once at start-up; every error names the variable.

use std::net::SocketAddr;
use std::time::Duration;

/// A variable that is missing or wrong; the message names it.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("{name} is not set: {hint}")]
    Missing { name: &'static str, hint: &'static str },
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// How often instance metadata is asked, in seconds. A Spot notice gives two minutes, so one to five seconds of
/// latency costs nothing, while a faster loop would only spend CPU.
pub const DEFAULT_POLL_SECONDS: u64 = 2;
pub const POLL_SECONDS_RANGE: std::ops::RangeInclusive<u64> = 1..=5;

#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// The cleanup function: a name, a partial ARN or a full ARN, as Lambda's Invoke accepts it.
    pub function: String,
    /// Time between two rounds of metadata reads (`SPOT_AGENT_POLL_INTERVAL`, whole seconds, 1 to 5, default 2).
    pub poll_interval: Duration,
    /// Where the probes (and metrics) are served (`SPOT_AGENT_LISTEN_ADDRESS`, `host:port`); unset, nothing listens.
    pub listen: Option<SocketAddr>,
    /// Serve `/metrics` on that listener too (`SPOT_AGENT_METRICS`, `true` or `false`, default `false`).
    pub metrics: bool,
}

impl AgentConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Build from any variable lookup, so tests need not touch the process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let function = get("SPOT_CLEANUP_FUNCTION")
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .ok_or(ConfigError::Missing {
                name: "SPOT_CLEANUP_FUNCTION",
                hint: "the name or ARN of the spot-cleanup function to invoke",
            })?;
        if function.chars().any(char::is_whitespace) {
            return Err(ConfigError::Invalid {
                name: "SPOT_CLEANUP_FUNCTION",
                value: function,
                reason: "a function name or ARN has no whitespace",
            });
        }
        let poll_seconds = match get("SPOT_AGENT_POLL_INTERVAL") {
            None => DEFAULT_POLL_SECONDS,
            Some(raw) => raw
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|s| POLL_SECONDS_RANGE.contains(s))
                .ok_or(ConfigError::Invalid {
                    name: "SPOT_AGENT_POLL_INTERVAL",
                    value: raw,
                    reason: "expected whole seconds from 1 to 5",
                })?,
        };
        let (listen, metrics) = listener(&get)?;
        Ok(Self {
            function,
            poll_interval: Duration::from_secs(poll_seconds),
            listen,
            metrics,
        })
    }
}

/// `SPOT_AGENT_LISTEN_ADDRESS` and `SPOT_AGENT_METRICS`: metrics need somewhere to be served.
fn listener(get: &impl Fn(&str) -> Option<String>) -> Result<(Option<SocketAddr>, bool), ConfigError> {
    let listen = match get("SPOT_AGENT_LISTEN_ADDRESS").map(|v| v.trim().to_owned()) {
        None => None,
        Some(raw) if raw.is_empty() => None,
        Some(raw) => Some(raw.parse::<SocketAddr>().map_err(|_| ConfigError::Invalid {
            name: "SPOT_AGENT_LISTEN_ADDRESS",
            value: raw,
            reason: "expected an address and port such as 0.0.0.0:8080 or [::]:8080",
        })?),
    };
    let metrics = match get("SPOT_AGENT_METRICS").map(|v| v.trim().to_ascii_lowercase()) {
        None => false,
        Some(raw) => match raw.as_str() {
            "" | "false" => false,
            "true" => true,
            _ => {
                return Err(ConfigError::Invalid {
                    name: "SPOT_AGENT_METRICS",
                    value: raw,
                    reason: "expected true or false",
                });
            }
        },
    };
    if metrics && listen.is_none() {
        return Err(ConfigError::Missing {
            name: "SPOT_AGENT_LISTEN_ADDRESS",
            hint: "SPOT_AGENT_METRICS=true serves /metrics there, e.g. 0.0.0.0:8080",
        });
    }
    Ok((listen, metrics))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<AgentConfig, ConfigError> {
        AgentConfig::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn the_function_is_required_and_the_interval_defaults_to_two_seconds() {
        assert!(matches!(
            config(&[]),
            Err(ConfigError::Missing {
                name: "SPOT_CLEANUP_FUNCTION",
                ..
            })
        ));
        assert!(matches!(
            config(&[("SPOT_CLEANUP_FUNCTION", "  ")]),
            Err(ConfigError::Missing {
                name: "SPOT_CLEANUP_FUNCTION",
                ..
            })
        ));
        let c = config(&[(
            "SPOT_CLEANUP_FUNCTION",
            "arn:aws:lambda:us-east-1:123456789012:function:spot-cleanup",
        )])
        .unwrap();
        assert_eq!(
            c.function,
            "arn:aws:lambda:us-east-1:123456789012:function:spot-cleanup"
        );
        assert_eq!(c.poll_interval, Duration::from_secs(2));
        assert_eq!((c.listen, c.metrics), (None, false), "nothing listens unless asked");
    }

    #[test]
    fn the_listener_takes_an_address_and_metrics_need_one() {
        let c = config(&[
            ("SPOT_CLEANUP_FUNCTION", "f"),
            ("SPOT_AGENT_LISTEN_ADDRESS", " 0.0.0.0:8080 "),
            ("SPOT_AGENT_METRICS", "TRUE"),
        ])
        .unwrap();
        assert_eq!(c.listen, Some("0.0.0.0:8080".parse().unwrap()));
        assert!(c.metrics);
        let c = config(&[
            ("SPOT_CLEANUP_FUNCTION", "f"),
            ("SPOT_AGENT_LISTEN_ADDRESS", "[::]:9090"),
        ])
        .unwrap();
        assert_eq!((c.listen.map(|a| a.port()), c.metrics), (Some(9090), false));
        for bad in ["8080", "localhost:8080", "0.0.0.0", "0.0.0.0:http"] {
            assert!(
                matches!(
                    config(&[("SPOT_CLEANUP_FUNCTION", "f"), ("SPOT_AGENT_LISTEN_ADDRESS", bad)]),
                    Err(ConfigError::Invalid {
                        name: "SPOT_AGENT_LISTEN_ADDRESS",
                        ..
                    })
                ),
                "{bad:?} is refused"
            );
        }
        assert!(matches!(
            config(&[("SPOT_CLEANUP_FUNCTION", "f"), ("SPOT_AGENT_METRICS", "yes")]),
            Err(ConfigError::Invalid {
                name: "SPOT_AGENT_METRICS",
                ..
            })
        ));
        assert!(matches!(
            config(&[("SPOT_CLEANUP_FUNCTION", "f"), ("SPOT_AGENT_METRICS", "true")]),
            Err(ConfigError::Missing {
                name: "SPOT_AGENT_LISTEN_ADDRESS",
                ..
            })
        ));
    }

    #[test]
    fn the_interval_is_whole_seconds_from_one_to_five() {
        for ok in ["1", "5", " 3 "] {
            let c = config(&[("SPOT_CLEANUP_FUNCTION", "f"), ("SPOT_AGENT_POLL_INTERVAL", ok)]).unwrap();
            assert_eq!(c.poll_interval, Duration::from_secs(ok.trim().parse().unwrap()));
        }
        for bad in ["0", "6", "1.5", "fast", ""] {
            assert!(
                matches!(
                    config(&[("SPOT_CLEANUP_FUNCTION", "f"), ("SPOT_AGENT_POLL_INTERVAL", bad)]),
                    Err(ConfigError::Invalid {
                        name: "SPOT_AGENT_POLL_INTERVAL",
                        ..
                    })
                ),
                "{bad:?} is refused"
            );
        }
        assert!(matches!(
            config(&[("SPOT_CLEANUP_FUNCTION", "my function")]),
            Err(ConfigError::Invalid {
                name: "SPOT_CLEANUP_FUNCTION",
                ..
            })
        ));
    }
}
