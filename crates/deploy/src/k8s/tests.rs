use super::*;

const GIB: u64 = 1 << 30;

/// The documents of a multi-document stream, split at its `---` lines.
fn documents(yaml: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in yaml.lines() {
        if line == "---" {
            docs.push(String::new());
        } else {
            let doc = docs.last_mut().unwrap();
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs
}

fn err_text(spec: &K8sSpec) -> String {
    spec.manifests().expect_err("must be refused").to_string()
}

#[test]
fn manifests_are_scheduler_deployment_service_and_worker_deployment() {
    let yaml = K8sSpec::new("c1", "img:1").manifests().unwrap();
    assert!(yaml.ends_with('\n'));
    assert!(!yaml.starts_with("---"));
    let docs = documents(&yaml);
    let heads: Vec<(&str, &str, &str)> = docs
        .iter()
        .map(|d| {
            let lines: Vec<&str> = d.lines().collect();
            (lines[0], lines[1], lines[3])
        })
        .collect();
    assert_eq!(
        heads,
        [
            (
                "apiVersion: \"apps/v1\"",
                "kind: \"Deployment\"",
                "  name: \"c1-scheduler\""
            ),
            (
                "apiVersion: \"v1\"",
                "kind: \"Service\"",
                "  name: \"c1-scheduler\""
            ),
            (
                "apiVersion: \"apps/v1\"",
                "kind: \"Deployment\"",
                "  name: \"c1-worker\""
            ),
        ]
    );
}

#[test]
fn scheduler_deployment_and_service_are_exact() {
    let docs = documents(&K8sSpec::new("c1", "img:1").manifests().unwrap());
    assert_eq!(
        docs[0],
        r#"apiVersion: "apps/v1"
kind: "Deployment"
metadata:
  name: "c1-scheduler"
  namespace: "default"
  labels:
    app.kubernetes.io/name: "rask"
    rask.dev/cluster: "c1"
    rask.dev/component: "scheduler"
spec:
  replicas: 1
  strategy:
    type: "Recreate"
  selector:
    matchLabels:
      app.kubernetes.io/name: "rask"
      rask.dev/cluster: "c1"
      rask.dev/component: "scheduler"
  template:
    metadata:
      labels:
        app.kubernetes.io/name: "rask"
        rask.dev/cluster: "c1"
        rask.dev/component: "scheduler"
    spec:
      enableServiceLinks: false
      containers:
        - name: "scheduler"
          image: "img:1"
          command:
            - "rask"
          args:
            - "scheduler"
            - "--host"
            - "0.0.0.0"
            - "--port"
            - "8786"
          ports:
            - name: "tcp-comm"
              containerPort: 8786
              protocol: "TCP"
            - name: "http-dashboard"
              containerPort: 8787
              protocol: "TCP"
"#
    );
    assert_eq!(
        docs[1],
        r#"apiVersion: "v1"
kind: "Service"
metadata:
  name: "c1-scheduler"
  namespace: "default"
  labels:
    app.kubernetes.io/name: "rask"
    rask.dev/cluster: "c1"
    rask.dev/component: "scheduler"
spec:
  type: "ClusterIP"
  selector:
    app.kubernetes.io/name: "rask"
    rask.dev/cluster: "c1"
    rask.dev/component: "scheduler"
  ports:
    - name: "tcp-comm"
      port: 8786
      targetPort: 8786
      protocol: "TCP"
    - name: "http-dashboard"
      port: 8787
      targetPort: 8787
      protocol: "TCP"
"#
    );
}

#[test]
fn worker_deployment_is_exact() {
    let spec = K8sSpec {
        namespace: "ml".into(),
        rask_bin: "/usr/local/bin/rask".into(),
        workers: 5,
        worker_nthreads: 4,
        worker_memory: 3 * GIB / 2,
        worker_cpu_millis: 3500,
        gpus_per_worker: 2,
        worker_port: 9000,
        worker_extra_args: vec!["--device".into(), "cuda:0".into()],
        ..K8sSpec::new("c1", "registry.example.com/rask@sha256:0123abcd")
    };
    let docs = documents(&spec.manifests().unwrap());
    assert_eq!(
        docs[2],
        r#"apiVersion: "apps/v1"
kind: "Deployment"
metadata:
  name: "c1-worker"
  namespace: "ml"
  labels:
    app.kubernetes.io/name: "rask"
    rask.dev/cluster: "c1"
    rask.dev/component: "worker"
spec:
  replicas: 5
  selector:
    matchLabels:
      app.kubernetes.io/name: "rask"
      rask.dev/cluster: "c1"
      rask.dev/component: "worker"
  template:
    metadata:
      labels:
        app.kubernetes.io/name: "rask"
        rask.dev/cluster: "c1"
        rask.dev/component: "worker"
    spec:
      enableServiceLinks: false
      containers:
        - name: "worker"
          image: "registry.example.com/rask@sha256:0123abcd"
          command:
            - "/usr/local/bin/rask"
          args:
            - "worker"
            - "tcp://c1-scheduler.ml.svc.cluster.local:8786"
            - "--name"
            - "$(RASK_WORKER_NAME)"
            - "--nthreads"
            - "4"
            - "--memory-limit"
            - "1610612736"
            - "--listen"
            - "0.0.0.0:9000"
            - "--contact-address"
            - "$(POD_IP):9000"
            - "--device"
            - "cuda:0"
          env:
            - name: "POD_IP"
              valueFrom:
                fieldRef:
                  fieldPath: "status.podIP"
            - name: "RASK_WORKER_NAME"
              valueFrom:
                fieldRef:
                  fieldPath: "metadata.name"
            - name: "RASK_SCHEDULER_ADDRESS"
              value: "tcp://c1-scheduler.ml.svc.cluster.local:8786"
          ports:
            - name: "tcp-worker"
              containerPort: 9000
              protocol: "TCP"
          resources:
            requests:
              cpu: "3500m"
              memory: "1536Mi"
            limits:
              cpu: "3500m"
              memory: "1536Mi"
              nvidia.com/gpu: "2"
"#
    );
}

#[test]
fn replicas_line_follows_workers() {
    for workers in [0, 1, 7, 1000] {
        let spec = K8sSpec {
            workers,
            ..K8sSpec::new("c1", "img:1")
        };
        let docs = documents(&spec.manifests().unwrap());
        assert!(docs[0].contains("\nspec:\n  replicas: 1\n"));
        assert!(docs[2].contains(&format!("\nspec:\n  replicas: {workers}\n")));
    }
}

#[test]
fn gpu_limit_only_when_gpus_are_asked() {
    let none = K8sSpec::new("c1", "img:1").manifests().unwrap();
    assert!(!none.contains("nvidia.com/gpu"));
    assert!(none.contains(
        "
          resources:
            requests:
              cpu: \"1\"
              memory: \"1Gi\"
            limits:
              cpu: \"1\"
              memory: \"1Gi\"
"
    ));
    let one = K8sSpec {
        gpus_per_worker: 1,
        ..K8sSpec::new("c1", "img:1")
    }
    .manifests()
    .unwrap();
    assert_eq!(one.matches("nvidia.com/gpu").count(), 1);
    assert!(one.contains(
        "
            limits:
              cpu: \"1\"
              memory: \"1Gi\"
              nvidia.com/gpu: \"1\"
"
    ));
}

#[test]
fn workers_find_the_scheduler_through_its_service() {
    let spec = K8sSpec {
        namespace: "team-a".into(),
        scheduler_port: 9786,
        dashboard_port: 9787,
        ..K8sSpec::new("big-cluster", "img:1")
    };
    assert_eq!(spec.scheduler_service(), "big-cluster-scheduler");
    assert_eq!(spec.worker_deployment(), "big-cluster-worker");
    assert_eq!(
        spec.scheduler_address(),
        "tcp://big-cluster-scheduler.team-a.svc.cluster.local:9786"
    );
    let docs = documents(&spec.manifests().unwrap());
    assert!(docs[1].contains("\n  name: \"big-cluster-scheduler\"\n  namespace: \"team-a\"\n"));
    assert!(
        docs[1].contains("    - name: \"tcp-comm\"\n      port: 9786\n      targetPort: 9786\n")
    );
    assert!(docs[1].contains("    - name: \"http-dashboard\"\n      port: 9787\n"));
    assert!(docs[0].contains("            - \"--port\"\n            - \"9786\"\n"));
    assert!(docs[2].contains(
        "            - \"worker\"\n            - \"tcp://big-cluster-scheduler.team-a.svc.cluster.local:9786\"\n"
    ));
    assert!(docs[2].contains(
        "              value: \"tcp://big-cluster-scheduler.team-a.svc.cluster.local:9786\"\n"
    ));
}

#[test]
fn selectors_match_the_pod_labels() {
    let docs = documents(&K8sSpec::new("c1", "img:1").manifests().unwrap());
    for (doc, component) in [(&docs[0], "scheduler"), (&docs[2], "worker")] {
        let labels = format!(
            "app.kubernetes.io/name: \"rask\"\n{0}rask.dev/cluster: \"c1\"\n{0}rask.dev/component: \"{component}\"\n",
            "{pad}"
        );
        let at = |pad: usize| labels.replace("{pad}", &" ".repeat(pad));
        assert!(doc.contains(&format!("  labels:\n    {}", at(4))));
        assert!(doc.contains(&format!("    matchLabels:\n      {}", at(6))));
        assert!(doc.contains(&format!("      labels:\n        {}", at(8))));
    }
    assert!(docs[1].contains(
        "  selector:\n    app.kubernetes.io/name: \"rask\"\n    rask.dev/cluster: \"c1\"\n    rask.dev/component: \"scheduler\"\n"
    ));
}

#[test]
fn secret_is_mounted_and_passed_to_scheduler_and_workers() {
    let plain = K8sSpec::new("c1", "img:1").manifests().unwrap();
    for absent in ["--auth-file", "volumes:", "volumeMounts:", "secretName"] {
        assert!(!plain.contains(absent), "{absent}");
    }
    let spec = K8sSpec {
        secret_name: Some("c1-auth.v2".into()),
        ..K8sSpec::new("c1", "img:1")
    };
    let docs = documents(&spec.manifests().unwrap());
    let mount = "
          volumeMounts:
            - name: \"auth\"
              mountPath: \"/etc/rask/auth\"
              readOnly: true
      volumes:
        - name: \"auth\"
          secret:
            secretName: \"c1-auth.v2\"
            defaultMode: 256
            items:
              - key: \"secret\"
                path: \"secret\"
";
    for doc in [&docs[0], &docs[2]] {
        assert!(doc.ends_with(mount), "{doc}");
        assert!(doc
            .contains("            - \"--auth-file\"\n            - \"/etc/rask/auth/secret\"\n"));
    }
    assert!(!docs[1].contains("auth"));
    assert_eq!(AUTH_FILE, format!("{AUTH_MOUNT_PATH}/{SECRET_KEY}"));
}

#[test]
fn awkward_arguments_are_quoted_and_escaped() {
    let spec = K8sSpec {
        worker_extra_args: vec![
            "it's \"quoted\"".into(),
            "back\\slash".into(),
            "line1\nline2\ttab".into(),
            "yes".into(),
            "0755".into(),
            "#comment".into(),
            "key: value".into(),
            "- item".into(),
            String::new(),
            "bell\u{7}".into(),
        ],
        ..K8sSpec::new("c1", "img:1")
    };
    let docs = documents(&spec.manifests().unwrap());
    assert!(docs[2].contains(
        r##"            - "$(POD_IP):8789"
            - "it's \"quoted\""
            - "back\\slash"
            - "line1\nline2\ttab"
            - "yes"
            - "0755"
            - "#comment"
            - "key: value"
            - "- item"
            - ""
            - "bell\x07"
          env:
"##
    ));
}

#[test]
fn names_must_be_dns_labels() {
    let too_long = "a".repeat(54);
    let cases = [
        ("", "must not be empty"),
        (
            "Rask",
            "a DNS-1123 label holds only lowercase letters, digits and '-'",
        ),
        (
            "my_cluster",
            "a DNS-1123 label holds only lowercase letters, digits and '-'",
        ),
        (
            "my.cluster",
            "a DNS-1123 label holds only lowercase letters, digits and '-'",
        ),
        (
            "naïve",
            "a DNS-1123 label holds only lowercase letters, digits and '-'",
        ),
        (
            "-c1",
            "a DNS-1123 label starts and ends with a letter or digit",
        ),
        (
            "c1-",
            "a DNS-1123 label starts and ends with a letter or digit",
        ),
        (too_long.as_str(), "is 54 characters long, more than 53"),
        (
            "1c",
            "must start with a letter (it names a Service, a DNS-1035 label)",
        ),
    ];
    for (name, reason) in cases {
        assert_eq!(
            err_text(&K8sSpec::new(name, "img:1")),
            format!("invalid name {name:?}: {reason}")
        );
    }
    assert!(K8sSpec::new("a".repeat(53), "img:1").manifests().is_ok());
    assert!(K8sSpec::new("c-1-x", "img:1").manifests().is_ok());
}

#[test]
fn other_fields_are_validated() {
    let base = K8sSpec::new("c1", "img:1");
    let cases: Vec<(K8sSpec, &str)> = vec![
        (
            K8sSpec {
                namespace: "Prod".into(),
                ..base.clone()
            },
            "invalid namespace \"Prod\": a DNS-1123 label holds only lowercase letters, digits and '-'",
        ),
        (
            K8sSpec {
                namespace: "n".repeat(64),
                ..base.clone()
            },
            "is 64 characters long, more than 63",
        ),
        (
            K8sSpec {
                image: String::new(),
                ..base.clone()
            },
            "invalid image \"\": must not be empty",
        ),
        (
            K8sSpec {
                image: "img:1 --privileged".into(),
                ..base.clone()
            },
            "invalid image \"img:1 --privileged\": an image reference holds no spaces or control characters",
        ),
        (
            K8sSpec {
                rask_bin: String::new(),
                ..base.clone()
            },
            "invalid rask_bin \"\": must not be empty",
        ),
        (
            K8sSpec {
                worker_port: 0,
                ..base.clone()
            },
            "invalid worker_port \"0\": must be a port from 1 to 65535",
        ),
        (
            K8sSpec {
                dashboard_port: 8786,
                ..base.clone()
            },
            "invalid dashboard_port \"8786\": is also the scheduler_port",
        ),
        (
            K8sSpec {
                worker_nthreads: 0,
                ..base.clone()
            },
            "invalid worker_nthreads \"0\": must be more than zero",
        ),
        (
            K8sSpec {
                worker_memory: 0,
                ..base.clone()
            },
            "invalid worker_memory \"0\": must be more than zero",
        ),
        (
            K8sSpec {
                worker_cpu_millis: 0,
                ..base.clone()
            },
            "invalid worker_cpu_millis \"0\": must be more than zero",
        ),
        (
            K8sSpec {
                secret_name: Some("Auth".into()),
                ..base.clone()
            },
            "invalid secret_name \"Auth\": a DNS-1123 label holds only lowercase letters, digits and '-' (in each dot-separated part of a DNS-1123 subdomain)",
        ),
        (
            K8sSpec {
                secret_name: Some("a..b".into()),
                ..base.clone()
            },
            "invalid secret_name \"a..b\": must not be empty (in each dot-separated part of a DNS-1123 subdomain)",
        ),
        (
            K8sSpec {
                secret_name: Some("s".repeat(254)),
                ..base.clone()
            },
            "is 254 characters long, more than 253",
        ),
    ];
    for (spec, message) in cases {
        let got = err_text(&spec);
        assert!(got.ends_with(message), "{got}");
        assert_eq!(spec.validate().unwrap_err().to_string(), got);
    }
    assert_eq!(base.validate(), Ok(()));
    // 253 characters exactly is a valid name.
    let longest = [
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61),
    ]
    .join(".");
    assert_eq!(longest.len(), 253);
    let spec = K8sSpec {
        secret_name: Some(longest),
        ..base.clone()
    };
    assert_eq!(spec.validate(), Ok(()));
}

#[test]
fn quantities_are_kubernetes_units() {
    assert_eq!(memory_quantity(4 * GIB), "4Gi");
    assert_eq!(memory_quantity(3 * GIB / 2), "1536Mi");
    assert_eq!(memory_quantity(GIB + 1), "1048577Ki");
    assert_eq!(memory_quantity(1000), "1Ki");
    assert_eq!(memory_quantity(1 << 20), "1Mi");
    assert_eq!(memory_quantity(2 << 40), "2Ti");
    assert_eq!(memory_quantity(0), "0");
    assert_eq!(cpu_quantity(1000), "1");
    assert_eq!(cpu_quantity(16_000), "16");
    assert_eq!(cpu_quantity(2500), "2500m");
    assert_eq!(cpu_quantity(100), "100m");
}
