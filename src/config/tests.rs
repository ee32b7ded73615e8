use super::*;
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Worker {
        #[arg(required_unless_present = "scheduler_file")]
        scheduler: Option<String>,
        #[arg(long)]
        scheduler_file: Option<String>,
        #[arg(long, default_value_t = 1)]
        nthreads: u32,
        #[arg(long, default_value = "auto")]
        memory_limit: String,
        #[arg(long)]
        resources: Vec<String>,
        #[arg(long, conflicts_with = "interface")]
        host: Option<String>,
        #[arg(long)]
        interface: Option<String>,
        #[arg(long)]
        quiet: bool,
    },
}

fn files(text: &str) -> Files {
    let mut f = Files::default();
    f.add(Path::new("/etc/rask/rask.toml"), text).unwrap();
    f
}

fn run(argv: &[&str], f: &Files, env: &[(&str, &str)]) -> Result<Vec<String>, String> {
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |k: &str| env.get(k).cloned();
    apply(
        &<Cli as clap::CommandFactory>::command(),
        &["worker"],
        "worker",
        argv.iter().map(OsString::from).collect(),
        f,
        &lookup,
    )
    .map(|v| v.into_iter().map(|s| s.into_string().unwrap()).collect())
}

#[test]
fn the_command_line_beats_the_environment_which_beats_the_file() {
    let f = files(
        "[worker]\nnthreads = 3\nmemory-limit = \"4GiB\"\nresources = [\"gpu=1\", \"x=2\"]\nquiet = true\n",
    );
    // The file alone.
    assert_eq!(
        run(&["rask", "worker", "tcp://h:1"], &f, &[]).unwrap(),
        [
            "rask",
            "worker",
            "tcp://h:1",
            "--nthreads",
            "3",
            "--memory-limit",
            "4GiB",
            "--resources",
            "gpu=1",
            "--resources",
            "x=2",
            "--quiet"
        ]
    );
    // The environment over the file.
    assert_eq!(
        run(
            &["rask", "worker", "tcp://h:1"],
            &f,
            &[
                ("RASK_WORKER_NTHREADS", "5"),
                ("RASK_WORKER_QUIET", "false")
            ]
        )
        .unwrap(),
        [
            "rask",
            "worker",
            "tcp://h:1",
            "--nthreads",
            "5",
            "--memory-limit",
            "4GiB",
            "--resources",
            "gpu=1",
            "--resources",
            "x=2"
        ]
    );
    // The command line over both.
    assert_eq!(
        run(
            &[
                "rask",
                "worker",
                "tcp://h:1",
                "--nthreads",
                "7",
                "--memory-limit",
                "1GiB"
            ],
            &f,
            &[("RASK_WORKER_NTHREADS", "5")]
        )
        .unwrap(),
        [
            "rask",
            "worker",
            "tcp://h:1",
            "--nthreads",
            "7",
            "--memory-limit",
            "1GiB",
            "--resources",
            "gpu=1",
            "--resources",
            "x=2",
            "--quiet"
        ]
    );
}

#[test]
fn the_scheduler_may_come_from_configuration_and_a_contradicted_option_gives_way() {
    let f = files("[worker]\nscheduler = \"tcp://10.0.0.1:8786\"\nhost = \"0.0.0.0\"\n");
    assert_eq!(
        run(&["rask", "worker", "--nthreads", "2"], &f, &[]).unwrap(),
        [
            "rask",
            "worker",
            "tcp://10.0.0.1:8786",
            "--nthreads",
            "2",
            "--host",
            "0.0.0.0"
        ]
    );
    // `--interface` on the command line: the file's `host` would conflict.
    assert_eq!(
        run(
            &["rask", "worker", "tcp://h:1", "--interface", "eth0"],
            &f,
            &[]
        )
        .unwrap(),
        ["rask", "worker", "tcp://h:1", "--interface", "eth0"]
    );
}

#[test]
fn unknown_keys_and_bad_values_are_errors_naming_them() {
    let f = files("[worker]\nnthread = 3\n");
    let e = run(&["rask", "worker", "tcp://h:1"], &f, &[]).unwrap_err();
    assert!(
        e.contains("/etc/rask/rask.toml") && e.contains("\"nthread\"") && e.contains("nthreads"),
        "{e}"
    );
    let f = files("[worker]\nquiet = \"very\"\n");
    assert!(run(&["rask", "worker", "tcp://h:1"], &f, &[])
        .unwrap_err()
        .contains("true or false"));
    let e = run(
        &["rask", "worker", "tcp://h:1"],
        &Files::default(),
        &[("RASK_WORKER_QUIET", "maybe")],
    )
    .unwrap_err();
    assert!(e.contains("RASK_WORKER_QUIET"), "{e}");
    let mut f = Files::default();
    assert!(f
        .add(Path::new("x.toml"), "[worker\n")
        .unwrap_err()
        .contains("x.toml"));
    assert!(f
        .add(Path::new("x.toml"), "nthreads = 3\n")
        .unwrap_err()
        .contains("not a table"));
    assert!(f
        .add(Path::new("x.toml"), "[worker]\nnthreads = { a = 1 }\n")
        .unwrap_err()
        .contains("nthreads"));
}

#[test]
fn a_later_file_overrides_an_earlier_one() {
    let mut f = files("[worker]\nnthreads = 3\nmemory-limit = \"2GiB\"\n");
    f.add(
        Path::new("/home/u/.config/rask/rask.toml"),
        "[worker]\nnthreads = 8\n",
    )
    .unwrap();
    assert_eq!(
        run(&["rask", "worker", "tcp://h:1"], &f, &[]).unwrap(),
        [
            "rask",
            "worker",
            "tcp://h:1",
            "--nthreads",
            "8",
            "--memory-limit",
            "2GiB"
        ]
    );
}

#[test]
fn describe_names_every_option_its_value_and_its_source() {
    let f = files("[worker]\nnthreads = 3\n");
    let cmd = <Cli as clap::CommandFactory>::command()
        .find_subcommand("worker")
        .unwrap()
        .clone();
    let env = |k: &str| (k == "RASK_WORKER_HOST").then(|| "0.0.0.0".to_string());
    let text = describe(&[("worker", cmd.clone())], &f, &env).unwrap();
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} =")))
            .unwrap_or_else(|| panic!("no {key} in {text}"))
            .to_string()
    };
    assert!(
        line("nthreads").contains("\"3\"")
            && line("nthreads").contains("# file /etc/rask/rask.toml")
    );
    assert!(
        line("host").contains("\"0.0.0.0\"")
            && line("host").contains("# environment RASK_WORKER_HOST")
    );
    assert!(
        line("memory-limit").contains("\"auto\"") && line("memory-limit").ends_with("# default")
    );
    assert!(line("quiet").contains("false"));
    let other = files("[wroker]\nnthreads = 3\n");
    assert!(describe(&[("worker", cmd)], &other, &env)
        .unwrap_err()
        .contains("[wroker]"));
}

#[test]
fn environment_names_are_the_table_and_key_in_capitals() {
    assert_eq!(
        env_name("worker", "memory-limit"),
        "RASK_WORKER_MEMORY_LIMIT"
    );
    assert_eq!(
        env_name("cuda-worker", "sim-gpus"),
        "RASK_CUDA_WORKER_SIM_GPUS"
    );
}
