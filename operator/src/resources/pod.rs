//! The gateway pod: one per node, node id = pod name. The pod template is derived from the
//! fleet spec; its hash (together with the gateway config) is the revision, so any change that
//! needs new processes shows up as pods of an old revision.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, Pod, PodSecurityContext, PodSpec,
    Probe, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext,
    TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::{
    CONFIG_KEY, CONFIG_PATH, DRAIN_TOKEN_DIR, JWT_DIR, JWT_FILE, PUBLISH_TOKEN_DIR, REDIS_CA_DIR,
    REDIS_CA_FILE, REDIS_CLIENT_DIR, gateway_toml,
};
use super::secret::{ACCEPTED_KEY, TOKEN_KEY};
use super::sysctl::{KubeVersion, plan};
use super::{
    ADMIN_PORT, API_PORT, REVISION_LABEL, WS_PORT, common_labels, config_map_name,
    drain_secret_name, headless_service_name, owned_meta, publish_secret_name, selector_labels,
    short_hash,
};
use crate::crd::WebSocketFleet;

/// Name of the gateway container.
pub const GATEWAY_CONTAINER: &str = "gateway";
/// Name of the pod volume carrying the gateway config.
pub const CONFIG_VOLUME: &str = "config";
/// Name of the scratch volume mounted at /tmp.
const TMP_VOLUME: &str = "tmp";
/// Seconds past the drain timeout before the kubelet kills a draining gateway, so the process
/// can finish its own drain and exit cleanly.
const GRACE_MARGIN_SECONDS: i64 = 15;
/// User id the gateway runs as (the distroless "nonroot" user).
const GATEWAY_UID: i64 = 65532;

/// The pod spec every node of the current revision runs, that revision, and the ConfigMap the
/// spec mounts.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayTemplate {
    pub spec: PodSpec,
    pub revision: String,
    pub config_map: String,
}

/// The template for `fleet` on a cluster of version `server`.
pub fn template(fleet: &WebSocketFleet, server: KubeVersion) -> GatewayTemplate {
    let config_map = config_map_name(fleet, &gateway_toml(fleet));
    let spec = pod_spec(fleet, server, &config_map);
    // The ConfigMap name is a hash of the config, so hashing the spec covers both. Serializing
    // a PodSpec cannot fail (string keys only).
    let revision = short_hash(&[&serde_json::to_vec(&spec).unwrap_or_default()]);
    GatewayTemplate {
        spec,
        revision,
        config_map,
    }
}

/// The labels of a gateway pod of `revision`.
pub fn pod_labels(fleet: &WebSocketFleet, revision: &str) -> BTreeMap<String, String> {
    let mut labels = common_labels(fleet);
    labels.insert(REVISION_LABEL.to_string(), revision.to_string());
    labels
}

/// The gateway pod called `name` from `template`.
pub fn pod(fleet: &WebSocketFleet, template: &GatewayTemplate, name: &str) -> Pod {
    let mut metadata = owned_meta(fleet, name.to_string());
    metadata.labels = Some(pod_labels(fleet, &template.revision));
    let mut spec = template.spec.clone();
    // With the headless Service as subdomain, a set hostname gives the node the DNS name
    // <pod>.<fleet>-nodes.<ns>.svc. A hostname is one DNS label: at most 63 characters, no
    // dots (fleet names are checked to keep generated names within that).
    if name.len() <= 63 && !name.contains('.') {
        spec.hostname = Some(name.to_string());
    }
    Pod {
        metadata,
        spec: Some(spec),
        ..Pod::default()
    }
}

fn pod_spec(fleet: &WebSocketFleet, server: KubeVersion, config_map: &str) -> PodSpec {
    let spec = &fleet.spec;
    let sysctls = plan(&spec.sysctls, server);
    PodSpec {
        containers: vec![gateway_container(fleet)],
        init_containers: sysctls.init_container.map(|c| vec![c]),
        security_context: Some(PodSecurityContext {
            seccomp_profile: Some(runtime_default_seccomp()),
            sysctls: (!sysctls.pod_sysctls.is_empty()).then_some(sysctls.pod_sysctls),
            ..PodSecurityContext::default()
        }),
        volumes: Some(volumes(fleet, config_map)),
        termination_grace_period_seconds: Some(
            i64::from(spec.drain.timeout_seconds) + GRACE_MARGIN_SECONDS,
        ),
        subdomain: Some(headless_service_name(fleet)),
        node_selector: spec.node_selector.clone(),
        tolerations: spec.tolerations.clone(),
        affinity: spec.affinity.clone(),
        priority_class_name: spec.priority_class_name.clone(),
        topology_spread_constraints: Some(
            spec.topology_spread_constraints
                .clone()
                .unwrap_or_else(|| default_spread(fleet)),
        ),
        // The gateway never talks to the Kubernetes API, and service env vars would grow with
        // every Service in the namespace.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        ..PodSpec::default()
    }
}

/// Spread across machines so losing one cuts a bounded share of connections; "ScheduleAnyway"
/// so a small cluster can still run the fleet.
fn default_spread(fleet: &WebSocketFleet) -> Vec<TopologySpreadConstraint> {
    vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: "kubernetes.io/hostname".into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(fleet)),
            ..LabelSelector::default()
        }),
        ..TopologySpreadConstraint::default()
    }]
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}

fn gateway_container(fleet: &WebSocketFleet) -> Container {
    Container {
        name: GATEWAY_CONTAINER.into(),
        image: Some(fleet.spec.image.clone()),
        ports: Some(vec![
            container_port("ws", WS_PORT),
            container_port("admin", ADMIN_PORT),
            container_port("api", API_PORT),
        ]),
        env: Some(env(fleet)),
        resources: fleet.spec.resources.clone(),
        readiness_probe: Some(http_probe("/readyz", 5, 2)),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(GATEWAY_UID),
            run_as_group: Some(GATEWAY_UID),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(volume_mounts(fleet)),
        ..Container::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(ADMIN_PORT),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn env(fleet: &WebSocketFleet) -> Vec<EnvVar> {
    let mut env = vec![
        EnvVar {
            name: "NODE_ID".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        EnvVar {
            name: "WSFLEET_CONFIG".into(),
            value: Some(CONFIG_PATH.into()),
            ..EnvVar::default()
        },
    ];
    if let Some(redis) = fleet.spec.backplane.as_ref().map(|b| &b.redis) {
        match (&redis.url, &redis.secret_ref) {
            (_, Some(secret)) => env.push(secret_env(
                "WSFLEET_REDIS_URL",
                secret.name.clone(),
                &secret.key,
            )),
            (Some(url), None) => env.push(EnvVar {
                name: "WSFLEET_REDIS_URL".into(),
                value: Some(url.clone()),
                ..EnvVar::default()
            }),
            (None, None) => {}
        }
    }
    env
}

fn secret_env(name: &str, secret: String, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret,
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn volumes(fleet: &WebSocketFleet, config_map: &str) -> Vec<Volume> {
    let mut volumes = vec![
        Volume {
            name: CONFIG_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map.to_string(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        // The root filesystem is read-only; a small scratch /tmp keeps libraries that expect one
        // working.
        Volume {
            name: TMP_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("64Mi".into())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    for mount in secret_volumes(fleet) {
        let items = mount
            .files
            .into_iter()
            .map(|(key, file)| KeyToPath {
                key,
                path: file.into(),
                ..KeyToPath::default()
            })
            .collect();
        volumes.push(Volume {
            name: mount.volume.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(mount.secret),
                items: Some(items),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    volumes
}

/// A Secret a gateway pod mounts: its keys as files in a directory.
struct SecretMount {
    volume: &'static str,
    dir: &'static str,
    secret: String,
    /// Secret key → file name in `dir`.
    files: Vec<(String, &'static str)>,
}

impl SecretMount {
    fn new(volume: &'static str, dir: &'static str, secret: String) -> SecretMount {
        SecretMount {
            volume,
            dir,
            secret,
            files: Vec::new(),
        }
    }

    fn file(mut self, key: &str, file: &'static str) -> SecretMount {
        self.files.push((key.to_string(), file));
        self
    }
}

/// The Secrets a gateway pod mounts. Whole directories (no `subPath`), so a changed Secret
/// reaches the running node, which re-reads these files: rotating a token or a JWT key set
/// restarts nothing. Their content is not part of the revision.
fn secret_volumes(fleet: &WebSocketFleet) -> Vec<SecretMount> {
    let mut mounts = vec![
        SecretMount::new("drain-token", DRAIN_TOKEN_DIR, drain_secret_name(fleet))
            .file(TOKEN_KEY, TOKEN_KEY),
        SecretMount::new(
            "publish-token",
            PUBLISH_TOKEN_DIR,
            publish_secret_name(fleet),
        )
        .file(ACCEPTED_KEY, ACCEPTED_KEY),
    ];
    if let Some(jwt) = &fleet.spec.auth.jwt {
        let key = &jwt.key_secret_ref;
        mounts.push(SecretMount::new("jwt", JWT_DIR, key.name.clone()).file(&key.key, JWT_FILE));
    }
    let tls = fleet
        .spec
        .backplane
        .as_ref()
        .and_then(|b| b.redis.tls.as_ref());
    if let Some(ca) = tls.and_then(|t| t.ca_secret_ref.as_ref()) {
        mounts.push(
            SecretMount::new("redis-ca", REDIS_CA_DIR, ca.name.clone())
                .file(&ca.key, REDIS_CA_FILE),
        );
    }
    if let Some(client) = tls.and_then(|t| t.client_certificate_secret_ref.as_ref()) {
        mounts.push(
            SecretMount::new("redis-client", REDIS_CLIENT_DIR, client.name.clone())
                .file("tls.crt", "tls.crt")
                .file("tls.key", "tls.key"),
        );
    }
    mounts
}

fn volume_mounts(fleet: &WebSocketFleet) -> Vec<VolumeMount> {
    // subPath: the file sits beside the jwt directory. Its content is part of the revision, so
    // a config change rolls new pods rather than relying on live ConfigMap updates.
    let mut mounts = vec![
        VolumeMount {
            name: CONFIG_VOLUME.into(),
            mount_path: CONFIG_PATH.into(),
            sub_path: Some(CONFIG_KEY.into()),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: TMP_VOLUME.into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        },
    ];
    for mount in secret_volumes(fleet) {
        mounts.push(VolumeMount {
            name: mount.volume.into(),
            mount_path: mount.dir.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    mounts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::testing;

    const V1_32: KubeVersion = KubeVersion {
        major: 1,
        minor: 32,
    };

    fn gateway(pod: &Pod) -> Container {
        pod.spec.as_ref().expect("spec").containers[0].clone()
    }

    fn env_var(container: &Container, name: &str) -> EnvVar {
        container
            .env
            .as_ref()
            .and_then(|env| env.iter().find(|e| e.name == name))
            .cloned()
            .unwrap_or_else(|| panic!("env {name} missing"))
    }

    fn production() -> WebSocketFleet {
        testing::fleet(serde_json::json!({
            "image": "gw:2",
            "backplane": {"redis": {"secretRef": {"name": "redis", "key": "url"}}},
            "drain": {"reconnectWindowSeconds": 60, "timeoutSeconds": 300},
            "sysctls": {"mode": "InitContainer"},
            "auth": {"jwt": {"algorithm": "RS256", "keySecretRef": {"name": "jwt", "key": "pub.pem"}}}
        }))
    }

    #[test]
    fn pod_is_named_labelled_and_owned() {
        let fleet = testing::minimal();
        let template = template(&fleet, V1_32);
        let pod = pod(&fleet, &template, "chat-abc-xyz12");
        assert_eq!(pod.metadata.name.as_deref(), Some("chat-abc-xyz12"));
        let labels = pod.metadata.labels.expect("labels");
        assert_eq!(labels[REVISION_LABEL], template.revision);
        assert_eq!(labels["wsfleet.io/fleet"], "chat");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "wsfleet-operator");
        let owner = &pod.metadata.owner_references.expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("WebSocketFleet", Some(true))
        );
    }

    #[test]
    fn gateway_container_is_locked_down() {
        let fleet = testing::minimal();
        let pod = pod(&fleet, &template(&fleet, V1_32), "n");
        let sc = gateway(&pod).security_context.expect("security context");
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.privileged, Some(false));
        assert_eq!(
            sc.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_string()])
        );
        assert_eq!(
            sc.seccomp_profile.map(|p| p.type_).as_deref(),
            Some("RuntimeDefault")
        );
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert!(
            spec.init_containers.is_none(),
            "SafeOnly has no init container"
        );
    }

    #[test]
    fn ports_probes_and_node_id() {
        let fleet = testing::minimal();
        let container = gateway(&pod(&fleet, &template(&fleet, V1_32), "n"));
        let ports: Vec<(String, i32)> = container
            .ports
            .clone()
            .expect("ports")
            .into_iter()
            .map(|p| (p.name.unwrap_or_default(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            [
                ("ws".into(), 8080),
                ("admin".into(), 9090),
                ("api".into(), 9091)
            ]
        );
        let probe_path = |p: Option<Probe>| {
            let get = p.and_then(|p| p.http_get).expect("http probe");
            (get.path.unwrap_or_default(), get.port)
        };
        assert_eq!(
            probe_path(container.readiness_probe.clone()),
            ("/readyz".into(), IntOrString::Int(9090))
        );
        assert_eq!(
            probe_path(container.liveness_probe.clone()),
            ("/healthz".into(), IntOrString::Int(9090))
        );
        let node_id = env_var(&container, "NODE_ID");
        assert_eq!(
            node_id
                .value_from
                .and_then(|v| v.field_ref)
                .map(|f| f.field_path)
                .as_deref(),
            Some("metadata.name")
        );
        assert_eq!(
            env_var(&container, "WSFLEET_CONFIG").value.as_deref(),
            Some("/etc/wsfleet/gateway.toml")
        );
        assert!(
            container
                .env
                .iter()
                .flatten()
                .all(|e| !e.name.contains("TOKEN")),
            "tokens are mounted files (re-read), not env (fixed for the process's life)"
        );
        let mounts = container.volume_mounts.expect("mounts");
        assert_eq!(mounts[0].mount_path, "/etc/wsfleet/gateway.toml");
        assert_eq!(mounts[0].sub_path.as_deref(), Some("gateway.toml"));
        assert!(
            mounts.iter().any(|m| m.mount_path == "/tmp"),
            "writable /tmp under a read-only root"
        );
    }

    /// (volume, its Secret, key → file) of a Secret a pod mounts.
    type Mounted = (String, String, Vec<(String, String)>);

    fn secret_mounts(fleet: &WebSocketFleet) -> Vec<Mounted> {
        let pod = pod(fleet, &template(fleet, V1_32), "n");
        let container = gateway(&pod);
        let spec = pod.spec.expect("spec");
        let mut found = Vec::new();
        for volume in spec.volumes.expect("volumes") {
            let Some(secret) = volume.secret else {
                continue;
            };
            let mount = container
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| m.name == volume.name)
                .expect("every Secret volume is mounted");
            assert_eq!(
                mount.sub_path, None,
                "{}: live updates need a whole-directory mount",
                volume.name
            );
            assert_eq!(mount.read_only, Some(true));
            let items = secret
                .items
                .into_iter()
                .flatten()
                .map(|i| (i.key, format!("{}/{}", mount.mount_path, i.path)))
                .collect();
            found.push((volume.name, secret.secret_name.unwrap_or_default(), items));
        }
        found
    }

    #[test]
    fn tokens_keys_and_redis_certificates_are_mounted_where_the_config_names_them() {
        let pair = |k: &str, f: &str| (k.to_string(), f.to_string());
        assert_eq!(
            secret_mounts(&testing::minimal()),
            [
                (
                    "drain-token".into(),
                    "chat-drain-token".into(),
                    vec![pair("token", "/etc/wsfleet/tokens/drain/token")]
                ),
                (
                    "publish-token".into(),
                    "chat-publish-token".into(),
                    vec![pair("tokens", "/etc/wsfleet/tokens/publish/tokens")]
                ),
            ]
        );
        let fleet = testing::fleet(serde_json::json!({
            "image": "gw:1",
            "auth": {"jwt": {"keySecretRef": {"name": "keys", "key": "jwks.json"}}},
            "backplane": {"redis": {"url": "rediss://r:6380", "tls": {
                "caSecretRef": {"name": "redis-ca", "key": "ca.pem"},
                "clientCertificateSecretRef": {"name": "redis-client"}}}}
        }));
        let mounts = secret_mounts(&fleet);
        assert_eq!(
            mounts[2..],
            [
                (
                    "jwt".into(),
                    "keys".into(),
                    vec![pair("jwks.json", "/etc/wsfleet/jwt/key")]
                ),
                (
                    "redis-ca".into(),
                    "redis-ca".into(),
                    vec![pair("ca.pem", "/etc/wsfleet/redis-tls/ca/ca.crt")]
                ),
                (
                    "redis-client".into(),
                    "redis-client".into(),
                    vec![
                        pair("tls.crt", "/etc/wsfleet/redis-tls/client/tls.crt"),
                        pair("tls.key", "/etc/wsfleet/redis-tls/client/tls.key"),
                    ]
                ),
            ]
        );
        // Every file the config names is one of these mounts.
        let toml = gateway_toml(&fleet);
        let files: Vec<String> = mounts
            .iter()
            .flat_map(|(_, _, items)| items.iter().map(|(_, f)| f.clone()))
            .collect();
        for line in toml.lines().filter(|l| l.contains("_file = ")) {
            let path = line.split('"').nth(1).expect("quoted path");
            assert!(files.iter().any(|f| f == path), "{line} is mounted");
        }
    }

    #[test]
    fn redis_url_comes_from_the_secret_or_the_spec() {
        let container = gateway(&pod(&production(), &template(&production(), V1_32), "n"));
        let from_secret = env_var(&container, "WSFLEET_REDIS_URL")
            .value_from
            .and_then(|v| v.secret_key_ref)
            .expect("secret ref");
        assert_eq!(
            (from_secret.name.as_str(), from_secret.key.as_str()),
            ("redis", "url")
        );

        let fleet = testing::fleet(serde_json::json!({
            "image": "gw:1", "auth": {"anonymous": true},
            "backplane": {"redis": {"url": "redis://r:6379"}}
        }));
        let container = gateway(&pod(&fleet, &template(&fleet, V1_32), "n"));
        assert_eq!(
            env_var(&container, "WSFLEET_REDIS_URL").value.as_deref(),
            Some("redis://r:6379")
        );
        let minimal = testing::minimal();
        let container = gateway(&pod(&minimal, &template(&minimal, V1_32), "n"));
        assert!(
            container
                .env
                .expect("env")
                .iter()
                .all(|e| e.name != "WSFLEET_REDIS_URL")
        );
    }

    #[test]
    fn production_pod_tunes_kernel_mounts_jwt_and_covers_the_drain() {
        let fleet = production();
        let spec = pod(&fleet, &template(&fleet, V1_32), "n")
            .spec
            .expect("spec");
        let init = &spec.init_containers.as_ref().expect("init")[0];
        assert_eq!(
            init.security_context.as_ref().and_then(|s| s.privileged),
            Some(true)
        );
        assert!(spec.termination_grace_period_seconds >= Some(300));
        let jwt = spec
            .volumes
            .as_ref()
            .and_then(|v| v.iter().find(|v| v.name == "jwt"))
            .and_then(|v| v.secret.clone())
            .expect("jwt volume");
        assert_eq!(jwt.secret_name.as_deref(), Some("jwt"));
        let item = &jwt.items.expect("items")[0];
        assert_eq!((item.key.as_str(), item.path.as_str()), ("pub.pem", "key"));
        assert_eq!(spec.subdomain.as_deref(), Some("chat-nodes"));
        assert_eq!(spec.hostname.as_deref(), Some("n"));
    }

    #[test]
    fn default_topology_spread_is_across_hostnames() {
        let fleet = testing::minimal();
        let spec = template(&fleet, V1_32).spec;
        let spread = &spec.topology_spread_constraints.expect("spread")[0];
        assert_eq!(spread.topology_key, "kubernetes.io/hostname");
        assert_eq!(spread.max_skew, 1);
    }

    #[test]
    fn revision_changes_with_what_nodes_run_only() {
        let fleet = testing::minimal();
        let base = template(&fleet, V1_32).revision;
        assert_eq!(base.len(), 10);
        assert_eq!(template(&fleet, V1_32).revision, base, "deterministic");

        let mut image = fleet.clone();
        image.spec.image = "gw:2".into();
        assert_ne!(template(&image, V1_32).revision, base);

        let mut config = fleet.clone();
        config.spec.connections.max_per_node = 10;
        assert_ne!(
            template(&config, V1_32).revision,
            base,
            "config is part of it"
        );

        let mut priority = fleet.clone();
        priority.spec.priority_class_name = Some("realtime-critical".into());
        let priority_template = template(&priority, V1_32);
        assert_eq!(
            priority_template.spec.priority_class_name.as_deref(),
            Some("realtime-critical")
        );
        assert_ne!(
            priority_template.revision, base,
            "priority class is part of it"
        );
        assert_eq!(template(&fleet, V1_32).spec.priority_class_name, None);

        let mut replicas = fleet.clone();
        replicas.spec.replicas = 7;
        assert_eq!(template(&replicas, V1_32).revision, base, "size is not");
    }
}
