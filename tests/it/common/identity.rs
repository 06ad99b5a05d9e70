//! A signing key and certificate made at test time with the openssl CLI, standing in for AWS's per-region instance
//! identity certificate, and documents signed with it the way instance metadata signs them (RSA PKCS#1 v1.5, SHA-256,
//! base64).

use std::path::PathBuf;
use std::process::Command;

pub struct Signer {
    dir: PathBuf,
    pub cert_pem: String,
}

impl Signer {
    pub fn new() -> Signer {
        let dir = std::env::temp_dir().join(format!(
            "spot-cleanup-identity-{}-{}",
            std::process::id(),
            super::free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("openssl")
            .current_dir(&dir)
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem",
            ])
            .args(["-days", "1", "-subj", "/CN=test identity certificate"])
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl runs (scripts/setup test installs it)");
        assert!(status.success());
        let cert_pem = std::fs::read_to_string(dir.join("cert.pem")).unwrap();
        Signer { dir, cert_pem }
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// The base64 signature of `document`'s bytes.
    pub fn sign(&self, document: &str) -> String {
        let file = self.dir.join(format!("doc-{}", super::free_port()));
        std::fs::write(&file, document).unwrap();
        let output = Command::new("openssl")
            .current_dir(&self.dir)
            .args(["dgst", "-sha256", "-sign", "key.pem"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(output.status.success());
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(output.stdout)
    }
}

/// An identity document shaped like the one instance metadata serves.
pub fn document(instance_id: &str, account: &str, region: &str) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "accountId": account,
        "architecture": "x86_64",
        "availabilityZone": format!("{region}a"),
        "imageId": "ami-0123456789abcdef0",
        "instanceId": instance_id,
        "instanceType": "m5.large",
        "pendingTime": "2026-11-22T01:00:00Z",
        "privateIp": "10.0.1.10",
        "region": region,
        "version": "2017-09-30"
    }))
    .unwrap()
}

impl Drop for Signer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
