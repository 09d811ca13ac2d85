//! For the tests of the crates that export metrics: a blocking HTTP GET small enough to need no
//! client library, and `promtool check metrics` on a scrape. Not used by any server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long one request or one promtool run may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// `GET path` over HTTP/1.0 with an optional `Accept` header: the status code and the body.
pub fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {response:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    Ok((status, body.to_owned()))
}

/// Runs `promtool check metrics` on `exposition` and returns what it reported: `Ok` with nothing
/// to say, `Err` with its findings (or why it could not run).
pub fn promtool_check_metrics(exposition: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run promtool ({e}); install Debian's `prometheus` package, as .ci/run does"
            )
        })?;
    child
        .stdin
        .take()
        .ok_or("promtool has no stdin")?
        .write_all(exposition.as_bytes())
        .map_err(|e| format!("cannot feed promtool: {e}"))?;
    let output = child
        .wait_with_output()
        .map_err(|e| format!("promtool did not finish: {e}"))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!(
            "promtool check metrics ({}): {said}",
            output.status
        ))
    }
}

/// The value of the sample written exactly as `series` (`name` or `name{labels}`) in a text
/// exposition, if there is one.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}
