//! Receivers written on raw tokio TCP sockets, so they can misbehave in ways an HTTP
//! framework will not: accept and never answer, answer one byte at a time, stream a
//! 50 MB body, reset the connection, go down and come back on the same port.
//!
//! A [`TcpReceiver`] reads HTTP/1.1 requests (with keep-alive), records each one
//! (`webhook-id`, the body's top-level `id`, arrival time), and answers as its
//! [`Behaviour`] says for the n-th request.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// What a receiver does with a request it has read.
#[derive(Clone, Debug)]
pub enum Action {
    /// Answers this status after `delay`, with these extra headers.
    Answer {
        status: u16,
        delay: Duration,
        headers: Vec<(String, String)>,
    },
    /// Never answers; holds the connection open.
    Hang,
    /// Writes a `200` answer one byte every `per_byte`.
    Trickle { per_byte: Duration },
    /// Answers `200` with a body of this many bytes, streamed.
    Huge { bytes: u64 },
    /// Resets the connection (`SO_LINGER` 0, then close): the client sees ECONNRESET.
    Reset,
}

impl Action {
    pub fn ok() -> Self {
        Self::status(200)
    }
    pub fn status(status: u16) -> Self {
        Self::Answer {
            status,
            delay: Duration::ZERO,
            headers: Vec::new(),
        }
    }
    pub fn after(delay: Duration, status: u16) -> Self {
        Self::Answer {
            status,
            delay,
            headers: Vec::new(),
        }
    }
}

/// How the n-th request (0-based, over the receiver's life) is answered.
pub type Behaviour = Arc<dyn Fn(usize) -> Action + Send + Sync>;

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    /// The request's number over the receiver's life (the `n` its behaviour was asked with).
    pub n: usize,
    pub webhook_id: String,
    /// The body's top-level string `id` (the provider's event id), or empty.
    pub body_id: String,
    pub path: String,
    pub at: Instant,
}

struct State {
    behaviour: Mutex<Behaviour>,
    received: Mutex<Vec<Received>>,
    /// Whether to keep [`Received`] entries (a soak only counts).
    keep: bool,
    count: AtomicUsize,
    /// Connections accepted in all.
    connections: AtomicUsize,
    /// Requests read and not yet answered (or given up on), and the most there ever were.
    answering: AtomicUsize,
    most_answering: AtomicUsize,
    /// Reset every other connection right after accepting it, before reading anything.
    reset_on_accept: bool,
    /// Body bytes written by `Huge` answers before the client hung up, per connection.
    huge_written: Mutex<Vec<u64>>,
    /// Running tasks (accept loop and connections), so going down stops them all.
    tasks: Mutex<Vec<AbortHandle>>,
}

/// A receiver on `127.0.0.1:port`.
pub struct TcpReceiver {
    pub port: u16,
    state: Arc<State>,
}

impl TcpReceiver {
    /// Answers 200 at once to everything.
    pub async fn healthy() -> Self {
        Self::start(|_| Action::ok()).await
    }

    pub async fn start(behaviour: impl Fn(usize) -> Action + Send + Sync + 'static) -> Self {
        Self::build(Arc::new(behaviour), true, false).await
    }

    /// Only counts requests (for long runs that would otherwise keep every request).
    pub async fn counting() -> Self {
        Self::build(Arc::new(|_| Action::ok()), false, false).await
    }

    /// Resets every connection: every other one at once, the others after reading the request.
    pub async fn resetting() -> Self {
        Self::build(Arc::new(|_| Action::Reset), true, true).await
    }

    async fn build(behaviour: Behaviour, keep: bool, reset_on_accept: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding a receiver");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            behaviour: Mutex::new(behaviour),
            received: Mutex::new(Vec::new()),
            keep,
            count: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            answering: AtomicUsize::new(0),
            most_answering: AtomicUsize::new(0),
            reset_on_accept,
            huge_written: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
        });
        let receiver = Self { port, state };
        receiver.serve(listener);
        receiver
    }

    fn serve(&self, listener: TcpListener) {
        let state = self.state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let n = state.connections.fetch_add(1, Ordering::SeqCst);
                let conn_state = state.clone();
                let handle = tokio::spawn(async move {
                    if conn_state.reset_on_accept && n % 2 == 0 {
                        reset(stream);
                        return;
                    }
                    let _ = serve_connection(stream, &conn_state).await;
                });
                let mut tasks = state.tasks.lock().unwrap();
                tasks.retain(|t| !t.is_finished());
                tasks.push(handle.abort_handle());
            }
        });
        self.state.tasks.lock().unwrap().push(task.abort_handle());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// Changes how it answers from now on.
    pub fn answer_with(&self, behaviour: impl Fn(usize) -> Action + Send + Sync + 'static) {
        *self.state.behaviour.lock().unwrap() = Arc::new(behaviour);
    }

    /// Closes the listener and every connection: connecting is refused until [`TcpReceiver::come_back`].
    pub fn go_down(&self) {
        for task in self.state.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn come_back(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot bind port {} again: {error}",
                        self.port
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        self.serve(listener);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Requests read in all.
    pub fn count(&self) -> usize {
        self.state.count.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// The most requests it was ever answering at once: what the client really had in
    /// flight here. (Connections overstate it: a client's pool may open a new one while
    /// a finished request's connection is on its way back to the pool.)
    pub fn most_at_once(&self) -> usize {
        self.state.most_answering.load(Ordering::SeqCst)
    }

    /// Body bytes each `Huge` answer got out before the client hung up.
    pub fn huge_written(&self) -> Vec<u64> {
        self.state.huge_written.lock().unwrap().clone()
    }

    /// Arrivals per `webhook-id`.
    pub fn copies(&self) -> HashMap<String, usize> {
        let mut copies = HashMap::new();
        for request in self.received() {
            *copies.entry(request.webhook_id).or_default() += 1;
        }
        copies
    }

    /// Waits until at least `count` requests were read.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.count() < count {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

impl Drop for TcpReceiver {
    fn drop(&mut self) {
        self.go_down();
    }
}

/// Reads until the socket has something, like `AsyncReadExt::read` (which needs a tokio
/// feature the crate does not enable).
pub async fn read_some(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes all of `data`, like `AsyncWriteExt::write_all`.
pub async fn write_all(stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// A parsed request head.
struct Head {
    path: String,
    headers: HashMap<String, String>,
    content_length: usize,
    close: bool,
}

fn parse_head(text: &str) -> Option<Head> {
    let mut lines = text.split("\r\n");
    let request_line = lines.next()?;
    let path = request_line.split(' ').nth(1)?.to_owned();
    let mut headers = HashMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let content_length = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let close = headers
        .get("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    Some(Head {
        path,
        headers,
        content_length,
        close,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Serves requests on one connection until it closes or an action ends it.
async fn serve_connection(stream: TcpStream, state: &State) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16384];
    loop {
        // The head.
        let head_end = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                break end;
            }
            let n = read_some(&stream, &mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = parse_head(&String::from_utf8_lossy(&buf[..head_end]))
            .ok_or_else(|| io::Error::other("bad request head"))?;
        buf.drain(..head_end + 4);
        while buf.len() < head.content_length {
            let n = read_some(&stream, &mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body: Vec<u8> = buf.drain(..head.content_length).collect();

        let n = state.count.fetch_add(1, Ordering::SeqCst);
        let answering = Answering::start(state);
        if state.keep {
            let body_id = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_owned))
                .unwrap_or_default();
            state.received.lock().unwrap().push(Received {
                n,
                webhook_id: head.headers.get("webhook-id").cloned().unwrap_or_default(),
                body_id,
                path: head.path.clone(),
                at: Instant::now(),
            });
        }
        let behaviour = state.behaviour.lock().unwrap().clone();
        match behaviour(n) {
            Action::Answer { status, delay, headers } => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let mut answer = format!("HTTP/1.1 {status} {}\r\ncontent-length: 2\r\n", reason(status));
                for (name, value) in headers {
                    answer.push_str(&format!("{name}: {value}\r\n"));
                }
                answer.push_str("\r\nok");
                // No longer counted once the answer may reach the client, so a request
                // it sends next can never be counted beside this one.
                drop(answering);
                write_all(&stream, answer.as_bytes()).await?;
            }
            Action::Hang => std::future::pending::<()>().await,
            Action::Trickle { per_byte } => {
                let answer = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";
                for byte in answer.as_bytes() {
                    tokio::time::sleep(per_byte).await;
                    write_all(&stream, std::slice::from_ref(byte)).await?;
                }
            }
            Action::Huge { bytes } => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {bytes}\r\n\r\n"
                );
                write_all(&stream, head.as_bytes()).await?;
                let block = vec![b'x'; 64 * 1024];
                let mut written = 0u64;
                while written < bytes {
                    let len = block.len().min((bytes - written) as usize);
                    if write_all(&stream, &block[..len]).await.is_err() {
                        break;
                    }
                    written += len as u64;
                }
                state.huge_written.lock().unwrap().push(written);
                return Ok(());
            }
            Action::Reset => {
                reset(stream);
                return Ok(());
            }
        }
        if head.close {
            return Ok(());
        }
    }
}

/// Counts one request as being answered until dropped: just before a plain answer is
/// written, once any other action is done, or when the connection ends or is aborted.
struct Answering<'a>(&'a State);

impl<'a> Answering<'a> {
    fn start(state: &'a State) -> Self {
        let now = state.answering.fetch_add(1, Ordering::SeqCst) + 1;
        state.most_answering.fetch_max(now, Ordering::SeqCst);
        Self(state)
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.answering.fetch_sub(1, Ordering::SeqCst);
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}
