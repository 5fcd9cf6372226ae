//! A headless chromium driven through the DevTools protocol: started with a fresh
//! profile and `--remote-debugging-port=0` (the port it picked is read from the
//! DevToolsActivePort file in the profile), talked to over a WebSocket with JSON
//! commands, killed with its whole process group when dropped. Used by the tracker
//! page's browser test and the tracker bench.

use anyhow::{anyhow, bail, Context, Result};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_util::StreamExt;
use serde_json::{json, Value};
use smol::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long chromium may take to start, and one command to be answered: hang
/// deadlines, far above the milliseconds a healthy chromium takes. The first command
/// to a new page waits for its renderer to start, which once took over 30 s on a
/// machine running two test suites at once.
const STARTUP: Duration = Duration::from_secs(60);
const COMMAND: Duration = Duration::from_secs(60);

/// The chromium process group, killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        // SAFETY: kill only sends a signal, to the group this test started (its id is
        // the child's, see `process_group(0)`).
        unsafe {
            libc::kill(-(self.0.id() as i32), libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// One headless chromium with one page (tab) attached.
pub struct Chromium {
    ws: WebSocketStream<TcpStream>,
    /// The page's DevTools session.
    session: String,
    next_id: u64,
    // Dropped after the connection: first the processes, then their profile.
    _process: Process,
    profile: tempfile::TempDir,
}

impl Chromium {
    /// Starts chromium and opens a blank page.
    pub async fn start() -> Result<Chromium> {
        let profile = tempfile::tempdir()?;
        let log = std::fs::File::create(profile.path().join("chromium.log"))?;
        let mut command = Command::new("chromium");
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        {
            use std::os::unix::process::CommandExt;
            // Its own process group, so that drop ends its helper processes too.
            command.process_group(0);
        }
        let process = Process(command.spawn().context("cannot start chromium")?);
        let (port, path) = super::wait::poll("chromium's DevToolsActivePort", STARTUP, || {
            let file = profile.path().join("DevToolsActivePort");
            async move { Ok(devtools_port(&file)) }
        })
        .await?;
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (ws, _) = async_tungstenite::client_async(url, tcp)
            .await
            .context("cannot open chromium's DevTools connection")?;
        let mut chromium = Chromium {
            ws,
            session: String::new(),
            next_id: 0,
            _process: process,
            profile,
        };
        let target = chromium
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await?;
        let target = target["targetId"]
            .as_str()
            .ok_or_else(|| anyhow!("no targetId in {target}"))?
            .to_string();
        let attached = chromium
            .call(
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
            )
            .await?;
        chromium.session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no sessionId in {attached}"))?
            .to_string();
        Ok(chromium)
    }

    /// What chromium wrote on stderr so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromium.log")).unwrap_or_default()
    }

    /// Sends a DevTools command (to the page once one is attached) and returns its
    /// result; events that come meanwhile are dropped.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws.send(Message::text(msg.to_string())).await?;
        let answer = smol::future::or(
            async {
                while let Some(frame) = self.ws.next().await {
                    let Message::Text(text) = frame? else {
                        continue;
                    };
                    let v: Value = serde_json::from_str(text.as_str())?;
                    if v["id"].as_u64() == Some(id) {
                        return Ok(v);
                    }
                }
                bail!("chromium closed its DevTools connection")
            },
            async {
                smol::Timer::after(COMMAND).await;
                let log = std::fs::read_to_string(self.profile.path().join("chromium.log"))
                    .unwrap_or_default();
                bail!("chromium did not answer {method} within {COMMAND:?}; its log:\n{log}")
            },
        )
        .await?;
        if let Some(e) = answer.get("error") {
            bail!("{method} failed: {e}");
        }
        Ok(answer["result"].clone())
    }

    /// Loads `url` in the page and waits until it has loaded.
    pub async fn open(&mut self, url: &str) -> Result<()> {
        let nav = self.call("Page.navigate", json!({"url": url})).await?;
        if let Some(e) = nav.get("errorText") {
            bail!("cannot open {url}: {e}");
        }
        self.wait_until(
            "the page to load",
            "document.readyState === 'complete'",
            STARTUP,
        )
        .await
    }

    /// The value of a JavaScript expression in the page (promises awaited).
    pub async fn eval(&mut self, expression: &str) -> Result<Value> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("{expression} threw: {e}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Polls `expression` until it is true, or fails naming `what` after `timeout`.
    /// (Its own loop: each check borrows the connection, which `wait::poll`'s closure
    /// cannot lend.)
    pub async fn wait_until(
        &mut self,
        what: &str,
        expression: &str,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.eval(expression).await? == Value::Bool(true) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            smol::Timer::after(Duration::from_millis(10)).await;
        }
    }

    /// Sizes the page's window like a screen `width` x `height` CSS pixels; `mobile`
    /// as a phone's (narrow layout, touch, device pixel ratio 2).
    pub async fn screen(&mut self, width: u32, height: u32, mobile: bool) -> Result<()> {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "mobile": mobile,
                   "deviceScaleFactor": if mobile { 2 } else { 1 }}),
        )
        .await
        .map(drop)
    }

    /// Saves a PNG of the page's content (beyond the window too, not the empty rest of
    /// the window) in `path`.
    pub async fn screenshot(&mut self, path: &Path) -> Result<()> {
        let size = self
            .eval("[document.documentElement.clientWidth, document.body.scrollHeight]")
            .await?;
        let (width, height) = (size[0].as_u64(), size[1].as_u64());
        let (Some(width), Some(height)) = (width, height) else {
            bail!("no page size in {size}");
        };
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true,
                       "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}}),
            )
            .await?;
        let data = shot["data"]
            .as_str()
            .ok_or_else(|| anyhow!("no screenshot data"))?;
        let png = base64_decode(data).context("screenshot data is not base64")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// The port and browser path in a DevToolsActivePort file, once chromium wrote both.
fn devtools_port(file: &Path) -> Option<(u16, String)> {
    let text = std::fs::read_to_string(file).ok()?;
    let mut lines = text.lines();
    let port = lines.next()?.trim().parse().ok()?;
    let path = lines.next()?.trim();
    path.starts_with('/').then(|| (port, path.to_string()))
}

/// Standard base64 (with padding) to bytes.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let text = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}
