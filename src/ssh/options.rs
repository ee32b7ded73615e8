//! How the hosts are reached: the `ssh` command line, and the shell wrapper that stops a
//! remote process when its ssh session's input closes.

use std::path::PathBuf;
use std::process::Command;

/// How to reach the hosts: options of the `ssh` command.
#[derive(Clone, Debug)]
pub struct SshOptions {
    /// The ssh client (default `ssh`).
    pub ssh: PathBuf,
    /// `-p`: the port of every host's sshd.
    pub port: Option<u16>,
    /// `-l`: the remote user.
    pub user: Option<String>,
    /// `-i`: the private key.
    pub identity: Option<PathBuf>,
    /// `-o` options (`StrictHostKeyChecking=accept-new`, `UserKnownHostsFile=…`).
    pub options: Vec<String>,
    /// The `rask` program on the hosts (default `rask`, found on their PATH).
    pub remote_rask: String,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            ssh: PathBuf::from("ssh"),
            port: None,
            user: None,
            identity: None,
            options: Vec::new(),
            remote_rask: "rask".into(),
        }
    }
}

/// Stops the command in `"$@"` when standard input closes (the ssh session ended): the
/// session's input is kept as fd 3 for a watcher, since a background job's input would
/// otherwise be /dev/null.
const WRAPPER: &str = "exec 3<&0; \"$@\" <&- & c=$!; \
                       ( cat <&3 >/dev/null 2>&1; kill -TERM \"$c\" 2>/dev/null ) >/dev/null 2>&1 & \
                       wait \"$c\"";

impl SshOptions {
    /// The `ssh` command that runs `args` (program first) on `host`, stopped when the
    /// session's input closes.
    pub fn command(&self, host: &str, args: &[String]) -> Command {
        let mut cmd = Command::new(&self.ssh);
        cmd.args(["-o", "BatchMode=yes", "-T"]);
        if let Some(p) = self.port {
            cmd.args(["-p", &p.to_string()]);
        }
        if let Some(u) = &self.user {
            cmd.args(["-l", u]);
        }
        if let Some(i) = &self.identity {
            cmd.arg("-i").arg(i);
        }
        for o in &self.options {
            cmd.args(["-o", o]);
        }
        cmd.arg(host).arg("--").arg(self.remote_command(args));
        cmd
    }

    /// The text the remote shell runs for `args`.
    pub fn remote_command(&self, args: &[String]) -> String {
        let mut words = vec![
            "sh".to_string(),
            "-c".to_string(),
            rask_deploy::shell_quote(WRAPPER).into_owned(),
            "sh".to_string(),
        ];
        words.extend(
            args.iter()
                .map(|a| rask_deploy::shell_quote(a).into_owned()),
        );
        words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    #[test]
    fn the_ssh_command_names_every_option_and_quotes_the_remote_words() {
        let o = SshOptions {
            port: Some(2222),
            user: Some("ada".into()),
            identity: Some("/k/id".into()),
            options: vec!["StrictHostKeyChecking=no".into()],
            remote_rask: "/opt/rask bin/rask".into(),
            ..SshOptions::default()
        };
        let cmd = o.command(
            "node1",
            &["/opt/rask bin/rask".into(), "worker".into(), "it's".into()],
        );
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(cmd.get_program(), "ssh");
        assert_eq!(
            &args[..12],
            [
                "-o",
                "BatchMode=yes",
                "-T",
                "-p",
                "2222",
                "-l",
                "ada",
                "-i",
                "/k/id",
                "-o",
                "StrictHostKeyChecking=no",
                "node1"
            ]
        );
        assert_eq!(args[12], "--");
        let remote = &args[13];
        assert!(remote.starts_with("sh -c '"), "{remote}");
        assert!(
            remote.ends_with(" sh '/opt/rask bin/rask' worker 'it'\\''s'"),
            "{remote}"
        );
    }

    #[test]
    fn the_wrapper_stops_its_command_when_its_input_closes_and_passes_words_intact() {
        // The remote command, run by a local shell as sshd would run it.
        let o = SshOptions::default();
        let marker = std::env::temp_dir().join(format!("rask-wrap-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        let script = format!("printf '%s|' \"$@\" > {}; exec sleep 600", marker.display());
        let text = o.remote_command(&[
            "sh".into(),
            "-c".into(),
            script,
            "x".into(),
            "two words".into(),
            "it's $HOME".into(),
        ]);
        let mut child = Command::new("sh")
            .args(["-c", &text])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !marker.exists() {
            assert!(Instant::now() < deadline, "the command did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Running while the input is open.
        assert!(child.try_wait().unwrap().is_none());
        drop(child.stdin.take());
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                assert!(!s.success(), "sleep was stopped, not finished: {s}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "closing the input did not stop it"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            std::fs::read_to_string(&marker).unwrap(),
            "two words|it's $HOME|"
        );
        let _ = std::fs::remove_file(&marker);
    }
}
