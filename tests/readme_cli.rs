//! README's CLI examples, run: every `$ ...` line of README.md's ```console blocks, in order,
//! against one fresh `loghouse serve` (the built binary, a temporary data directory, a free
//! port given to the commands as LOGHOUSE_ADDR, so they read as a user types them), its output
//! (stdout, then stderr) compared with the lines under it. A README that drifts from the binary
//! fails here.
//!
//! Expected output: `[..]` matches any text within a line; a line `...` matches any lines (none
//! included). A block's last line `^C` means the command does not end by itself (`--follow`):
//! it is stopped once its output matches (or after a deadline). A command whose expected output
//! has a line starting `Error: ` must fail; every other one must succeed.

mod process_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use process_support::{exe, Standalone};

#[derive(Debug)]
struct Example {
    /// README line of the command (1-based).
    line: usize,
    command: String,
    expected: Vec<String>,
    interrupted: bool,
}

fn examples(readme: &str) -> Vec<Example> {
    let mut examples: Vec<Example> = Vec::new();
    let mut in_console = false;
    for (i, line) in readme.lines().enumerate() {
        let trimmed = line.trim_start();
        if !in_console {
            in_console = trimmed == "```console";
            continue;
        }
        if trimmed.starts_with("```") {
            in_console = false;
        } else if let Some(command) = line.strip_prefix("$ ") {
            examples.push(Example {
                line: i + 1,
                command: command.to_owned(),
                expected: Vec::new(),
                interrupted: false,
            });
        } else {
            let example = examples.last_mut().expect("output before any `$` line");
            if line == "^C" {
                example.interrupted = true;
            } else {
                example.expected.push(line.to_owned());
            }
        }
    }
    examples
}

/// `[..]` matches any text within the line.
fn line_matches(pattern: &str, actual: &str) -> bool {
    let mut parts = pattern.split("[..]");
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = actual.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// A line `...` matches any lines.
fn lines_match(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((first, rest)) => {
            !actual.is_empty() && line_matches(first, actual[0]) && lines_match(rest, &actual[1..])
        }
    }
}

fn shell_exec(example: &Example, dir: &Path, addr: &str) -> Command {
    let exec = Example {
        line: example.line,
        command: format!("exec {}", example.command),
        expected: Vec::new(),
        interrupted: true,
    };
    shell(&exec, dir, addr)
}

fn shell(example: &Example, dir: &Path, addr: &str) -> Command {
    let bin_dir = exe().parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(&example.command)
        .current_dir(dir)
        .env("PATH", path)
        .env("LOGHOUSE_ADDR", addr)
        .env_remove("RUST_LOG")
        .env_remove("LOGHOUSE_CA_CERT")
        .env_remove("LOGHOUSE_CERT")
        .env_remove("LOGHOUSE_KEY")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null());
    command
}

/// Runs one example; returns its output (stdout, then stderr) and whether it succeeded.
fn run(example: &Example, dir: &Path, addr: &str) -> (String, bool) {
    if !example.interrupted {
        let output = shell(example, dir, addr).output().unwrap();
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        return (text, output.status.success());
    }
    // Runs until its output matches, then is killed (`exec`: the shell becomes the command,
    // so killing the child stops it; such an example is one command, no pipe).
    assert!(
        !example.command.contains('|'),
        "README.md:{}: an interrupted example must be a single command",
        example.line
    );
    let out_path = dir.join("example.out");
    let err_path = dir.join("example.err");
    let mut child = shell_exec(example, dir, addr)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let read = || {
        let mut text = std::fs::read_to_string(&out_path).unwrap_or_default();
        text.push_str(&std::fs::read_to_string(&err_path).unwrap_or_default());
        text
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let text = read();
        if lines_match(&example.expected, &text.lines().collect::<Vec<_>>()) {
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    (read(), true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_console_examples_print_what_the_readme_says() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let examples = examples(&readme);
    assert!(
        examples.len() >= 20,
        "README's console blocks hold only {} commands",
        examples.len()
    );
    let root = tempfile::tempdir().unwrap();
    let mut node = Standalone::new(root.path());
    node.start(&[]);
    node.client().await;
    let work = root.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let mut failures = Vec::new();
    for example in &examples {
        let (dir, addr) = (work.clone(), node.addr.clone());
        let (output, success) = tokio::task::block_in_place(|| run(example, &dir, &addr));
        let actual: Vec<&str> = output.lines().collect();
        let should_fail = example.expected.iter().any(|l| l.starts_with("Error: "));
        if !lines_match(&example.expected, &actual) || success == should_fail {
            failures.push(format!(
                "README.md:{}: $ {}\n--- expected ({}):\n{}\n--- got:\n{}",
                example.line,
                example.command,
                if should_fail { "failure" } else { "success" },
                example.expected.join("\n"),
                output
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} README examples differ:\n\n{}\nnode log:\n{}",
        failures.len(),
        examples.len(),
        failures.join("\n\n"),
        node.log_text()
    );
}

#[test]
fn the_readme_starts_with_the_two_newcomer_commands() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let first_block: Vec<&str> = readme
        .split("```sh\n")
        .nth(1)
        .expect("a sh block")
        .lines()
        .take(2)
        .collect();
    assert!(first_block[0].starts_with("cargo run --release -- serve"));
    assert!(first_block[1].starts_with("cargo test"));
}

#[test]
fn patterns_match_wildcards_within_lines_and_across_lines() {
    assert!(line_matches("size [..] bytes", "size 42 bytes"));
    assert!(line_matches("[..]", "anything"));
    assert!(line_matches("a[..]b[..]c", "a-b-c"));
    assert!(!line_matches("size [..] bytes", "size 42 kB"));
    assert!(!line_matches("exact", "exactly"));
    let expected = |lines: &[&str]| lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    assert!(lines_match(
        &expected(&["a", "...", "z"]),
        &["a", "b", "c", "z"]
    ));
    assert!(lines_match(&expected(&["a", "...", "z"]), &["a", "z"]));
    assert!(lines_match(
        &expected(&["...", "1\tdirect", "..."]),
        &["0\tA1", "1\tdirect"]
    ));
    assert!(!lines_match(&expected(&["a", "z"]), &["a", "b", "z"]));
    let parsed = examples("```console\n$ loghouse x   # c\nout\n^C\n```\n$ not this\n");
    assert_eq!(parsed.len(), 1);
    assert_eq!(parsed[0].command, "loghouse x   # c");
    assert_eq!(parsed[0].expected, ["out"]);
    assert!(parsed[0].interrupted);
}
