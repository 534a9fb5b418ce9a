//! The one HTTP/1.1 client of the end-to-end tests: std's `TcpStream`, one request per
//! connection (`Connection: close`), raw enough to send what a real client never would
//! (bad content types, duplicate fields, arrays) and to see exactly what came back.

use std::fmt::{self, Write as _};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// How long a request may take, connecting included.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// What the server answered.
#[derive(Debug)]
pub struct Response {
    /// Request line, for messages.
    pub request: String,
    /// The status code.
    pub status: u16,
    /// Headers as sent (names in their case).
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Whether it came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {} {:?} {}",
            self.request,
            self.status,
            self.header("content-type").unwrap_or("(no content type)"),
            String::from_utf8_lossy(&self.body)
        )
    }
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; it must say so in its content type.
    pub fn json(&self) -> Value {
        self.try_json().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_json(&self) -> Result<Value, String> {
        if !self
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"))
        {
            return Err(format!("not an application/json response: {self}"));
        }
        serde_json::from_slice(&self.body).map_err(|e| format!("invalid JSON ({e}): {self}"))
    }

    /// An error's `{"message": "..."}` (JSON, nothing else, not empty).
    pub fn try_message(&self) -> Result<String, String> {
        let body = self.try_json()?;
        let message = body
            .get("message")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no string `message` in the error: {self}"))?;
        if message.trim().is_empty() {
            return Err(format!("empty error message: {self}"));
        }
        if body.as_object().map(serde_json::Map::len) != Some(1) {
            return Err(format!("an error has only `message`: {self}"));
        }
        Ok(message.to_owned())
    }

    pub fn message(&self) -> String {
        self.try_message().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Fails the test unless the status is `status`.
    pub fn expect(self, status: u16) -> Response {
        assert_eq!(self.status, status, "unexpected status: {self}");
        self
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = find(data, b"\r\n").expect("chunk size line");
        let size = std::str::from_utf8(&data[..end]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Sends one request and reads the whole response (`Connection: close`).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    let request_line = format!("{method} {path}");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    if body.is_some() || matches!(method, "POST" | "PUT" | "PATCH") {
        let _ = write!(
            head,
            "Content-Length: {}\r\n",
            body.unwrap_or_default().len()
        );
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body.unwrap_or_default());
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
        .unwrap_or_else(|e| panic!("{request_line}: cannot connect to {addr}: {e}"));
    stream.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(HTTP_TIMEOUT)).unwrap();
    stream
        .write_all(&raw)
        .unwrap_or_else(|e| panic!("{request_line}: sending: {e}"));
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .unwrap_or_else(|e| panic!("{request_line}: reading the response: {e}"));
    let split = find(&answer, b"\r\n\r\n").unwrap_or_else(|| {
        panic!(
            "{request_line}: no complete response head: {:?}",
            String::from_utf8_lossy(&answer)
        )
    });
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{request_line}: bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut response = Response {
        request: request_line,
        status,
        headers,
        body: answer[split + 4..].to_vec(),
        chunked: false,
    };
    response.chunked = response
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
    if response.chunked {
        response.body = dechunk(&response.body);
    }
    response
}
