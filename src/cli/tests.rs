//! The command-line options: parsing, giving them again, and the rules that read them.
use super::worker_args::random_unit;
use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cmd {
    #[command(flatten)]
    w: WorkerArgs,
}

fn parse(argv: &[&str]) -> Result<WorkerArgs, clap::Error> {
    Cmd::try_parse_from(std::iter::once("w").chain(argv.iter().copied())).map(|c| c.w)
}

#[test]
fn a_lifetime_is_staggered_within_its_bounds_and_never_below_a_second() {
    let s = |l, st, u| staggered_lifetime(l, st, u).map(|d| d.as_secs_f64());
    assert_eq!(s(3300.0, 240.0, 0.0), Ok(3060.0));
    assert_eq!(s(3300.0, 240.0, 0.5), Ok(3300.0));
    assert_eq!(s(3300.0, 240.0, 0.75), Ok(3420.0));
    assert_eq!(s(60.0, 0.0, 0.9), Ok(60.0));
    assert_eq!(s(2.0, 10.0, 0.0), Ok(1.0));
    assert!(s(0.0, 0.0, 0.5).unwrap_err().contains("--lifetime"));
    assert!(s(10.0, -1.0, 0.5)
        .unwrap_err()
        .contains("--lifetime-stagger"));
    let u = random_unit();
    assert!((0.0..1.0).contains(&u), "{u}");
}

#[test]
fn device_memory_limits_read_as_every_other_size() {
    use rask_worker::WorkerDevice;
    let sim = |m: Option<&str>| parse_device("sim:1", m).map_err(|e| e.to_string());
    let one_gib = rask_device::sim::DEFAULT_SIM_MEMORY;
    assert_eq!(
        sim(None),
        Ok(WorkerDevice::Sim {
            index: 1,
            memory: one_gib
        })
    );
    assert_eq!(
        sim(Some("auto")),
        Ok(WorkerDevice::Sim {
            index: 1,
            memory: one_gib
        })
    );
    assert_eq!(
        sim(Some("0.5")),
        Ok(WorkerDevice::Sim {
            index: 1,
            memory: one_gib / 2
        })
    );
    assert_eq!(
        sim(Some("2GiB")),
        Ok(WorkerDevice::Sim {
            index: 1,
            memory: 2 << 30
        })
    );
    assert!(sim(Some("0"))
        .unwrap_err()
        .contains("--device-memory-limit"));
    let cuda = |m: Option<&str>| parse_device("cuda:0", m).map_err(|e| e.to_string());
    assert_eq!(
        cuda(Some("30GiB")),
        Ok(WorkerDevice::Cuda {
            index: 0,
            memory_limit: Some(30 << 30)
        })
    );
    assert_eq!(
        cuda(None),
        Ok(WorkerDevice::Cuda {
            index: 0,
            memory_limit: None
        })
    );
    // A fraction is of the GPU's memory: without a driver, that is an error saying so,
    // never a limit of 0 bytes.
    if rask_device::cuda::device_count().is_err() {
        assert!(cuda(Some("0.8")).is_err());
    }
}

#[test]
fn nworkers_is_a_number_or_dasks_auto() {
    assert_eq!(nworkers("3", 2), Ok(3));
    assert_eq!(nworkers("auto", 1), Ok(1));
    assert_eq!(nworkers("auto", 4), Ok(4));
    // Above 4 cores: the smallest factor at least the square root.
    assert_eq!(nworkers("auto", 8), Ok(4));
    assert_eq!(nworkers("AUTO", 16), Ok(4));
    assert_eq!(nworkers("auto", 12), Ok(4));
    assert_eq!(nworkers("auto", 7), Ok(7));
    assert_eq!(nworkers("auto", 64), Ok(8));
    for bad in ["0", "-1", "two", ""] {
        assert!(
            nworkers(bad, 8).unwrap_err().contains("--nworkers"),
            "{bad}"
        );
    }
}

#[test]
fn worker_options_given_again_parse_to_the_same_options() {
    let full = [
        "tcp://10.0.0.1:8786",
        "--nworkers",
        "2",
        "--nthreads",
        "3",
        "--name",
        "w",
        "--memory-limit",
        "4GiB",
        "--resources",
        "gpu=1",
        "--host",
        "0.0.0.0",
        "--worker-port",
        "9000",
        "--contact-address",
        "203.0.113.9",
        "--death-timeout",
        "7",
        "--lifetime",
        "3300",
        "--lifetime-stagger",
        "240",
        "--auth-file",
        "/s",
        "--tls-cert",
        "/tls/w.pem",
        "--tls-key",
        "/tls/w.key",
        "--tls-ca",
        "/tls/ca.pem",
        "--tls-require-client-cert",
        "--tls-ca-only",
        "--transport",
        "tcp",
        "--device",
        "sim:1",
        "--device-memory-limit",
        "0.5",
        "--nvlink-peers",
        "0,2",
        "--connect-timeout",
        "3",
        "--peer-timeout",
        "4",
        "--log-format",
        "json",
        "--no-programs",
        "--no-dashboard",
        "--quiet",
    ];
    let a = parse(&full).unwrap();
    assert_eq!(
        a.memory_limit,
        rask_proto::units::MemoryLimit::Bytes(4 << 30)
    );
    assert_eq!(a.log_format, super::LogFormat::Json);
    assert_eq!(
        a.tls.tls_ca.as_deref(),
        Some(std::path::Path::new("/tls/ca.pem"))
    );
    assert!(a.tls.tls_require_client_cert && a.tls.tls_ca_only);
    let again = a.to_args();
    let b = parse(
        &again
            .iter()
            .map(|s| s.to_str().unwrap())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    // Defaults are not spelled out.
    let d = parse(&["tcp://h:1"]).unwrap();
    assert_eq!(d.to_args(), vec![std::ffi::OsString::from("tcp://h:1")]);
    // A scheduler file instead of an address.
    let f = parse(&["--scheduler-file", "/tmp/s.json", "--interface", "lo"]).unwrap();
    assert_eq!(f.scheduler, None);
    let again: Vec<String> = f
        .to_args()
        .iter()
        .map(|s| s.to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        again,
        ["--scheduler-file", "/tmp/s.json", "--interface", "lo"]
    );
}

#[test]
fn worker_options_that_cannot_go_together_are_refused() {
    assert!(parse(&[]).is_err());
    assert!(parse(&["tcp://h:1", "--scheduler-file", "f"]).is_err());
    assert!(parse(&["tcp://h:1", "--host", "0.0.0.0", "--interface", "lo"]).is_err());
    assert!(parse(&["tcp://h:1", "--listen", "0.0.0.0:1", "--host", "0.0.0.0"]).is_err());
    assert!(parse(&["tcp://h:1", "--memory-limit", "0"]).is_err());
    assert!(parse(&["tcp://h:1", "--memory-limit", "lots"]).is_err());
    let a = parse(&["tcp://h:1", "--memory-limit", "0.25"]).unwrap();
    assert_eq!(
        a.memory_limit,
        rask_proto::units::MemoryLimit::Fraction(0.25)
    );
}

#[test]
fn a_scheduler_file_gives_its_first_line() {
    let dir = std::env::temp_dir().join(format!("rask-sf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("scheduler");
    std::fs::write(&f, "tcp://10.0.0.1:8786\n").unwrap();
    assert_eq!(read_scheduler_file(&f).unwrap(), "tcp://10.0.0.1:8786");
    std::fs::write(&f, "\n").unwrap();
    assert!(read_scheduler_file(&f).unwrap_err().contains("empty"));
    assert!(read_scheduler_file(&dir.join("none")).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_options_come_from_the_configuration_file_as_every_other_option() {
    #[derive(Parser)]
    struct Root {
        #[command(subcommand)]
        cmd: Sub,
    }
    #[derive(clap::Subcommand)]
    enum Sub {
        Scheduler(SchedulerArgs),
    }
    let mut files = crate::config::Files::default();
    files
        .add(
            std::path::Path::new("/etc/rask/rask.toml"),
            "[scheduler]\ntls-cert = \"/tls/s.pem\"\ntls-key = \"/tls/s.key\"\ntls-ca = \"/tls/ca.pem\"\ntls-require-client-cert = true\n",
        )
        .unwrap();
    let env = |k: &str| (k == "RASK_SCHEDULER_TLS_CA").then(|| "/env/ca.pem".to_string());
    let argv = crate::config::apply(
        &<Root as clap::CommandFactory>::command(),
        &["scheduler"],
        "scheduler",
        vec!["rask".into(), "scheduler".into()],
        &files,
        &env,
    )
    .unwrap();
    let Sub::Scheduler(a) = Root::try_parse_from(argv).unwrap().cmd;
    assert_eq!(
        a.tls,
        TlsArgs {
            tls_cert: Some("/tls/s.pem".into()),
            tls_key: Some("/tls/s.key".into()),
            tls_ca: Some("/env/ca.pem".into()),
            tls_require_client_cert: true,
            tls_ca_only: false,
        }
    );
}

#[test]
fn tls_files_that_cannot_be_read_are_named_and_no_settings_mean_plaintext() {
    let only_ca = TlsArgs {
        tls_ca: Some("/nonexistent/ca.pem".into()),
        ..TlsArgs::default()
    };
    // The file is read first: its error names it.
    let e = only_ca
        .load(
            "the scheduler",
            Needs {
                serve: true,
                connect: false,
            },
        )
        .unwrap_err();
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    let none = TlsArgs::default();
    if std::env::var_os("RASK_TLS_CERT").is_none() && std::env::var_os("RASK_TLS_CA").is_none() {
        assert!(none
            .load(
                "a worker",
                Needs {
                    serve: true,
                    connect: true
                }
            )
            .unwrap()
            .is_none());
    }
}
