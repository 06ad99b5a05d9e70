//! The function's environment as template.yaml deploys it: its variables resolved from the template with the given
//! parameters (the rest at their defaults) by `template_env.py` (cfn-lint's decoder, from the project venv), and the
//! stack's own resources standing in as the test's.

use std::collections::BTreeMap;
use std::process::Command;

use super::{repo_root, venv_bin};

/// `SpotCleanupFunction`'s variables as the template sets them.
pub struct TemplateEnv(BTreeMap<String, String>);

impl TemplateEnv {
    pub fn cleanup_function(parameters: &[(&str, &str)]) -> TemplateEnv {
        let overrides: serde_json::Map<String, serde_json::Value> = parameters
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let output = Command::new(venv_bin("python"))
            .arg(repo_root().join("tests/it/common/template_env.py"))
            .arg(repo_root().join("template.yaml"))
            .arg("SpotCleanupFunction")
            .arg(serde_json::Value::Object(overrides).to_string())
            .output()
            .expect("the venv's python runs");
        assert!(
            output.status.success(),
            "template_env.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        TemplateEnv(serde_json::from_slice(&output.stdout).expect("a JSON object of strings"))
    }

    /// The value as the template sets it, before any stand-in.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The configuration the function reads from this environment, each `<Resource>` of the stack replaced by its
    /// stand-in. A reference left without one fails the test, naming it.
    pub fn config(&self, stand_ins: &[(&str, &str)]) -> spot_cleanup::Config {
        let resolved: BTreeMap<String, String> = self
            .0
            .iter()
            .map(|(name, value)| {
                let mut value = value.clone();
                for (resource, stand_in) in stand_ins {
                    value = value.replace(&format!("<{resource}>"), stand_in);
                }
                assert!(
                    !value.contains('<'),
                    "{name}={value}: give the test a stand-in for the stack's resource"
                );
                (name.clone(), value)
            })
            .collect();
        spot_cleanup::Config::from_lookup(|name| resolved.get(name).cloned()).expect("the template's configuration")
    }
}
