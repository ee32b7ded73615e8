//! Configuration, layered as in Dask: built-in defaults, then a TOML file, then `RASK_*`
//! environment variables, then the command line — each overriding the one before.
//!
//! Files: `/etc/rask/rask.toml` (the machine's), then the user's:
//! `$RASK_CONFIG` if set, else `$XDG_CONFIG_HOME/rask/rask.toml` (by default
//! `~/.config/rask/rask.toml`). A file has one table per command, its keys the
//! command's long options:
//!
//! ```toml
//! [scheduler]
//! host = "0.0.0.0"
//! port = 8786
//!
//! [worker]
//! nworkers = "auto"
//! memory-limit = "8GiB"
//! resources = ["gpu=1", "fast=2"]
//! death-timeout = 120
//!
//! [cuda-worker]
//! device-memory-limit = 0.8
//! ```
//!
//! An environment variable `RASK_<TABLE>_<KEY>` (upper case, `-` as `_`) gives one key:
//! `RASK_WORKER_NTHREADS=4`, `RASK_SCHEDULER_PORT=9000`. A key a command does not have,
//! in a file, is an error naming the file and the key (a typo would otherwise be
//! ignored); environment variables are matched only against the keys there are.
//!
//! `rask config` prints the effective values of every table and where each came from.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The option's built-in default.
    Default,
    /// A configuration file.
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
    /// The command line.
    CommandLine,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "environment {v}"),
            Source::CommandLine => f.write_str("command line"),
        }
    }
}

/// A value as configured: one string, several (a repeatable option), or a switch.
#[derive(Clone, Debug, PartialEq)]
pub enum Setting {
    /// One value.
    One(String),
    /// A repeatable option's values.
    Many(Vec<String>),
    /// A switch (`--quiet`): on or off.
    Switch(bool),
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Setting::One(s) => write!(f, "{s:?}"),
            Setting::Many(v) => write!(f, "{v:?}"),
            Setting::Switch(b) => write!(f, "{b}"),
        }
    }
}

/// The configuration files' values, by table and key, with the file each came from.
#[derive(Clone, Debug, Default)]
pub struct Files {
    /// The files looked for, and whether each was there.
    pub looked: Vec<(PathBuf, bool)>,
    values: BTreeMap<(String, String), (Setting, PathBuf)>,
}

impl Files {
    /// Reads the configuration files of this process's environment.
    pub fn load() -> Result<Files, String> {
        let mut paths = vec![PathBuf::from("/etc/rask/rask.toml")];
        match std::env::var_os("RASK_CONFIG") {
            Some(p) if !p.is_empty() => paths.push(PathBuf::from(p)),
            _ => {
                let base = std::env::var_os("XDG_CONFIG_HOME")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")));
                if let Some(b) = base {
                    paths.push(b.join("rask").join("rask.toml"));
                }
            }
        }
        let mut files = Files::default();
        for p in paths {
            match std::fs::read_to_string(&p) {
                Ok(text) => {
                    files.add(&p, &text)?;
                    files.looked.push((p, true));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // `$RASK_CONFIG` names a file that must be there.
                    if std::env::var_os("RASK_CONFIG").is_some_and(|c| Path::new(&c) == p) {
                        return Err(format!("RASK_CONFIG={}: no such file", p.display()));
                    }
                    files.looked.push((p, false));
                }
                Err(e) => return Err(format!("{}: {e}", p.display())),
            }
        }
        Ok(files)
    }

    /// Adds the values of `text`, a file at `path`, over those already there.
    pub fn add(&mut self, path: &Path, text: &str) -> Result<(), String> {
        let doc: toml_edit::DocumentMut = text
            .parse()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        for (table, item) in doc.iter() {
            let Some(t) = item.as_table_like() else {
                return Err(format!(
                    "{}: {table} is not a table; values go in [scheduler], [worker], [cuda-worker] or [client]",
                    path.display()
                ));
            };
            for (key, v) in t.iter() {
                let setting = setting(v).ok_or_else(|| {
                    format!(
                        "{}: [{table}] {key}: expected a string, number, boolean or an array of them",
                        path.display()
                    )
                })?;
                self.values.insert(
                    (table.to_string(), key.to_string()),
                    (setting, path.to_path_buf()),
                );
            }
        }
        Ok(())
    }

    /// The keys of `table` given by the files.
    fn keys<'a>(&'a self, table: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.values
            .keys()
            .filter(move |(t, _)| t == table)
            .map(|(_, k)| k.as_str())
    }

    /// The tables the files give values for.
    fn tables(&self) -> Vec<&str> {
        let mut t: Vec<&str> = self.values.keys().map(|(t, _)| t.as_str()).collect();
        t.dedup();
        t
    }
}

fn setting(item: &toml_edit::Item) -> Option<Setting> {
    fn scalar(v: &toml_edit::Value) -> Option<String> {
        match v {
            toml_edit::Value::String(s) => Some(s.value().clone()),
            toml_edit::Value::Integer(i) => Some(i.value().to_string()),
            toml_edit::Value::Float(f) => Some(f.value().to_string()),
            _ => None,
        }
    }
    let v = item.as_value()?;
    match v {
        toml_edit::Value::Boolean(b) => Some(Setting::Switch(*b.value())),
        toml_edit::Value::Array(a) => a
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()
            .map(Setting::Many),
        v => scalar(v).map(Setting::One),
    }
}

/// The environment variable of `key` in `table`: `RASK_WORKER_MEMORY_LIMIT`.
pub fn env_name(table: &str, key: &str) -> String {
    format!("RASK_{table}_{key}")
        .to_ascii_uppercase()
        .replace('-', "_")
}

/// An option of a command that configuration may give.
struct Opt {
    id: String,
    key: String,
    positional: bool,
    switch: bool,
    many: bool,
}

fn options(cmd: &clap::Command) -> Vec<Opt> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set() && a.get_id() != "help" && a.get_id() != "version")
        .filter_map(|a| {
            let positional = a.is_positional();
            let key = if positional {
                a.get_id().as_str().replace('_', "-")
            } else {
                a.get_long()?.to_string()
            };
            let switch = matches!(
                a.get_action(),
                clap::ArgAction::SetTrue | clap::ArgAction::SetFalse
            );
            let many = matches!(a.get_action(), clap::ArgAction::Append);
            Some(Opt {
                id: a.get_id().to_string(),
                key,
                positional,
                switch,
                many,
            })
        })
        .collect()
}

/// What configuration gives `table`'s options: each key's value and source, for those
/// set by a file or the environment (`env` looks variables up).
pub fn settings(
    cmd: &clap::Command,
    table: &str,
    files: &Files,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, Setting, Source)>, String> {
    let opts = options(cmd);
    for key in files.keys(table) {
        if !opts.iter().any(|o| o.key == key) {
            let file = &files.values[&(table.to_string(), key.to_string())].1;
            let mut known: Vec<&str> = opts.iter().map(|o| o.key.as_str()).collect();
            known.sort_unstable();
            return Err(format!(
                "{}: [{table}] has no key {key:?}; its keys are: {}",
                file.display(),
                known.join(", ")
            ));
        }
    }
    let mut out = Vec::new();
    for o in &opts {
        let var = env_name(table, &o.key);
        if let Some(v) = env(&var) {
            let s = if o.switch {
                match v.trim().to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" | "on" => Setting::Switch(true),
                    "0" | "false" | "no" | "off" | "" => Setting::Switch(false),
                    _ => return Err(format!("{var}={v:?}: expected true or false")),
                }
            } else if o.many {
                Setting::Many(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect(),
                )
            } else {
                Setting::One(v)
            };
            out.push((o.key.clone(), s, Source::Env(var)));
        } else if let Some((s, path)) = files.values.get(&(table.to_string(), o.key.clone())) {
            let s = match (s, o.switch, o.many) {
                (Setting::Switch(_), true, _) => s.clone(),
                (Setting::One(v), false, true) => Setting::Many(vec![v.clone()]),
                (Setting::Many(_), false, true) | (Setting::One(_), false, false) => s.clone(),
                _ => {
                    return Err(format!(
                        "{}: [{table}] {}: expected {}",
                        path.display(),
                        o.key,
                        if o.switch {
                            "true or false"
                        } else {
                            "one value"
                        }
                    ))
                }
            };
            out.push((o.key.clone(), s, Source::File(path.clone())));
        }
    }
    Ok(out)
}

/// `argv` (a whole command line, program first) with what configuration gives the
/// subcommand `table` (reached by `path` of subcommand names from `root`, e.g.
/// `["worker"]`) added for every option the command line does not give: the command
/// line wins, then the environment, then the files.
pub fn apply(
    root: &clap::Command,
    path: &[&str],
    table: &str,
    argv: Vec<OsString>,
    files: &Files,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<OsString>, String> {
    let mut cmd = root.clone();
    for p in path {
        cmd = cmd
            .find_subcommand(p)
            .ok_or_else(|| format!("no subcommand {p}"))?
            .clone();
    }
    let given = settings(&cmd, table, files, env)?;
    if given.is_empty() {
        return Ok(argv);
    }
    // Which options the command line gives (parsed leniently: what configuration adds
    // may be what makes it complete).
    let matches = root
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(argv.iter())
        .map_err(|e| e.to_string())?;
    let mut m = &matches;
    for p in path {
        match m.subcommand_matches(p) {
            Some(s) => m = s,
            None => return Ok(argv),
        }
    }
    let on_line = |id: &str| {
        matches!(
            m.value_source(id),
            Some(clap::parser::ValueSource::CommandLine)
        )
    };
    let opts = options(&cmd);
    let mut extra: Vec<OsString> = Vec::new();
    let mut positional: Vec<OsString> = Vec::new();
    for (key, setting, _) in given {
        let o = opts
            .iter()
            .find(|o| o.key == key)
            .expect("settings gives known keys");
        if on_line(&o.id) {
            continue;
        }
        // An option the command line contradicts (`--interface` given, `host` in a file)
        // gives way to it.
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == o.id.as_str())
            .expect("a known option");
        if cmd
            .get_arg_conflicts_with(arg)
            .iter()
            .any(|c| on_line(c.get_id().as_str()))
        {
            continue;
        }
        match setting {
            Setting::Switch(true) => extra.push(format!("--{key}").into()),
            Setting::Switch(false) => {}
            Setting::One(v) if o.positional => positional.push(v.into()),
            Setting::One(v) => extra.extend([format!("--{key}").into(), v.into()]),
            Setting::Many(vs) => {
                for v in vs {
                    extra.extend([format!("--{key}").into(), v.into()]);
                }
            }
        }
    }
    // Positional values right after the subcommand, options at the end.
    let mut out = argv;
    if !positional.is_empty() {
        let at = path
            .last()
            .and_then(|p| out.iter().position(|a| a == p))
            .map_or(out.len(), |i| i + 1);
        for (j, v) in positional.into_iter().enumerate() {
            out.insert(at + j, v);
        }
    }
    out.extend(extra);
    Ok(out)
}

/// The effective configuration of `tables` (each a table name and its command) as
/// `rask config` prints it: every option, its value and where it came from.
pub fn describe(
    tables: &[(&str, clap::Command)],
    files: &Files,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    use std::fmt::Write;
    let mut out = String::new();
    for (p, found) in &files.looked {
        let _ = writeln!(
            out,
            "# {} {}",
            p.display(),
            if *found { "(read)" } else { "(not found)" }
        );
    }
    for t in files.tables() {
        if !tables.iter().any(|(name, _)| *name == t) {
            return Err(format!(
                "[{t}] is not a table of rask's configuration; the tables are: {}",
                tables
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    for (table, cmd) in tables {
        let given = settings(cmd, table, files, env)?;
        let _ = writeln!(out, "\n[{table}]");
        for o in options(cmd) {
            let (value, source) = match given.iter().find(|(k, _, _)| *k == o.key) {
                Some((_, s, src)) => (s.to_string(), src.clone()),
                None => {
                    let arg = cmd
                        .get_arguments()
                        .find(|a| a.get_id() == o.id.as_str())
                        .expect("a known option");
                    let d: Vec<String> = arg
                        .get_default_values()
                        .iter()
                        .map(|v| v.to_string_lossy().into_owned())
                        .collect();
                    let value = match (o.switch, d.as_slice()) {
                        (true, _) => "false".to_string(),
                        (false, [one]) => format!("{one:?}"),
                        (false, []) => "# (unset)".to_string(),
                        (false, many) => format!("{many:?}"),
                    };
                    (value, Source::Default)
                }
            };
            let line = format!("{} = {value}", o.key);
            let _ = writeln!(out, "{line:<40} # {source}");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
