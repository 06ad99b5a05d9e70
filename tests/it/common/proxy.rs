//! A recording HTTP proxy between the function binary and moto: the binary's SDK cannot take the in-process
//! `CallCounter`, so this counts its AWS operations on the wire instead (the query protocol's `Action=`, or the JSON
//! protocol's `X-Amz-Target`). One request per connection: it asks moto to close, and closes in turn.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct WireCalls(Arc<Mutex<Vec<String>>>);

impl WireCalls {
    pub fn sequence(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Start the proxy in front of `upstream` (`http://127.0.0.1:<port>`); returns its endpoint and the recorder.
pub fn start(upstream: &str) -> (String, WireCalls) {
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let calls = WireCalls::default();
    let recorder = calls.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let (upstream, recorder) = (upstream.clone(), recorder.clone());
            std::thread::spawn(move || {
                let _ = relay(client, &upstream, &recorder);
            });
        }
    });
    (endpoint, calls)
}

fn relay(client: TcpStream, upstream: &str, calls: &WireCalls) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut length = 0usize;
    let mut target = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("x-amz-target:") {
            target = line
                .split(':')
                .nth(1)
                .map(|t| t.trim().rsplit('.').next().unwrap_or("").to_owned());
        }
        if lower.starts_with("connection:") {
            continue;
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        head.extend_from_slice(line.as_bytes());
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let action = target.or_else(|| {
        String::from_utf8_lossy(&body)
            .split('&')
            .find_map(|pair| pair.strip_prefix("Action=").map(str::to_owned))
    });
    calls.0.lock().unwrap().push(action.unwrap_or_else(|| "?".into()));
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(&head)?;
    server.write_all(&body)?;
    let mut response = Vec::new();
    server.read_to_end(&mut response)?;
    let mut client = client;
    client.write_all(&response)?;
    client.shutdown(std::net::Shutdown::Both)
}
