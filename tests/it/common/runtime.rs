//! The real function binary under the Lambda runtime loop: `cargo lambda watch --only-lambda-apis` emulates the
//! Runtime and Invoke APIs, the binary polls it as it would in Lambda, and payloads go in through
//! `cargo lambda invoke --data-file` or a raw HTTP POST to the Invoke API.
//!
//! Calls block: the emulator and the function are other processes, so a test's async runtime has nothing to do
//! while it waits.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::fleet::Fleet;
use super::{Background, Moto, free_port, repo_root, venv_bin, wait_for_port};

/// How long the emulator waits for the function's answer. A stuck function then fails the invocation instead of
/// hanging the test.
const INVOKE_TIMEOUT_SECS: u64 = 60;

/// What `cargo lambda watch` tells the function to set; `lambda_runtime` refuses to start without them.
const LAMBDA_ENV: [(&str, &str); 3] = [
    ("AWS_LAMBDA_FUNCTION_NAME", "_"),
    ("AWS_LAMBDA_FUNCTION_VERSION", "1"),
    ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
];

/// The environment the function needs to clean up `fleet` on `moto`: the SDK pointed at moto, plus the same
/// configuration as `Fleet::config`.
pub fn function_env(moto: &Moto, fleet: &Fleet, dry_run: bool) -> Vec<(&'static str, String)> {
    let mut env = moto.env();
    env.push(("SNS_TOPIC_ARN", fleet.topic_arn.clone()));
    env.push((
        "QUARANTINE_SECURITY_GROUP_ID",
        format!("{},{}", fleet.other_vpc_quarantine_group, fleet.quarantine_group),
    ));
    env.push(("DRY_RUN", dry_run.to_string()));
    env.push(("RECORD_KEY_ID", fleet.record_key.clone()));
    env
}

/// The Lambda `errorType` that `cargo lambda invoke` printed for a failed invocation (`Error: <errorType>`).
pub fn error_type(stderr: &str) -> Option<&str> {
    stderr
        .lines()
        .find_map(|line| line.trim().strip_prefix("Error: "))
        .map(str::trim)
}

/// An emulator and one function process polling it; both are killed on drop. The function's output goes to a log
/// file, shown when a test fails while this is alive.
pub struct LambdaRuntime {
    function: Mutex<Background>,
    _emulator: Background,
    port: u16,
    dir: PathBuf,
    payloads: AtomicUsize,
}

impl LambdaRuntime {
    /// Start the emulator, then `binary` with `env` (and nothing else from this process's environment, so a
    /// developer's AWS_PROFILE or endpoint settings cannot leak in).
    pub fn start(binary: &Path, env: &[(&str, String)]) -> LambdaRuntime {
        assert!(
            binary.exists(),
            "{} is missing: build it first (cargo build --bin spot-cleanup)",
            binary.display()
        );
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("spot-cleanup-runtime-{}-{port}", std::process::id()));
        fs::create_dir_all(&dir).expect("a scratch directory");

        let emulator_log = File::create(dir.join("emulator.log")).expect("emulator log");
        let emulator = Command::new(venv_bin("cargo-lambda"))
            .current_dir(repo_root())
            .args(["lambda", "watch", "--only-lambda-apis", "--color", "never"])
            .args(["--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &port.to_string()])
            .args(["--timeout", &INVOKE_TIMEOUT_SECS.to_string()])
            .stdin(Stdio::null())
            .stdout(emulator_log.try_clone().expect("log handle"))
            .stderr(emulator_log)
            .spawn()
            .expect("cargo lambda watch starts");
        let emulator = Background(emulator);
        wait_for_port(port, "cargo lambda watch");

        let function_log = File::create(dir.join("function.log")).expect("function log");
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", format!("http://127.0.0.1:{port}/.rt"))
            .envs(LAMBDA_ENV)
            .envs(env.iter().map(|(k, v)| (k, v)));
        for inherited in ["RUST_LOG", "RUST_BACKTRACE"] {
            if let Ok(value) = std::env::var(inherited) {
                command.env(inherited, value);
            }
        }
        let function = command
            .stdin(Stdio::null())
            .stdout(function_log.try_clone().expect("log handle"))
            .stderr(function_log)
            .spawn()
            .expect("the function binary starts");

        LambdaRuntime {
            function: Mutex::new(Background(function)),
            _emulator: emulator,
            port,
            dir,
            payloads: AtomicUsize::new(0),
        }
    }

    /// Invoke with a payload file, as `cargo lambda invoke --data-file` does. `Ok` is the function's JSON answer;
    /// `Err` is the invoker's error output, whose first line names the `errorType` (see [`error_type`]).
    pub fn invoke_file(&self, payload: &Path) -> Result<Value, String> {
        self.assert_function_running();
        let output = Command::new(venv_bin("cargo-lambda"))
            .current_dir(repo_root())
            .args(["lambda", "invoke", "--color", "never"])
            .args(["--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &self.port.to_string()])
            .arg("--data-file")
            .arg(payload)
            .stdin(Stdio::null())
            .output()
            .expect("cargo lambda invoke runs");
        if !output.status.success() {
            let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            if let Some(exit) = self.function_exit() {
                stderr.push_str(&format!("\n(the function {exit})"));
            }
            return Err(stderr);
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        Ok(serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("the answer is not JSON ({e}): {stdout}")))
    }

    /// Invoke with a JSON payload, written to a file of its own first.
    pub fn invoke_json(&self, payload: &Value) -> Result<Value, String> {
        let n = self.payloads.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("payload-{n}.json"));
        fs::write(&path, serde_json::to_vec_pretty(payload).expect("JSON")).expect("payload file");
        self.invoke_file(&path)
    }

    /// POST any bytes to the Invoke API, as Lambda's Invoke call would; returns the HTTP status and body.
    pub fn post_raw(&self, body: &[u8]) -> (u16, String) {
        self.assert_function_running();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("the emulator accepts connections");
        stream
            .set_read_timeout(Some(Duration::from_secs(INVOKE_TIMEOUT_SECS + 30)))
            .expect("read timeout");
        let head = format!(
            "POST /2015-03-31/functions/_/invocations HTTP/1.1\r\n\
             Host: 127.0.0.1:{}\r\n\
             Content-Type: application/json\r\n\
             Content-Length: {}\r\n\
             Connection: close\r\n\r\n",
            self.port,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body))
            .expect("the request is sent");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).expect("the emulator answers");
        parse_response(&response)
    }

    /// Hand the emulator an invocation and do not wait for its answer: for a function that is about to be killed,
    /// whose invocation would otherwise hang until the emulator's timeout. Dropping the stream abandons it.
    pub fn send_without_waiting(&self, payload: &Value) -> TcpStream {
        self.assert_function_running();
        let body = serde_json::to_vec(payload).expect("JSON");
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("the emulator accepts connections");
        let head = format!(
            "POST /2015-03-31/functions/_/invocations HTTP/1.1\r\n\
             Host: 127.0.0.1:{}\r\n\
             Content-Type: application/json\r\n\
             Content-Length: {}\r\n\
             Connection: close\r\n\r\n",
            self.port,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(&body))
            .expect("the request is sent");
        stream
    }

    /// The emulator's Lambda Invoke API, for an SDK client (`AWS_ENDPOINT_URL_LAMBDA`); its function is named `_`.
    pub fn invoke_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The function process's id.
    pub fn pid(&self) -> u32 {
        self.function.lock().unwrap_or_else(|e| e.into_inner()).0.id()
    }

    /// Whether the function process has ended (it was killed, or it crashed).
    pub fn function_ended(&self) -> bool {
        self.function_exit().is_some()
    }

    /// Everything the function wrote so far (its JSON log lines).
    pub fn function_log(&self) -> String {
        fs::read_to_string(self.dir.join("function.log")).unwrap_or_default()
    }

    /// The function's log lines that are JSON objects, in order.
    pub fn log_lines(&self) -> Vec<Value> {
        self.function_log()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(Value::is_object)
            .collect()
    }

    pub fn function_log_path(&self) -> PathBuf {
        self.dir.join("function.log")
    }

    /// How the function process ended, if it has.
    fn function_exit(&self) -> Option<String> {
        let mut function = self.function.lock().unwrap_or_else(|e| e.into_inner());
        let status = function.0.try_wait().ok().flatten()?;
        Some(format!(
            "exited with {status}; its log, {}:\n{}",
            self.function_log_path().display(),
            self.function_log()
        ))
    }

    fn assert_function_running(&self) {
        if let Some(exit) = self.function_exit() {
            panic!("the function is not running: it {exit}");
        }
    }
}

impl Drop for LambdaRuntime {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Not eprintln!: a second panic here, say on a closed stderr, would abort before the processes are killed.
            let _ = writeln!(
                std::io::stderr(),
                "--- the function's log, {} ---\n{}--- end of the function's log (the emulator's is {}) ---",
                self.function_log_path().display(),
                self.function_log(),
                self.dir.join("emulator.log").display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Status and body of an HTTP/1.1 response read to the end of the connection.
fn parse_response(raw: &[u8]) -> (u16, String) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let chunked = head
        .lines()
        .any(|line| line.starts_with("transfer-encoding:") && line.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_vec() };
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&rest[..end]);
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).expect("a chunk size");
        let data = &rest[end + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        body.extend_from_slice(&data[..size]);
        rest = data[size..].strip_prefix(b"\r\n").unwrap_or(&data[size..]);
    }
    body
}
