//! The control connection to one openMSX: started as a child (`-control stdio`) or
//! attached through its Unix control socket.
//!
//! Commands are written in order and their replies matched in order by a reader thread,
//! which also turns logs and updates into [`Event`]s. Both output pipes of a child are
//! always drained (a full pipe freezes openMSX), and a child is killed when the last
//! handle is dropped, so no openMSX outlives msxsync.

use super::xml::{command_element, Output, OutputReader, CONTROL_OPEN};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
#[cfg(unix)]
use std::path::Path;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How to start openMSX.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// The program to run; `openmsx` from PATH by default.
    pub program: PathBuf,
    /// `-machine NAME`, e.g. `C-BIOS_MSX1`; openMSX's default machine when `None`.
    pub machine: Option<String>,
    /// `-cart FILE`: the cartridge to insert.
    pub cart: Option<PathBuf>,
    /// `-romtype TYPE` for the cartridge (ignored without `cart`).
    pub romtype: Option<String>,
    /// No window and no sound: renderer `none`, SDL dummy drivers (tests, servers).
    pub headless: bool,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions {
            program: PathBuf::from("openmsx"),
            machine: None,
            cart: None,
            romtype: None,
            headless: false,
        }
    }
}

impl LaunchOptions {
    /// The command-line arguments for these options. Strings from outside (paths,
    /// machine names, rom types) go to openMSX as arguments, never through Tcl.
    pub fn args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec!["-control".into(), "stdio".into()];
        if let Some(m) = &self.machine {
            args.push("-machine".into());
            args.push(m.into());
        }
        if let Some(c) = &self.cart {
            args.push("-cart".into());
            args.push(c.into());
            if let Some(t) = &self.romtype {
                args.push("-romtype".into());
                args.push(t.into());
            }
        }
        args
    }
}

/// Something openMSX said on its own, not as a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A `<log>` element (errors, `message` output) or an `<update>` element (the
    /// hooks' pushes arrive as a "setting" update named `msxsync_out`, see
    /// [`super::hooks::Hooks::decode`]). Never an [`Output::Reply`]: replies go to
    /// the command that asked.
    Said(Output),
    /// A line openMSX wrote to stderr.
    Stderr(String),
    /// The output could not be parsed; the connection is closed after this.
    ProtocolError(String),
    /// The connection ended: openMSX exited (the player closed its window) or the
    /// socket closed. Always the last event.
    Closed,
}

type ReplySender = async_channel::Sender<std::result::Result<String, String>>;

/// Replies not received yet, oldest first, and whether the connection ended.
/// Pure bookkeeping, kept apart so that reply matching can be tested alone.
#[derive(Default)]
struct Pending {
    queue: VecDeque<ReplySender>,
    closed: bool,
}

impl Pending {
    /// Hands a reply to the oldest waiting command. False when no command waits.
    fn deliver(&mut self, reply: std::result::Result<String, String>) -> bool {
        match self.queue.pop_front() {
            Some(tx) => {
                // The caller may have stopped waiting (dropped future); that is fine.
                let _ = tx.try_send(reply);
                true
            }
            None => false,
        }
    }

    /// Marks the connection closed; waiting commands see their channel close.
    fn close(&mut self) {
        self.closed = true;
        self.queue.clear();
    }
}

struct Inner {
    /// Writes commands; the lock also keeps the pending queue in write order.
    writer: Mutex<Box<dyn Write + Send>>,
    pending: Arc<Mutex<Pending>>,
    child: Mutex<Option<Child>>,
    /// For an attached socket: shut down on drop so the reader thread ends.
    #[cfg(unix)]
    socket: Option<std::os::unix::net::UnixStream>,
    /// The last stderr lines, for error messages when openMSX fails to start.
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    events: async_channel::Receiver<Event>,
    /// openMSX's process id (the child's, or the one in the socket's name).
    pid: Option<u32>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        #[cfg(unix)]
        if let Some(s) = &self.socket {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A connection to one openMSX. Cheap to clone; the child process is killed when the
/// last clone is dropped.
#[derive(Clone)]
pub struct OpenMsx {
    inner: Arc<Inner>,
}

/// How many stderr lines are kept for error messages.
const STDERR_TAIL: usize = 20;
/// How long [`OpenMsx::shutdown`] waits for openMSX to quit before killing it.
const QUIT_TIMEOUT: Duration = Duration::from_secs(3);

fn install_hint() -> &'static str {
    if cfg!(windows) {
        // No apt line to give on Windows: openMSX comes from its site, often not on PATH.
        "install it from https://openmsx.org, then give the path of openmsx.exe with \
         --openmsx (or add its folder to PATH)"
    } else {
        "install it with `apt install openmsx cbios` on Debian or Ubuntu, or see https://openmsx.org"
    }
}

/// Shortens a command for error messages (scripts can be long).
fn short(tcl: &str) -> String {
    const MAX: usize = 80;
    let one_line = tcl.replace('\n', " ");
    if one_line.chars().count() <= MAX {
        one_line
    } else {
        let cut: String = one_line.chars().take(MAX).collect();
        format!("{cut}...")
    }
}

impl OpenMsx {
    /// Starts openMSX with `-control stdio` and the given options. The machine starts
    /// powered off (openMSX does that under `-control`): see [`OpenMsx::power_on`].
    /// Settings are not saved on exit, so nothing we set leaks into the player's
    /// configuration.
    pub async fn spawn(opts: &LaunchOptions) -> Result<OpenMsx> {
        if let Some(m) = &opts.machine {
            check_name("machine", m)?;
        }
        if let Some(t) = &opts.romtype {
            check_name("rom type", t)?;
        }
        let mut cmd = Command::new(&opts.program);
        cmd.args(opts.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if opts.headless {
            cmd.env("SDL_VIDEODRIVER", "dummy")
                .env("SDL_AUDIODRIVER", "dummy");
        }
        die_with_parent(&mut cmd);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!(
                    "openmsx not found (tried `{}`): {}",
                    opts.program.display(),
                    install_hint()
                )
            }
            Err(e) => {
                return Err(e).with_context(|| format!("starting `{}`", opts.program.display()))
            }
        };
        let pid = child.id();
        let stdin = child.stdin.take().context("openmsx stdin missing")?;
        let stdout = child.stdout.take().context("openmsx stdout missing")?;
        let stderr = child.stderr.take().context("openmsx stderr missing")?;
        let msx = Self::start(
            Box::new(stdin),
            BufReader::new(stdout),
            Some(Box::new(BufReader::new(stderr))),
            Some(child),
            #[cfg(unix)]
            None,
            Some(pid),
        )?;
        msx.handshake().await?;
        if !opts.headless {
            // `-control` switches the renderer to `none`; give the player a window.
            if msx.command("set renderer SDLGL-PP").await.is_err() {
                msx.command("set renderer SDL")
                    .await
                    .context("openmsx could not open a window")?;
            }
        }
        Ok(msx)
    }

    /// Attaches to a running openMSX through its control socket. `target` is either a
    /// socket path or a process id (then the socket is looked for in
    /// `$TMPDIR/openmsx-*/socket.PID`, TMPDIR defaulting to /tmp).
    #[cfg(unix)]
    pub async fn attach(target: &str) -> Result<OpenMsx> {
        let path = socket_path(target)?;
        let stream = std::os::unix::net::UnixStream::connect(&path)
            .with_context(|| format!("connecting to openmsx socket {}", path.display()))?;
        let writer = stream.try_clone().context("cloning the openmsx socket")?;
        let reader = stream.try_clone().context("cloning the openmsx socket")?;
        let pid = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("socket."))
            .and_then(|p| p.parse().ok());
        let msx = Self::start(
            Box::new(writer),
            BufReader::new(reader),
            None,
            None,
            Some(stream),
            pid,
        )?;
        msx.handshake().await?;
        Ok(msx)
    }

    /// Attaching needs Unix sockets; on other systems start openMSX instead.
    #[cfg(not(unix))]
    pub async fn attach(_target: &str) -> Result<OpenMsx> {
        bail!("attaching to a running openmsx is only supported on unix; let msxsync start it")
    }

    fn start<R: BufRead + Send + 'static>(
        mut writer: Box<dyn Write + Send>,
        reader: R,
        stderr: Option<Box<dyn BufRead + Send>>,
        child: Option<Child>,
        #[cfg(unix)] socket: Option<std::os::unix::net::UnixStream>,
        pid: Option<u32>,
    ) -> Result<OpenMsx> {
        writer
            .write_all(CONTROL_OPEN.as_bytes())
            .and_then(|_| writer.flush())
            .context("writing to openmsx")?;
        let (ev_tx, ev_rx) = async_channel::unbounded();
        let pending = Arc::new(Mutex::new(Pending::default()));
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));

        if let Some(stderr) = stderr {
            let tail = stderr_tail.clone();
            let tx = ev_tx.clone();
            std::thread::Builder::new()
                .name("openmsx-stderr".into())
                .spawn(move || drain_stderr(stderr, tail, tx))
                .context("starting the openmsx stderr thread")?;
        }
        {
            let pending = pending.clone();
            std::thread::Builder::new()
                .name("openmsx-reader".into())
                .spawn(move || read_output(reader, pending, ev_tx))
                .context("starting the openmsx reader thread")?;
        }
        Ok(OpenMsx {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                pending,
                child: Mutex::new(child),
                #[cfg(unix)]
                socket,
                stderr_tail,
                events: ev_rx,
                pid,
            }),
        })
    }

    async fn handshake(&self) -> Result<()> {
        // First command: nothing this session sets may be saved into the player's
        // settings.xml (it would come back next time, renderer `none` included).
        self.command("set save_settings_on_exit off")
            .await
            .map(|_| ())
            .map_err(|e| {
                let tail = self.stderr_tail();
                if tail.is_empty() {
                    e
                } else {
                    anyhow!("{e}; openmsx said: {tail}")
                }
            })
    }

    /// The last lines openMSX wrote to stderr, joined (for error messages).
    pub fn stderr_tail(&self) -> String {
        self.inner
            .stderr_tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join(" / "))
            .unwrap_or_default()
    }

    /// openMSX's process id, when known.
    pub fn pid(&self) -> Option<u32> {
        self.inner.pid
    }

    /// Sends one Tcl command and returns its result. A `nok` reply becomes an error
    /// naming the command. Only put numbers and hex you formatted into `tcl`.
    pub async fn command(&self, tcl: &str) -> Result<String> {
        self.post(tcl)?.wait().await
    }

    /// Sends a command without waiting for its reply. Commands run in the order they
    /// were sent, so a caller that only needs to hear about failures can go on and
    /// look at the [`Reply`] later.
    pub fn post(&self, tcl: &str) -> Result<Reply> {
        Ok(Reply {
            rx: self.send(tcl)?,
            command: short(tcl),
        })
    }

    /// Writes a command and queues the slot for its reply, both under the writer lock
    /// so that the queue order is the write order.
    fn send(
        &self,
        tcl: &str,
    ) -> Result<async_channel::Receiver<std::result::Result<String, String>>> {
        let (tx, rx) = async_channel::bounded(1);
        let mut writer = self
            .inner
            .writer
            .lock()
            .map_err(|_| anyhow!("openmsx connection lock poisoned"))?;
        {
            let mut pending = self
                .inner
                .pending
                .lock()
                .map_err(|_| anyhow!("openmsx connection lock poisoned"))?;
            if pending.closed {
                bail!("openmsx connection is closed (sending `{}`)", short(tcl));
            }
            pending.queue.push_back(tx);
        }
        let written = writer
            .write_all(command_element(tcl).as_bytes())
            .and_then(|_| writer.flush());
        if let Err(e) = written {
            if let Ok(mut p) = self.inner.pending.lock() {
                p.close();
            }
            return Err(e).with_context(|| format!("sending `{}` to openmsx", short(tcl)));
        }
        Ok(rx)
    }

    /// The events (logs, updates, stderr, `Closed`). All clones share one queue: each
    /// event goes to one receiver, so have one place read them.
    pub fn events(&self) -> async_channel::Receiver<Event> {
        self.inner.events.clone()
    }

    /// Turns the machine on (it starts powered off under `-control`).
    pub async fn power_on(&self) -> Result<()> {
        self.command("set power on").await.map(|_| ())
    }

    /// True once the connection ended (openMSX exited or the socket closed).
    pub fn is_closed(&self) -> bool {
        self.inner.pending.lock().map(|p| p.closed).unwrap_or(true)
    }

    /// Asks openMSX to quit, waits up to a few seconds, then kills it. For an attached
    /// openMSX only the connection is closed (when the last clone is dropped): the
    /// player's emulator keeps running.
    pub async fn shutdown(self) -> Result<()> {
        let has_child = self
            .inner
            .child
            .lock()
            .map(|c| c.is_some())
            .unwrap_or(false);
        if !has_child {
            return Ok(());
        }
        // openMSX may exit before the reply arrives: any outcome is fine here.
        let _ = self.send("exit");
        let deadline = Instant::now() + QUIT_TIMEOUT;
        loop {
            let exited = {
                let mut child = self
                    .inner
                    .child
                    .lock()
                    .map_err(|_| anyhow!("openmsx child lock poisoned"))?;
                match child.as_mut() {
                    Some(c) => match c.try_wait() {
                        Ok(Some(_)) => {
                            child.take();
                            true
                        }
                        Ok(None) => false,
                        Err(_) => true,
                    },
                    None => true,
                }
            };
            if exited {
                return Ok(());
            }
            if Instant::now() >= deadline {
                // Other clones (e.g. the hooks) may keep the connection alive: kill
                // the child here rather than waiting for the last drop.
                if let Ok(mut child) = self.inner.child.lock() {
                    if let Some(mut c) = child.take() {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                }
                return Ok(());
            }
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    }
}

/// The reply to a command sent with [`OpenMsx::post`].
pub struct Reply {
    rx: async_channel::Receiver<std::result::Result<String, String>>,
    command: String,
}

impl Reply {
    fn outcome(&self, got: Option<std::result::Result<String, String>>) -> Result<String> {
        match got {
            Some(Ok(text)) => Ok(text),
            Some(Err(text)) => Err(anyhow!(
                "openmsx command `{}` failed: {}",
                self.command,
                text.trim_end()
            )),
            None => Err(anyhow!(
                "openmsx closed the connection before answering `{}`",
                self.command
            )),
        }
    }

    /// Waits for the reply: the command's result, or an error naming the command.
    pub async fn wait(self) -> Result<String> {
        let got = self.rx.recv().await.ok();
        self.outcome(got)
    }

    /// The reply if it has arrived; `None` while openMSX is still working on it.
    pub fn try_take(&self) -> Option<Result<String>> {
        match self.rx.try_recv() {
            Ok(r) => Some(self.outcome(Some(r))),
            Err(async_channel::TryRecvError::Empty) => None,
            Err(async_channel::TryRecvError::Closed) => Some(self.outcome(None)),
        }
    }
}

/// openMSX keeps running when its control pipe closes, so a killed msxsync (or a test
/// killed by a timeout) would leave it behind. On Linux the kernel kills the child
/// when the thread that started it ends; elsewhere Drop and shutdown still do. Public
/// for the tests, whose `msxsync` children must not outlive them either.
pub fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// Machine and rom type names come from the server: allow only what openMSX's own
/// names use, so a name can never be a path or look like an option.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.'))
        && !name.starts_with(['-', '.']);
    if !ok {
        bail!("bad openmsx {what} name {name:?}: only letters, digits and _ - + . are allowed");
    }
    Ok(())
}

fn drain_stderr(
    stderr: Box<dyn BufRead + Send>,
    tail: Arc<Mutex<VecDeque<String>>>,
    tx: async_channel::Sender<Event>,
) {
    for line in stderr.split(b'\n') {
        let Ok(line) = line else { break };
        let line = String::from_utf8_lossy(&line).trim_end().to_string();
        if let Ok(mut t) = tail.lock() {
            if t.len() == STDERR_TAIL {
                t.pop_front();
            }
            t.push_back(line.clone());
        }
        let _ = tx.try_send(Event::Stderr(line));
    }
}

fn read_output<R: BufRead>(
    reader: R,
    pending: Arc<Mutex<Pending>>,
    tx: async_channel::Sender<Event>,
) {
    let mut reader = OutputReader::new(reader);
    loop {
        match reader.next_output() {
            Ok(Some(Output::Reply { ok, text })) => {
                let reply = if ok { Ok(text) } else { Err(text) };
                let delivered = pending
                    .lock()
                    .map(|mut p| p.deliver(reply))
                    .unwrap_or(false);
                if !delivered {
                    let _ = tx.try_send(Event::ProtocolError(
                        "openmsx sent a reply to no command".into(),
                    ));
                }
            }
            Ok(Some(said)) => {
                if let (true, Output::Update { value, .. }) = (crate::hops::enabled(), &said) {
                    let seq = crate::hops::push_seq(value);
                    crate::hops::log(format_args!("omsx-update {seq}"));
                }
                let _ = tx.try_send(Event::Said(said));
            }
            Ok(None) => break,
            Err(e) => {
                let _ = tx.try_send(Event::ProtocolError(format!("{e:#}")));
                break;
            }
        }
    }
    if let Ok(mut p) = pending.lock() {
        p.close();
    }
    let _ = tx.try_send(Event::Closed);
}

/// Finds the control socket for `target`: a path to a socket, or a process id.
#[cfg(unix)]
pub fn socket_path(target: &str) -> Result<PathBuf> {
    let target = target.trim();
    if let Ok(pid) = target.parse::<u32>() {
        let tmp = std::env::var_os("TMPDIR")
            .filter(|t| !t.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        return find_socket(&tmp, pid).with_context(|| {
            format!(
                "no control socket of openmsx process {pid} in {}/openmsx-*",
                tmp.display()
            )
        });
    }
    let path = PathBuf::from(target);
    if !path.exists() {
        bail!(
            "openmsx socket {} does not exist (give a socket path or openmsx's process id)",
            path.display()
        );
    }
    Ok(path)
}

/// Looks for `openmsx-*/socket.PID` below `tmp` (the folder is named after the user,
/// which we need not know).
#[cfg(unix)]
fn find_socket(tmp: &Path, pid: u32) -> Result<PathBuf> {
    let name = format!("socket.{pid}");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(tmp)
        .with_context(|| format!("reading {}", tmp.display()))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("openmsx-"))
        .map(|e| e.path())
        .collect();
    // Prefer the current user's folder when USER names it.
    if let Ok(user) = std::env::var("USER") {
        let own = tmp.join(format!("openmsx-{user}"));
        dirs.sort_by_key(|d| *d != own);
    }
    dirs.into_iter()
        .map(|d| d.join(&name))
        .find(|p| p.exists())
        .ok_or_else(|| anyhow!("socket.{pid} not found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_go_to_commands_in_order() {
        let mut p = Pending::default();
        let (tx1, rx1) = async_channel::bounded(1);
        let (tx2, rx2) = async_channel::bounded(1);
        p.queue.push_back(tx1);
        p.queue.push_back(tx2);
        assert!(p.deliver(Ok("first".into())));
        assert!(p.deliver(Err("second failed".into())));
        assert!(!p.deliver(Ok("nobody asked".into())));
        assert_eq!(rx1.try_recv().unwrap(), Ok("first".to_string()));
        assert_eq!(rx2.try_recv().unwrap(), Err("second failed".to_string()));
    }

    #[test]
    fn closing_fails_waiting_commands() {
        let mut p = Pending::default();
        let (tx, rx) = async_channel::bounded(1);
        p.queue.push_back(tx);
        p.close();
        assert!(p.closed);
        assert!(rx.try_recv().is_err());
        assert!(rx.is_closed());
    }

    #[test]
    fn strings_go_to_openmsx_as_arguments() {
        let opts = LaunchOptions {
            machine: Some("C-BIOS_MSX1".into()),
            cart: Some(PathBuf::from("/x/]; exit; [ $y.rom")),
            romtype: Some("ASCII8".into()),
            ..LaunchOptions::default()
        };
        let args: Vec<String> = opts
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "-control",
                "stdio",
                "-machine",
                "C-BIOS_MSX1",
                "-cart",
                "/x/]; exit; [ $y.rom",
                "-romtype",
                "ASCII8"
            ]
        );
    }

    #[test]
    fn names_are_checked() {
        for good in [
            "C-BIOS_MSX1",
            "C-BIOS_MSX2+",
            "Panasonic_FS-A1GT",
            "KonamiSCC",
            "ASCII8",
        ] {
            assert!(check_name("machine", good).is_ok(), "{good}");
        }
        for bad in [
            "", "-script", "../x", "a/b", "a b", "x;y", "$x", "[x]", ".hidden",
        ] {
            assert!(check_name("machine", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn short_cuts_long_commands() {
        assert_eq!(short("a\nb"), "a b");
        assert!(short(&"x".repeat(500)).len() < 100);
    }

    #[cfg(unix)]
    #[test]
    fn finds_sockets_by_pid() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("openmsx-someone");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("socket.4242"), b"").unwrap();
        assert_eq!(
            find_socket(dir.path(), 4242).unwrap(),
            sub.join("socket.4242")
        );
        assert!(find_socket(dir.path(), 4243).is_err());
        assert!(socket_path("/definitely/not/here").is_err());
    }
}
