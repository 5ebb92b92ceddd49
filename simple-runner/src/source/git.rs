//! The git CLI of the runner's host, run for a checkout: with nothing of the host's
//! or the user's configuration, no prompt, the operator's credentials through a
//! helper, only network protocols, and each process group killed when the checkout
//! is dropped (a cancel, or the run's deadline). What git prints goes to the run's
//! log line by line, without credentials.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use conveyor_sdk::log::LineSplitter;
use conveyor_sdk::LogHandle;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use super::credentials::Credentials;
use super::SourceError;

/// How many of its last lines on stderr a failed git command is judged by.
const KEPT_LINES: usize = 20;

/// The variables of the runner's environment git gets: where programs are, and how
/// to reach servers (proxies, CA certificates). Nothing else of it, and no `GIT_*`.
const PASSED_ENV: [&str; 11] = [
    "PATH",
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// The configuration every command runs with (`-c`), whatever the host's.
const CONFIG: [&str; 12] = [
    // No prompt, and no helper but the operator's credentials (below).
    "credential.helper=",
    "core.askPass=",
    // Network protocols only: a submodule cannot point at the host's files.
    "protocol.allow=never",
    "protocol.https.allow=always",
    "protocol.http.allow=always",
    "protocol.git.allow=always",
    "protocol.ssh.allow=always",
    // Nothing starts in the background that would write into the checkout later.
    "gc.auto=0",
    "maintenance.auto=false",
    // Quiet about what is expected here.
    "advice.detachedHead=false",
    "init.defaultBranch=main",
    "fetch.recurseSubmodules=false",
];

/// What git's output is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Output {
    /// Both stdout and stderr go to the run's log.
    Log,
    /// Stdout is returned (`rev-parse`); stderr goes to the run's log.
    Capture,
}

/// git, as a checkout runs it.
pub(super) struct Git<'a> {
    /// The directory commands run in.
    cwd: PathBuf,
    /// Its `HOME`, empty.
    home: PathBuf,
    /// The checkout's copy of the operator's credentials.
    credentials_file: Option<PathBuf>,
    credentials: &'a Credentials,
    log: &'a LogHandle,
}

impl<'a> Git<'a> {
    /// git running in `cwd` with `home` as its `HOME` and `credentials_file` (the
    /// checkout's copy of `credentials`) for its credential helper, logging to `log`.
    pub(super) fn new(
        cwd: &Path,
        home: PathBuf,
        credentials_file: Option<PathBuf>,
        credentials: &'a Credentials,
        log: &'a LogHandle,
    ) -> Self {
        Self { cwd: cwd.to_owned(), home, credentials_file, credentials, log }
    }

    /// The command line of `args`: the configuration first, then `args`.
    pub(super) fn command_line(&self, args: &[String]) -> Vec<OsString> {
        let mut line = Vec::new();
        for setting in CONFIG {
            line.extend([OsString::from("-c"), OsString::from(setting)]);
        }
        if let Some(file) = &self.credentials_file {
            let mut helper = OsString::from("credential.helper=store --file=");
            helper.push(shell_quoted(&file.to_string_lossy()));
            line.extend([OsString::from("-c"), helper]);
        }
        line.extend(args.iter().map(OsString::from));
        line
    }

    /// The environment of every command: the few variables git needs of the
    /// runner's, and git told to read no configuration of the host or its user and
    /// never to prompt.
    fn environment(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = PASSED_ENV
            .iter()
            .filter_map(|name| std::env::var_os(name).map(|value| (OsString::from(name), value)))
            .collect();
        if !env.iter().any(|(name, _)| name == "PATH") {
            env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
        }
        let home = self.home.as_os_str();
        let mut global = self.home.clone();
        global.push(".gitconfig");
        env.extend([
            ("HOME".into(), home.to_owned()),
            ("XDG_CONFIG_HOME".into(), home.to_owned()),
            ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
            ("GIT_CONFIG_GLOBAL".into(), global.into_os_string()),
            ("GIT_TERMINAL_PROMPT".into(), "0".into()),
            ("GIT_SSH_COMMAND".into(), "ssh -o BatchMode=yes".into()),
            ("LC_ALL".into(), "C".into()),
            ("LANG".into(), "C".into()),
        ]);
        env
    }

    /// Runs `git <args>`; its stdout when `output` captures it. Dropping the future
    /// kills git and every process it started.
    pub(super) async fn run(&self, args: &[String], output: Output) -> Result<String, SourceError> {
        let mut command = Command::new("git");
        command
            .args(self.command_line(args))
            .env_clear()
            .envs(self.environment())
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let mut running = Running::spawn(command)?;
        let (stdout, stderr) = running.pipes();
        let (captured, kept) = tokio::join!(
            async {
                match output {
                    Output::Capture => read_all(stdout).await,
                    Output::Log => {
                        self.log_lines(stdout, 0).await;
                        String::new()
                    }
                }
            },
            self.log_lines(stderr, KEPT_LINES),
        );
        let status = running.wait().await.map_err(SourceError::NoGit)?;
        if status.success() {
            Ok(captured)
        } else {
            Err(SourceError::Git(reason(args, status, kept)))
        }
    }

    /// Logs every line of `pipe` but blank ones, without credentials; the last `keep`
    /// of them.
    async fn log_lines(&self, pipe: Option<impl AsyncRead + Unpin>, keep: usize) -> Vec<String> {
        let mut kept = VecDeque::with_capacity(keep);
        let Some(mut pipe) = pipe else { return Vec::new() };
        let mut splitter = LineSplitter::new();
        let mut buffer = vec![0u8; 8192];
        loop {
            let (lines, ended) = match pipe.read(&mut buffer).await {
                Ok(0) | Err(_) => (splitter.finish().into_iter().collect(), true),
                Ok(read) => (splitter.push(&buffer[..read]), false),
            };
            for line in lines.iter().filter(|line| !line.trim().is_empty()) {
                let line = self.credentials.redact(line);
                self.log.log(&line).await;
                if keep > 0 {
                    if kept.len() == keep {
                        kept.pop_front();
                    }
                    kept.push_back(line);
                }
            }
            if ended {
                return kept.into();
            }
        }
    }
}

/// A git process running in a process group of its own: the group is killed when
/// it is dropped before git was waited for, so that a cancel also stops the
/// processes git started (`git-remote-http`, `index-pack`, a submodule's clone).
struct Running {
    child: Child,
    /// The process group, while git has not been waited for.
    group: Option<rustix::process::Pid>,
}

impl Running {
    fn spawn(mut command: Command) -> Result<Self, SourceError> {
        let child = command.spawn().map_err(SourceError::NoGit)?;
        let group = child.id().and_then(|id| i32::try_from(id).ok()).and_then(rustix::process::Pid::from_raw);
        Ok(Self { child, group })
    }

    fn pipes(&mut self) -> (Option<tokio::process::ChildStdout>, Option<tokio::process::ChildStderr>) {
        (self.child.stdout.take(), self.child.stderr.take())
    }

    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait().await;
        // Waited for: its id may now be anyone's.
        self.group = None;
        status
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // git has not been waited for, so its id, the group's, is still its own.
        if let Some(group) = self.group.take() {
            if group != rustix::process::Pid::INIT {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
        }
        // Then `kill_on_drop` kills git itself, if the group was gone, and reaps it.
    }
}

/// Everything on `pipe`, as text.
async fn read_all(pipe: Option<impl AsyncRead + Unpin>) -> String {
    let mut text = String::new();
    if let Some(mut pipe) = pipe {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes).await;
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}

/// `text` quoted for the shell git runs a credential helper with.
fn shell_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Why a git command failed, in git's words: its `fatal:` and `error:` lines and the
/// lines after them (a cause git gives on the next line), else its last line, else
/// its exit status.
pub(super) fn reason(args: &[String], status: ExitStatus, lines: Vec<String>) -> String {
    let first = lines.iter().position(|line| line.starts_with("fatal: ") || line.starts_with("error: "));
    let mut said: Vec<&str> = match first {
        Some(first) => lines[first..]
            .iter()
            .filter(|line| !line.starts_with("hint: ") && !line.trim().is_empty())
            .map(|line| line.strip_prefix("fatal: ").or_else(|| line.strip_prefix("error: ")).unwrap_or(line))
            .collect(),
        None => lines.last().map(String::as_str).into_iter().collect(),
    };
    said.dedup();
    let mut reason = String::new();
    for part in said {
        if !reason.is_empty() {
            reason.push_str(if reason.ends_with(':') { " " } else { "; " });
        }
        reason.push_str(part.trim_end());
    }
    if reason.is_empty() {
        let command = match args {
            [flag, _, command, ..] if flag == "-C" => command.as_str(),
            [command, ..] => command.as_str(),
            [] => "",
        };
        reason = format!("git {command} failed ({status})");
    }
    if reason.contains("terminal prompts disabled") {
        reason.push_str(" (the runner has no credentials for this host: see --git-credentials)");
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|line| (*line).to_owned()).collect()
    }

    fn failed() -> ExitStatus {
        ExitStatus::from_raw(128 << 8)
    }

    #[test]
    fn a_failure_is_told_in_gits_words_from_its_first_fatal_or_error_line() {
        for (said, expected) in [
            (
                vec!["fatal: Remote branch nosuch not found in upstream origin"],
                "Remote branch nosuch not found in upstream origin",
            ),
            (
                vec![
                    "warning: x",
                    "fatal: unable to connect to 127.0.0.1:",
                    "127.0.0.1[0: 127.0.0.1]: errno=Connection refused",
                ],
                "unable to connect to 127.0.0.1: 127.0.0.1[0: 127.0.0.1]: errno=Connection refused",
            ),
            (
                vec![
                    "error: RPC failed; HTTP 500",
                    "hint: try again",
                    "fatal: expected flush after ref listing",
                ],
                "RPC failed; HTTP 500; expected flush after ref listing",
            ),
            (vec!["something odd"], "something odd"),
        ] {
            assert_eq!(reason(&[], failed(), lines(&said)), expected, "{said:?}");
        }
    }

    #[test]
    fn a_silent_failure_names_the_command_and_its_status() {
        let args = lines(&["-C", "checkout", "rev-parse", "HEAD"]);
        assert_eq!(reason(&args, failed(), vec![]), "git rev-parse failed (exit status: 128)");
    }

    #[test]
    fn a_missing_username_points_at_the_operators_credentials() {
        let said = lines(&["fatal: could not read Username for 'http://h': terminal prompts disabled"]);
        assert_eq!(
            reason(&[], failed(), said),
            "could not read Username for 'http://h': terminal prompts disabled \
             (the runner has no credentials for this host: see --git-credentials)"
        );
    }

    #[test]
    fn the_credential_helper_gets_the_copy_quoted_for_the_shell() {
        let (log, _) = LogHandle::memory();
        let credentials = Credentials::default();
        let git =
            Git::new(Path::new("/"), "/h".into(), Some("/tmp/it's here/creds".into()), &credentials, &log);
        let line = git.command_line(&lines(&["fetch"]));
        let helper = line.iter().rev().nth(1).map(|arg| arg.to_string_lossy().into_owned());
        assert_eq!(helper.as_deref(), Some(r"credential.helper=store --file='/tmp/it'\''s here/creds'"));
        assert_eq!(line.last().map(|arg| arg.to_string_lossy().into_owned()).as_deref(), Some("fetch"));
        let reset = line.iter().position(|arg| arg == "credential.helper=");
        let store = line.iter().position(|arg| arg.to_string_lossy().starts_with("credential.helper=store"));
        assert!(reset < store, "the host's helpers are reset before the operator's is set: {line:?}");
    }

    #[test]
    fn git_reads_no_configuration_of_the_host_and_never_prompts() {
        let (log, _) = LogHandle::memory();
        let credentials = Credentials::default();
        let git = Git::new(Path::new("/"), "/scratch/home".into(), None, &credentials, &log);
        let env = git.environment();
        let value =
            |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.to_string_lossy().into_owned());
        assert_eq!(value("HOME").as_deref(), Some("/scratch/home"));
        assert_eq!(value("GIT_CONFIG_NOSYSTEM").as_deref(), Some("1"));
        assert_eq!(value("GIT_CONFIG_GLOBAL").as_deref(), Some("/scratch/home/.gitconfig"));
        assert_eq!(value("GIT_TERMINAL_PROMPT").as_deref(), Some("0"));
        assert!(value("PATH").is_some());
        assert!(env.iter().all(|(name, _)| name != "GIT_ASKPASS" && name != "SSH_ASKPASS"), "{env:?}");
    }
}
