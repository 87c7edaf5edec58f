//! A real loopback HTTP/1.1 server for tests: serves a mirror directory, honours
//! `Range: bytes=N-`, logs requests and injects faults per path (500s, truncated bodies,
//! slow bodies, ignored ranges). One request per connection (`Connection: close`).

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Faults for one path (relative to the mirror root, no leading `/`).
#[derive(Debug, Clone, Default)]
pub struct Fault {
    /// Answer HTTP 500 to this many requests first.
    pub fail_first: u32,
    /// Close the connection after this many body bytes...
    pub truncate_after: Option<u64>,
    /// ...on this many requests (after the 500s).
    pub truncate_times: u32,
    /// Sleep between 16 KiB chunks.
    pub chunk_delay: Option<Duration>,
    /// Answer `Range` requests with the whole file (200), like some old servers.
    pub ignore_range: bool,
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub path: String,
    pub range: Option<String>,
    pub status: u16,
}

#[derive(Default)]
struct State {
    faults: HashMap<String, Fault>,
    served: HashMap<String, u32>,
    requests: Vec<Request>,
}

pub struct TestServer {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Serves `root` on 127.0.0.1 at a free port.
    pub fn start(root: &Path) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let address = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            let root = root.to_path_buf();
            std::thread::spawn(move || accept_loop(listener, root, state, stop))
        };
        TestServer {
            address,
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn set_fault(&self, path: &str, fault: Fault) {
        lock(&self.state).faults.insert(path.to_string(), fault);
    }

    /// Requests for `path` in arrival order.
    pub fn requests(&self, path: &str) -> Vec<Request> {
        lock(&self.state)
            .requests
            .iter()
            .filter(|request| request.path == path)
            .cloned()
            .collect()
    }

    pub fn total_requests(&self) -> usize {
        lock(&self.state).requests.len()
    }

    /// Every request so far, in arrival order.
    pub fn all_requests(&self) -> Vec<Request> {
        lock(&self.state).requests.clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect(self.address);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn accept_loop(
    listener: TcpListener,
    root: PathBuf,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let root = root.clone();
        let state = Arc::clone(&state);
        std::thread::spawn(move || {
            let _ = handle(stream, &root, &state);
        });
    }
}

fn handle(stream: TcpStream, root: &Path, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("range")
        {
            range = Some(value.trim().to_string());
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let path = target.trim_start_matches('/').to_string();
    let plan = plan_response(root, state, &path, range.as_deref());
    lock(state).requests.push(Request {
        path,
        range,
        status: plan.status,
    });
    send(stream, plan)
}

struct Plan {
    status: u16,
    headers: Vec<String>,
    body: Body,
    /// Bytes of `body` to send before closing (truncation fault).
    send_len: u64,
    chunk_delay: Option<Duration>,
}

fn plan_response(root: &Path, state: &Mutex<State>, path: &str, range: Option<&str>) -> Plan {
    let (fault, count) = {
        let mut state = lock(state);
        let count = {
            let served = state.served.entry(path.to_string()).or_insert(0);
            *served += 1;
            *served
        };
        (state.faults.get(path).cloned().unwrap_or_default(), count)
    };
    if count <= fault.fail_first {
        return simple(500, b"injected failure\n".to_vec());
    }
    let safe = Path::new(path)
        .components()
        .all(|component| matches!(component, Component::Normal(_)));
    let file_path = root.join(path);
    let Some(total) = safe
        .then(|| fs::metadata(&file_path).ok())
        .flatten()
        .filter(|meta| meta.is_file())
        .map(|meta| meta.len())
    else {
        return simple(404, b"not found\n".to_vec());
    };
    let file = |start: u64| Body::File {
        path: file_path.clone(),
        start,
        len: total - start,
    };
    let start = range
        .filter(|_| !fault.ignore_range)
        .and_then(|value| value.strip_prefix("bytes="))
        .and_then(|spec| spec.strip_suffix('-'))
        .and_then(|start| start.parse::<u64>().ok());
    let mut plan = match start {
        Some(start) if start >= total => Plan {
            headers: vec![format!("Content-Range: bytes */{total}")],
            ..simple(416, Vec::new())
        },
        Some(start) => Plan {
            headers: vec![format!(
                "Content-Range: bytes {start}-{}/{total}",
                total - 1
            )],
            ..with_body(206, file(start))
        },
        None => with_body(200, file(0)),
    };
    let truncating = count - fault.fail_first <= fault.truncate_times;
    if let Some(limit) = fault.truncate_after.filter(|_| truncating) {
        plan.send_len = plan.send_len.min(limit);
    }
    plan.chunk_delay = fault.chunk_delay;
    plan
}

enum Body {
    Bytes(Vec<u8>),
    /// Streamed from disk, so big benchmark archives cost no server memory.
    File {
        path: PathBuf,
        start: u64,
        len: u64,
    },
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Bytes(bytes) => bytes.len() as u64,
            Body::File { len, .. } => *len,
        }
    }
}

fn simple(status: u16, body: Vec<u8>) -> Plan {
    with_body(status, Body::Bytes(body))
}

fn with_body(status: u16, body: Body) -> Plan {
    Plan {
        status,
        headers: Vec::new(),
        send_len: body.len(),
        body,
        chunk_delay: None,
    }
}

fn send(mut stream: TcpStream, plan: Plan) -> std::io::Result<()> {
    let reason = match plan.status {
        200 => "OK",
        206 => "Partial Content",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Internal Server Error",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Length: {}\r\nConnection: close\r\nAccept-Ranges: bytes\r\n",
        plan.status,
        plan.body.len()
    );
    for header in &plan.headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    let mut source: Box<dyn Read> = match plan.body {
        Body::Bytes(bytes) => Box::new(std::io::Cursor::new(bytes)),
        Body::File { path, start, .. } => {
            let mut file = fs::File::open(path)?;
            file.seek(SeekFrom::Start(start))?;
            Box::new(file)
        }
    };
    let mut remaining = plan.send_len;
    let mut chunk = vec![0u8; 64 * 1024];
    let chunk_len = if plan.chunk_delay.is_some() {
        16 * 1024
    } else {
        chunk.len()
    };
    while remaining > 0 {
        let want = chunk_len.min(remaining as usize);
        let read = source.read(&mut chunk[..want])?;
        if read == 0 {
            break;
        }
        stream.write_all(&chunk[..read])?;
        remaining -= read as u64;
        if let Some(delay) = plan.chunk_delay {
            std::thread::sleep(delay);
        }
    }
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Ok(())
}
