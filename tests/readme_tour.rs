//! Runs the README's five-minute tour against real processes, so the README cannot drift from
//! what the binaries do.
//!
//! The block is the ```` ```sh ```` fence after the `<!-- tour` marker in README.md. Its
//! conventions (also written under the block): `cargo` and `export PATH` lines set up the
//! binaries, so here the ones cargo built for this test are put first on `PATH`; a command
//! commented `(keeps running)` starts in the background with this test's ports in place of
//! the README's (its comment's `127.0.0.1:A..B` ranges are checked against what it prints), is
//! waited for until `bftctl status` answers from every node, and is stopped with SIGINT at the
//! end (exit 0 expected); every other command runs through `sh -c` in a fresh directory, must
//! exit 0, and when its comment shows output after `=>`, its first line of stdout must match
//! it (`...` matches anything).

#[path = "support/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{DEADLINE, free_port_range, wait_until};

const KEEPS_RUNNING: &str = "(keeps running)";

/// One command of the tour with its comment (continuation comment lines joined).
#[derive(Debug)]
struct Step {
    command: String,
    comment: String,
}

impl Step {
    /// The output the README shows for it, if any.
    fn expected(&self) -> Option<&str> {
        self.comment.split_once("=> ").map(|(_, out)| out.trim())
    }
}

/// The steps of the marked block.
fn tour(readme: &str) -> Vec<Step> {
    let marker = readme
        .find("<!-- tour")
        .expect("README.md marks its tour with <!-- tour");
    let mut lines = readme[marker..].lines().skip(1);
    assert_eq!(
        lines.next().map(str::trim),
        Some("```sh"),
        "the tour marker is followed by a ```sh block"
    );
    let mut steps: Vec<Step> = Vec::new();
    for line in lines.take_while(|l| l.trim() != "```") {
        let trimmed = line.trim();
        if let Some(more) = trimmed.strip_prefix('#') {
            let last = steps.last_mut().expect("a comment line follows a command");
            last.comment.push(' ');
            last.comment.push_str(more.trim());
            continue;
        }
        if trimmed.is_empty() {
            continue;
        }
        let (command, comment) = split_comment(trimmed);
        steps.push(Step {
            command: command.trim().to_string(),
            comment: comment.trim().to_string(),
        });
    }
    steps
}

/// Splits at the first `#` outside quotes that starts a word.
fn split_comment(line: &str) -> (&str, &str) {
    let mut quote = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev_space => return (&line[..i], &line[i + 1..]),
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    (line, "")
}

/// `text` matches `pattern`, where `...` stands for any run of characters.
fn matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split("...").collect();
    let (first, rest) = parts.split_first().expect("split yields one part");
    let Some(mut left) = text.strip_prefix(first) else {
        return false;
    };
    for (i, part) in rest.iter().enumerate() {
        if i == rest.len() - 1 {
            return left.ends_with(part);
        }
        match left.find(part) {
            Some(at) => left = &left[at + part.len()..],
            None => return false,
        }
    }
    left.is_empty()
}

/// `127.0.0.1:A..B` ranges named in a comment.
fn port_ranges(comment: &str) -> Vec<(u16, u16)> {
    comment
        .split("127.0.0.1:")
        .skip(1)
        .filter_map(|s| {
            let (a, rest) = s.split_once("..")?;
            let b: String = rest.chars().take_while(char::is_ascii_digit).collect();
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

struct Tour {
    dir: tempfile::TempDir,
    bin: PathBuf,
    path: String,
}

impl Tour {
    fn sh(&self, command: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(command)
            .current_dir(self.dir.path())
            .env("PATH", &self.path)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, command: &str) -> Output {
        self.sh(command).output().expect("run sh")
    }

    fn check_built(&self, command: &str) {
        let program = command.split_whitespace().next().unwrap_or("");
        assert!(
            self.bin.join(program).exists(),
            "{program} is not built next to bftd in {}: build the workspace first \
             (cargo build --workspace, or cargo test --workspace)",
            self.bin.display()
        );
    }
}

/// The background process; SIGKILLed if the test fails before stopping it.
struct Background(Option<Child>);

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_tour_block_is_found_and_parsed() {
    let steps = tour(include_str!("../README.md"));
    assert!(steps.iter().any(|s| s.comment.contains(KEEPS_RUNNING)));
    assert!(steps.iter().any(|s| s.expected().is_some()));
    let txn = steps
        .iter()
        .find(|s| s.command.starts_with("bftctl txn"))
        .expect("the tour shows a txn");
    assert!(txn.command.ends_with("--else 'get greeting'"), "{txn:?}");
    assert!(matches("a (b, ...)", "a (b, c 1)"));
    assert!(matches("x...y...z", "x1y2z"));
    assert!(!matches("x...y", "x1z"));
    assert!(!matches("abc", "abcd"));
    assert_eq!(split_comment("a '#b' # c"), ("a '#b' ", " c"));
    assert_eq!(
        port_ranges("on 127.0.0.1:7100..7103, and 127.0.0.1:8100..8103"),
        vec![(7100, 7103), (8100, 8103)]
    );
}

#[test]
fn the_readme_tour_runs_as_shown() {
    let steps = tour(include_str!("../README.md"));
    let bin = Path::new(env!("CARGO_BIN_EXE_bftd"))
        .parent()
        .expect("a bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let t = Tour {
        dir: tempfile::tempdir().unwrap(),
        bin,
        path,
    };
    let mut background = Background(None);
    let mut ran = 0;
    for step in &steps {
        let cmd = step.command.as_str();
        if cmd.starts_with("cargo ") || cmd.starts_with("export PATH=") {
            continue; // setup: this test runs the binaries cargo built for it
        }
        t.check_built(cmd);
        if step.comment.contains(KEEPS_RUNNING) {
            assert!(background.0.is_none(), "one background process: {cmd}");
            let ranges = port_ranges(&step.comment);
            assert_eq!(ranges.len(), 2, "nodes and metrics ports in {step:?}");
            let (nodes, metrics) = (free_port_range(4), free_port_range(4));
            let started = t
                .sh(&format!(
                    "exec {cmd} --base-port {nodes} --metrics-base-port {metrics}"
                ))
                .stdout(std::fs::File::create(t.dir.path().join("bg.out")).unwrap())
                .stderr(std::fs::File::create(t.dir.path().join("bg.err")).unwrap())
                .spawn()
                .expect("start the background command");
            background.0 = Some(started);
            wait_until("every node answers bftctl status", || {
                t.run("bftctl status --timeout-ms 2000").status.success()
            });
            let printed = std::fs::read_to_string(t.dir.path().join("bg.out")).unwrap();
            for ((a, b), base) in ranges.iter().zip([nodes, metrics]) {
                for port in 0..=(b - a) {
                    let addr = format!("127.0.0.1:{}", base + port);
                    assert!(printed.contains(&addr), "{cmd} names {addr}:\n{printed}");
                }
            }
            ran += 1;
            continue;
        }
        let out = t.run(cmd);
        assert!(out.status.success(), "{cmd}\n{}", text(&out));
        if let Some(expected) = step.expected() {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let first = stdout.lines().next().unwrap_or("");
            assert!(
                matches(expected, first),
                "{cmd}: the README shows '{expected}', it printed '{first}'"
            );
        }
        ran += 1;
    }
    assert!(ran >= 5, "ran {ran} tour commands");
    // Ctrl-C stops the cluster cleanly.
    let mut child = background.0.take().expect("the tour starts a cluster");
    let signalled = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(signalled.success());
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            stopping.elapsed() < DEADLINE,
            "bftd dev did not stop on Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "Ctrl-C: {status:?}");
}
