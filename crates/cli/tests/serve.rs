//! `bitnet serve` as a process: it says where it listens, answers, and on SIGTERM stops
//! accepting, finishes and exits 0; a port in use is a clear error.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn get(addr: &str, path: &str) -> Option<String> {
    let mut c = TcpStream::connect(addr).ok()?;
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn serves_then_stops_cleanly_on_sigterm() {
    let mut child = common::bitnet_command()
        .args(["serve", "--port", "0", "-c", "256", "-t", "1"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut addr = None;
    let mut seen = String::new();
    for _ in 0..20 {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
        if let Some(a) = line.trim().strip_prefix("listening on http://") {
            addr = Some(a.split_whitespace().next().unwrap().to_owned());
            break;
        }
    }
    let addr = addr.unwrap_or_else(|| panic!("no address in: {seen}"));
    let t = Instant::now();
    while !get(&addr, "/health").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
        assert!(t.elapsed() < Duration::from_secs(120), "never healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    let models = get(&addr, "/v1/models").unwrap();
    assert!(models.contains("bitnet-demo"), "{models}");
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    let code = child.wait().unwrap();
    assert_eq!(code.code(), Some(0), "{seen}{rest}");
    assert!(rest.contains("stopped"), "{rest}");
    assert!(get(&addr, "/health").is_none(), "still answering after exit");
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = common::bitnet_command().args(["serve", "--port", &port]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{err}");
    let out = common::bitnet_command().args(["serve", "--api-key", ""]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
}
