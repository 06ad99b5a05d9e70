//! Secret values for the monitoring APIs: given in the environment, or, better, named there and read from SSM
//! Parameter Store (`ssm:<name>`) or Secrets Manager (`secretsmanager:<id or ARN>`) when the step runs, so that a
//! rotated key is picked up without a redeploy.

use std::fmt;

use crate::aws::CallError;

/// Why a secret could not be read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SecretError {
    #[error("no SSM or Secrets Manager client was set up")]
    NoClients,
    #[error("SSM GetParameter {name}: {}", error.reason())]
    Parameter { name: String, error: CallError },
    #[error("SSM parameter {0} has no value")]
    ParameterEmpty(String),
    #[error("Secrets Manager GetSecretValue {id}: {}", error.reason())]
    Secret { id: String, error: CallError },
    #[error("secret {0} has no string value")]
    SecretEmpty(String),
}

/// A secret's value, read for one invocation. Not `Debug`, so that it cannot be logged by mistake.
#[derive(Clone, PartialEq)]
pub struct Key(pub String);

#[derive(Clone, PartialEq)]
pub enum Secret {
    Literal(String),
    Parameter(String),
    SecretsManager(String),
}

impl Secret {
    pub fn parse(raw: &str) -> Self {
        let raw = raw.trim();
        if let Some(name) = raw.strip_prefix("ssm:") {
            Secret::Parameter(name.to_owned())
        } else if let Some(id) = raw.strip_prefix("secretsmanager:") {
            Secret::SecretsManager(id.to_owned())
        } else {
            Secret::Literal(raw.to_owned())
        }
    }

    pub async fn resolve(&self, clients: Option<&SecretClients>) -> Result<String, SecretError> {
        let stores = || clients.ok_or(SecretError::NoClients);
        match self {
            Secret::Literal(value) => Ok(value.clone()),
            Secret::Parameter(name) => stores()?
                .ssm
                .get_parameter()
                .name(name)
                .with_decryption(true)
                .send()
                .await
                .map_err(|e| SecretError::Parameter {
                    name: name.clone(),
                    error: CallError::new("GetParameter", &e),
                })?
                .parameter
                .and_then(|p| p.value)
                .ok_or_else(|| SecretError::ParameterEmpty(name.clone())),
            Secret::SecretsManager(id) => stores()?
                .secrets
                .get_secret_value()
                .secret_id(id)
                .send()
                .await
                .map_err(|e| SecretError::Secret {
                    id: id.clone(),
                    error: CallError::new("GetSecretValue", &e),
                })?
                .secret_string
                .ok_or_else(|| SecretError::SecretEmpty(id.clone())),
        }
    }
}

/// Never prints a literal secret: configuration is logged on errors.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Literal(_) => f.write_str("Literal(** redacted **)"),
            Secret::Parameter(name) => write!(f, "Parameter({name})"),
            Secret::SecretsManager(id) => write!(f, "SecretsManager({id})"),
        }
    }
}

/// The two stores a secret can come from.
#[derive(Clone, Debug)]
pub struct SecretClients {
    pub ssm: aws_sdk_ssm::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
}

impl SecretClients {
    pub fn from_shared(shared: &aws_config::SdkConfig) -> Self {
        Self {
            ssm: aws_sdk_ssm::Client::new(shared),
            secrets: aws_sdk_secretsmanager::Client::new(shared),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_names_the_store_and_a_literal_is_never_printed() {
        assert_eq!(
            Secret::parse("ssm:/spot-cleanup/dd"),
            Secret::Parameter("/spot-cleanup/dd".into())
        );
        assert_eq!(
            Secret::parse(" secretsmanager:arn:aws:secretsmanager:us-east-1:123456789012:secret:dd "),
            Secret::SecretsManager("arn:aws:secretsmanager:us-east-1:123456789012:secret:dd".into())
        );
        let literal = Secret::parse("abc123");
        assert_eq!(literal, Secret::Literal("abc123".into()));
        assert!(!format!("{literal:?}").contains("abc123"));
    }
}
