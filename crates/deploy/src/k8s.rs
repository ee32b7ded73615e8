//! Kubernetes manifests of a static Rask cluster: a scheduler Deployment (one replica)
//! and its Service `<name>-scheduler`, and a worker Deployment of `workers` replicas
//! whose workers join `tcp://<name>-scheduler.<namespace>.svc.cluster.local:8786`.
//!
//! The YAML is written by hand: every string is double-quoted and escaped (so `yes`,
//! `0755` or `a: b` stay strings, and any argument reads back unchanged), integers the
//! schema wants as integers (`replicas`, `containerPort`) are bare, and resource
//! quantities are strings (`"4Gi"`, `"1500m"`). Check the result offline with
//! `crates/deploy/validate-k8s.sh`, or apply it with `kubectl apply -f`.
//!
//! Each worker listens on a fixed port ([`K8sSpec::worker_port`]) of its pod and
//! advertises `$(POD_IP):port` to the scheduler; the pod IP and the pod name (the
//! worker's name) come from the downward API. With a [`K8sSpec::secret_name`], the
//! Kubernetes Secret's key `secret` is mounted at [`AUTH_FILE`] in the scheduler and
//! worker pods and passed with `--auth-file`.
//!
//! Kubernetes expands `$(VAR)` in container arguments when `VAR` is one of the
//! container's environment variables (`POD_IP`, `RASK_WORKER_NAME`,
//! `RASK_SCHEDULER_ADDRESS` here); write `$$(` for a literal `$(` in an extra argument.
//!
//! ```
//! use rask_deploy::k8s::K8sSpec;
//!
//! let mut spec = K8sSpec::new("demo", "registry.example.com/rask:0.1.0");
//! spec.workers = 4;
//! let yaml = spec.manifests().unwrap();
//! assert_eq!(yaml.split("\n---\n").count(), 3);
//! assert!(yaml.contains("\n  replicas: 4\n"));
//! assert!(yaml.contains("\n            - \"tcp://demo-scheduler.default.svc.cluster.local:8786\"\n"));
//! ```

use crate::yaml::{self, map, s, seq, Yaml};
use crate::DeployError;

/// The scheduler's port for workers and clients unless the spec says otherwise.
pub const DEFAULT_SCHEDULER_PORT: u16 = 8786;
/// The scheduler's dashboard port unless the spec says otherwise.
pub const DEFAULT_DASHBOARD_PORT: u16 = 8787;
/// The port each worker listens on in its pod unless the spec says otherwise.
pub const DEFAULT_WORKER_PORT: u16 = 8789;
/// The key of the cluster's shared secret in the Kubernetes Secret.
pub const SECRET_KEY: &str = "secret";
/// Where the Secret is mounted in the scheduler and worker pods.
pub const AUTH_MOUNT_PATH: &str = "/etc/rask/auth";
/// The shared secret's file in the pods, given to `--auth-file`.
pub const AUTH_FILE: &str = "/etc/rask/auth/secret";

/// Longest cluster name: `<name>-scheduler` must stay a 63-character DNS label.
const MAX_NAME: usize = 63 - "-scheduler".len();

/// A static Rask cluster on Kubernetes. Build one with [`K8sSpec::new`] and render it
/// with [`K8sSpec::manifests`]; values are validated when rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct K8sSpec {
    /// The cluster's name, prefix of its objects' names (`<name>-scheduler`,
    /// `<name>-worker`) and value of the `rask.dev/cluster` label: a DNS-1123 label
    /// that starts with a letter (it names a Service), at most 53 characters.
    pub name: String,
    /// The namespace of every object, a DNS-1123 label. Default `default`.
    pub namespace: String,
    /// The container image of the scheduler and the workers; it must hold `rask_bin`.
    pub image: String,
    /// The `rask` program in the image. Default `rask`.
    pub rask_bin: String,
    /// The scheduler's port for workers and clients (Service port `tcp-comm`).
    pub scheduler_port: u16,
    /// The scheduler's dashboard port (Service port `http-dashboard`).
    pub dashboard_port: u16,
    /// The port each worker listens on in its pod (container port `tcp-worker`).
    pub worker_port: u16,
    /// Worker pods (the worker Deployment's replicas); 0 is allowed.
    pub workers: u32,
    /// Tasks each worker runs at once (`--nthreads`). Default 1.
    pub worker_nthreads: u32,
    /// Each worker's memory in bytes: its `--memory-limit` and its container's memory
    /// request and limit. Default 1 GiB.
    pub worker_memory: u64,
    /// Each worker container's CPU request and limit in millicores (1000 = one core);
    /// usually `worker_nthreads * 1000`. Default 1000.
    pub worker_cpu_millis: u32,
    /// GPUs of each worker pod (an `nvidia.com/gpu` limit); 0, the default, asks for
    /// none. The worker's own GPU options go in `worker_extra_args`.
    pub gpus_per_worker: u32,
    /// A Kubernetes Secret holding the cluster's shared secret under the key
    /// [`SECRET_KEY`], for `--auth-file`; `None` runs without authentication.
    pub secret_name: Option<String>,
    /// More `rask worker` arguments, each one list item.
    pub worker_extra_args: Vec<String>,
}

impl Default for K8sSpec {
    fn default() -> K8sSpec {
        K8sSpec {
            name: String::new(),
            namespace: "default".into(),
            image: String::new(),
            rask_bin: "rask".into(),
            scheduler_port: DEFAULT_SCHEDULER_PORT,
            dashboard_port: DEFAULT_DASHBOARD_PORT,
            worker_port: DEFAULT_WORKER_PORT,
            workers: 1,
            worker_nthreads: 1,
            worker_memory: 1 << 30,
            worker_cpu_millis: 1000,
            gpus_per_worker: 0,
            secret_name: None,
            worker_extra_args: Vec::new(),
        }
    }
}

/// `bytes` as a Kubernetes memory quantity, rounded up to whole KiB and written in the
/// largest binary suffix that represents it exactly: 4 GiB → `4Gi`, 1.5 GiB → `1536Mi`,
/// 1000 bytes → `1Ki`.
pub fn memory_quantity(bytes: u64) -> String {
    let kib = bytes.div_ceil(1024);
    if kib == 0 {
        "0".into()
    } else if kib.is_multiple_of(1 << 30) {
        format!("{}Ti", kib >> 30)
    } else if kib.is_multiple_of(1 << 20) {
        format!("{}Gi", kib >> 20)
    } else if kib.is_multiple_of(1 << 10) {
        format!("{}Mi", kib >> 10)
    } else {
        format!("{kib}Ki")
    }
}

/// `millis` millicores as a Kubernetes CPU quantity: whole cores bare (`2`), else in
/// millicores (`1500m`).
pub fn cpu_quantity(millis: u32) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// Checks a DNS-1123 label: lowercase letters, digits and `-`, starting and ending with
/// a letter or digit, at most `max` characters.
fn dns_label(field: &'static str, value: &str, max: usize) -> Result<(), DeployError> {
    let bad = |reason: String| Err(DeployError::invalid(field, value, reason));
    if value.is_empty() {
        return bad("must not be empty".into());
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("a DNS-1123 label holds only lowercase letters, digits and '-'".into());
    }
    if value.starts_with('-') || value.ends_with('-') {
        return bad("a DNS-1123 label starts and ends with a letter or digit".into());
    }
    if value.len() > max {
        return bad(format!(
            "is {} characters long, more than {max}",
            value.len()
        ));
    }
    Ok(())
}

/// Checks a DNS-1123 subdomain (the names of Secrets): dot-separated labels, at most
/// 253 characters.
fn dns_subdomain(field: &'static str, value: &str) -> Result<(), DeployError> {
    if value.len() > 253 {
        return Err(DeployError::invalid(
            field,
            value,
            format!("is {} characters long, more than 253", value.len()),
        ));
    }
    for part in value.split('.') {
        dns_label(field, part, 63).map_err(|e| match e {
            DeployError::Invalid { reason, .. } => DeployError::invalid(
                field,
                value,
                format!("{reason} (in each dot-separated part of a DNS-1123 subdomain)"),
            ),
            other => other,
        })?;
    }
    Ok(())
}

/// A TCP container or Service port.
fn port(name: &str, number: u16, key: &'static str) -> Yaml {
    map([
        ("name", s(name)),
        (key, Yaml::Int(number.into())),
        ("protocol", s("TCP")),
    ])
}

/// A pod environment variable from the downward API.
fn field_env(name: &str, field_path: &str) -> Yaml {
    map([
        ("name", s(name)),
        (
            "valueFrom",
            map([("fieldRef", map([("fieldPath", s(field_path))]))]),
        ),
    ])
}

impl K8sSpec {
    /// A cluster `name` running `image`, with every other field at its default.
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> K8sSpec {
        K8sSpec {
            name: name.into(),
            image: image.into(),
            ..K8sSpec::default()
        }
    }

    /// Checks every field; [`K8sSpec::manifests`] does it too.
    pub fn validate(&self) -> Result<(), DeployError> {
        dns_label("name", &self.name, MAX_NAME)?;
        if !self.name.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(DeployError::invalid(
                "name",
                &self.name,
                "must start with a letter (it names a Service, a DNS-1035 label)",
            ));
        }
        dns_label("namespace", &self.namespace, 63)?;
        if self.image.is_empty() {
            return Err(DeployError::invalid(
                "image",
                &self.image,
                "must not be empty",
            ));
        }
        if self
            .image
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(DeployError::invalid(
                "image",
                &self.image,
                "an image reference holds no spaces or control characters",
            ));
        }
        if self.rask_bin.is_empty() {
            return Err(DeployError::invalid(
                "rask_bin",
                &self.rask_bin,
                "must not be empty",
            ));
        }
        for (field, p) in [
            ("scheduler_port", self.scheduler_port),
            ("dashboard_port", self.dashboard_port),
            ("worker_port", self.worker_port),
        ] {
            if p == 0 {
                return Err(DeployError::invalid(
                    field,
                    p,
                    "must be a port from 1 to 65535",
                ));
            }
        }
        if self.dashboard_port == self.scheduler_port {
            return Err(DeployError::invalid(
                "dashboard_port",
                self.dashboard_port,
                "is also the scheduler_port",
            ));
        }
        for (field, v) in [
            ("worker_nthreads", u64::from(self.worker_nthreads)),
            ("worker_memory", self.worker_memory),
            ("worker_cpu_millis", u64::from(self.worker_cpu_millis)),
        ] {
            if v == 0 {
                return Err(DeployError::invalid(field, v, "must be more than zero"));
            }
        }
        if let Some(secret) = &self.secret_name {
            dns_subdomain("secret_name", secret)?;
        }
        Ok(())
    }

    /// The scheduler's Service: `<name>-scheduler`.
    pub fn scheduler_service(&self) -> String {
        format!("{}-scheduler", self.name)
    }

    /// The worker Deployment: `<name>-worker`.
    pub fn worker_deployment(&self) -> String {
        format!("{}-worker", self.name)
    }

    /// The scheduler's address inside the cluster:
    /// `tcp://<name>-scheduler.<namespace>.svc.cluster.local:<scheduler_port>`.
    pub fn scheduler_address(&self) -> String {
        format!(
            "tcp://{}.{}.svc.cluster.local:{}",
            self.scheduler_service(),
            self.namespace,
            self.scheduler_port
        )
    }

    /// The labels of the objects of `component` (`scheduler` or `worker`), also their
    /// selectors.
    fn labels(&self, component: &str) -> Yaml {
        map([
            ("app.kubernetes.io/name", s("rask")),
            ("rask.dev/cluster", s(&self.name)),
            ("rask.dev/component", s(component)),
        ])
    }

    fn metadata(&self, name: String, component: &str) -> Yaml {
        map([
            ("name", s(name)),
            ("namespace", s(&self.namespace)),
            ("labels", self.labels(component)),
        ])
    }

    /// `--auth-file` arguments, the volume mount and the volume, when there is a secret.
    fn auth(&self) -> (Vec<Yaml>, Option<Yaml>, Option<Yaml>) {
        match &self.secret_name {
            None => (Vec::new(), None, None),
            Some(secret) => (
                vec![s("--auth-file"), s(AUTH_FILE)],
                Some(seq([map([
                    ("name", s("auth")),
                    ("mountPath", s(AUTH_MOUNT_PATH)),
                    ("readOnly", Yaml::Bool(true)),
                ])])),
                Some(seq([map([
                    ("name", s("auth")),
                    (
                        "secret",
                        map([
                            ("secretName", s(secret)),
                            // 0400: the secret is for the container's user alone.
                            ("defaultMode", Yaml::Int(0o400)),
                            (
                                "items",
                                seq([map([("key", s(SECRET_KEY)), ("path", s(SECRET_KEY))])]),
                            ),
                        ]),
                    ),
                ])])),
            ),
        }
    }

    /// A Deployment of `replicas` pods of `container`, labelled as `component`.
    fn deployment(
        &self,
        name: String,
        component: &str,
        replicas: u32,
        strategy: Option<&str>,
        container: Yaml,
        volumes: Option<Yaml>,
    ) -> Yaml {
        let mut pod = vec![
            // Service links would put `<NAME>_SCHEDULER_PORT=tcp://…`-style variables
            // in every pod's environment; nothing here reads them.
            ("enableServiceLinks", Yaml::Bool(false)),
            ("containers", seq([container])),
        ];
        if let Some(volumes) = volumes {
            pod.push(("volumes", volumes));
        }
        let mut spec = vec![("replicas", Yaml::Int(replicas.into()))];
        if let Some(strategy) = strategy {
            spec.push(("strategy", map([("type", s(strategy))])));
        }
        spec.extend([
            ("selector", map([("matchLabels", self.labels(component))])),
            (
                "template",
                map([
                    ("metadata", map([("labels", self.labels(component))])),
                    ("spec", Yaml::Map(pod)),
                ]),
            ),
        ]);
        map([
            ("apiVersion", s("apps/v1")),
            ("kind", s("Deployment")),
            ("metadata", self.metadata(name, component)),
            ("spec", Yaml::Map(spec)),
        ])
    }

    fn scheduler_deployment(&self) -> Yaml {
        let (auth_args, mounts, volumes) = self.auth();
        let mut args = vec![
            s("scheduler"),
            s("--host"),
            s("0.0.0.0"),
            s("--port"),
            s(self.scheduler_port.to_string()),
        ];
        args.extend(auth_args);
        let mut container = vec![
            ("name", s("scheduler")),
            ("image", s(&self.image)),
            ("command", seq([s(&self.rask_bin)])),
            ("args", Yaml::Seq(args)),
            (
                "ports",
                seq([
                    port("tcp-comm", self.scheduler_port, "containerPort"),
                    port("http-dashboard", self.dashboard_port, "containerPort"),
                ]),
            ),
        ];
        if let Some(mounts) = mounts {
            container.push(("volumeMounts", mounts));
        }
        // One scheduler at a time: a rolling update would briefly run two.
        self.deployment(
            format!("{}-scheduler", self.name),
            "scheduler",
            1,
            Some("Recreate"),
            Yaml::Map(container),
            volumes,
        )
    }

    fn scheduler_service_doc(&self) -> Yaml {
        map([
            ("apiVersion", s("v1")),
            ("kind", s("Service")),
            (
                "metadata",
                self.metadata(self.scheduler_service(), "scheduler"),
            ),
            (
                "spec",
                map([
                    ("type", s("ClusterIP")),
                    ("selector", self.labels("scheduler")),
                    (
                        "ports",
                        seq([
                            map([
                                ("name", s("tcp-comm")),
                                ("port", Yaml::Int(self.scheduler_port.into())),
                                ("targetPort", Yaml::Int(self.scheduler_port.into())),
                                ("protocol", s("TCP")),
                            ]),
                            map([
                                ("name", s("http-dashboard")),
                                ("port", Yaml::Int(self.dashboard_port.into())),
                                ("targetPort", Yaml::Int(self.dashboard_port.into())),
                                ("protocol", s("TCP")),
                            ]),
                        ]),
                    ),
                ]),
            ),
        ])
    }

    fn worker_deployment_doc(&self) -> Yaml {
        let (auth_args, mounts, volumes) = self.auth();
        let mut args = vec![
            s("worker"),
            s(self.scheduler_address()),
            s("--name"),
            s("$(RASK_WORKER_NAME)"),
            s("--nthreads"),
            s(self.worker_nthreads.to_string()),
            s("--memory-limit"),
            s(self.worker_memory.to_string()),
            s("--listen"),
            s(format!("0.0.0.0:{}", self.worker_port)),
            s("--contact-address"),
            s(format!("$(POD_IP):{}", self.worker_port)),
        ];
        args.extend(auth_args);
        args.extend(self.worker_extra_args.iter().map(s));
        let amounts = || {
            vec![
                ("cpu", s(cpu_quantity(self.worker_cpu_millis))),
                ("memory", s(memory_quantity(self.worker_memory))),
            ]
        };
        let mut limits = amounts();
        if self.gpus_per_worker > 0 {
            limits.push(("nvidia.com/gpu", s(self.gpus_per_worker.to_string())));
        }
        let mut container = vec![
            ("name", s("worker")),
            ("image", s(&self.image)),
            ("command", seq([s(&self.rask_bin)])),
            ("args", Yaml::Seq(args)),
            (
                "env",
                seq([
                    field_env("POD_IP", "status.podIP"),
                    field_env("RASK_WORKER_NAME", "metadata.name"),
                    map([
                        ("name", s("RASK_SCHEDULER_ADDRESS")),
                        ("value", s(self.scheduler_address())),
                    ]),
                ]),
            ),
            (
                "ports",
                seq([port("tcp-worker", self.worker_port, "containerPort")]),
            ),
            (
                "resources",
                map([
                    ("requests", Yaml::Map(amounts())),
                    ("limits", Yaml::Map(limits)),
                ]),
            ),
        ];
        if let Some(mounts) = mounts {
            container.push(("volumeMounts", mounts));
        }
        self.deployment(
            self.worker_deployment(),
            "worker",
            self.workers,
            None,
            Yaml::Map(container),
            volumes,
        )
    }

    /// The cluster's manifests as one multi-document YAML stream, documents separated by
    /// `---` lines: the scheduler Deployment, its Service and the worker Deployment.
    pub fn manifests(&self) -> Result<String, DeployError> {
        self.validate()?;
        let docs = [
            self.scheduler_deployment(),
            self.scheduler_service_doc(),
            self.worker_deployment_doc(),
        ];
        Ok(docs
            .iter()
            .map(yaml::document)
            .collect::<Vec<_>>()
            .join("---\n"))
    }
}

#[cfg(test)]
mod tests;
