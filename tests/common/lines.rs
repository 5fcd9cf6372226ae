//! The output of a child process, line by line: both pipes are drained by threads (so
//! the child never blocks on a full pipe) and a test waits for the line it expects.

use std::io::BufRead;
use std::process::{Child, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long to wait for a line, or for a process to exit. The tests' one deadline for
/// an end-to-end step (`common::TIMEOUT` is this); a file of its own, since the demo
/// includes it by path.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Lines a child printed on stdout and stderr, in arrival order.
pub struct Lines {
    rx: mpsc::Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Lines {
    /// Takes the child's piped stdout and stderr and starts draining them.
    pub fn capture(child: &mut Child) -> Lines {
        let (tx, rx) = mpsc::channel();
        let pipes: Vec<Box<dyn std::io::Read + Send>> = vec![
            Box::new(child.stdout.take().expect("stdout is piped")),
            Box::new(child.stderr.take().expect("stderr is piped")),
        ];
        for pipe in pipes {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// The first line containing `needle` (earlier lines included); panics with the
    /// output so far after [`DEADLINE`].
    pub fn wait_for(&mut self, needle: &str) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; output so far: {:#?}", self.seen),
            }
        }
    }

    /// Every line, once the process has exited and its pipes are drained.
    pub fn all(&mut self) -> Vec<String> {
        while let Ok(line) = self.rx.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        self.seen.clone()
    }
}

/// Waits for a process to exit by itself; panics after [`DEADLINE`].
pub fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "the process did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}
