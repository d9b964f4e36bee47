//! Kubernetes names of CRI containers, from the OCI annotations their runtime wrote in the
//! bundle's `config.json`: containerd's CRI plugin (`io.kubernetes.cri.*`, in its v2 task
//! folder) and CRI-O (`io.kubernetes.pod.*`, in its container storage). The files are the
//! runtime's, but the values are the pod author's: read bounded, each name capped and kept only
//! when it is printable text.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use serde_json::{Map, Value};

use crate::{defaults, enrich::agent::read_json, model::K8sNames};

/// The annotation keys of one runtime.
struct Keys {
    pod_name: &'static str,
    namespace: &'static str,
    pod_uid: &'static str,
    container_name: &'static str,
}

/// containerd's CRI plugin (`pkg/cri/annotations`). Its sandbox (pause) container has no
/// container name.
const CONTAINERD: Keys = Keys {
    pod_name: "io.kubernetes.cri.sandbox-name",
    namespace: "io.kubernetes.cri.sandbox-namespace",
    pod_uid: "io.kubernetes.cri.sandbox-uid",
    container_name: "io.kubernetes.cri.container-name",
};

/// CRI-O (the kubelet's label names, which it writes as annotations too).
const CRIO: Keys = Keys {
    pod_name: "io.kubernetes.pod.name",
    namespace: "io.kubernetes.pod.namespace",
    pod_uid: "io.kubernetes.pod.uid",
    container_name: "io.kubernetes.container.name",
};

/// containerd namespaces looked through for a bundle at most (a node has one or two: `k8s.io`,
/// and `moby` where Docker shares its containerd).
const MAX_NAMESPACES: usize = 16;

/// Where the runtimes keep their bundles.
#[derive(Debug, Clone)]
pub struct PodNames {
    /// containerd's v2 task folder: `<tasks>/<namespace>/<id>/config.json`.
    containerd_tasks: PathBuf,
    /// CRI-O's container storage: `<root>/<id>/userdata/config.json`.
    crio_root: PathBuf,
}

impl PodNames {
    pub fn new(containerd_tasks: PathBuf, crio_root: PathBuf) -> PodNames {
        PodNames {
            containerd_tasks,
            crio_root,
        }
    }

    /// The names of container `id` of `runtime` (`containerd` or `cri-o`), if its bundle is
    /// there and holds them.
    pub fn lookup(&self, runtime: &str, id: &str) -> Option<Arc<K8sNames>> {
        // An id is one path element; anything else is not looked up.
        if id.is_empty() || id.contains('/') || id == "." || id == ".." {
            return None;
        }
        let names = match runtime {
            "containerd" => self.containerd_bundles(id).find_map(|config| {
                let config = read_json(&config)?;
                parse(annotations(&config)?, &CONTAINERD)
            }),
            "cri-o" => {
                let config = self.crio_root.join(id).join("userdata").join("config.json");
                parse(annotations(&read_json(&config)?)?, &CRIO)
            }
            _ => None,
        };
        names.map(Arc::new)
    }

    fn containerd_bundles(&self, id: &str) -> impl Iterator<Item = PathBuf> + '_ {
        let namespaces = std::fs::read_dir(&self.containerd_tasks)
            .into_iter()
            .flatten();
        let id = id.to_string();
        namespaces
            .flatten()
            .take(MAX_NAMESPACES)
            .map(move |ns| ns.path().join(&id).join("config.json"))
            .filter(|p| p.is_file())
    }
}

impl Default for PodNames {
    fn default() -> Self {
        PodNames::new(
            defaults::containerd_tasks(Path::new(defaults::CONTAINERD_STATE)),
            PathBuf::from(defaults::CRIO_ROOT),
        )
    }
}

fn annotations(config: &Value) -> Option<&Map<String, Value>> {
    config.get("annotations")?.as_object()
}

/// The names under `keys`; None unless the pod's name and namespace are both there.
fn parse(annotations: &Map<String, Value>, keys: &Keys) -> Option<K8sNames> {
    let get = |key: &str| annotations.get(key).and_then(Value::as_str).and_then(name);
    Some(K8sNames {
        pod_name: get(keys.pod_name)?,
        namespace: get(keys.namespace)?,
        pod_uid: get(keys.pod_uid),
        container_name: get(keys.container_name),
    })
}

/// A name as clawtrace passes it on: at most [`defaults::K8S_NAME_MAX_LEN`] bytes, and none at
/// all when it is empty or holds anything but the characters Kubernetes allows in names and
/// uids (ASCII letters, digits, `-`, `.`, `_`): a name the API server validated never does,
/// and no control or direction-changing character then reaches a terminal line.
fn name(value: &str) -> Option<String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._".contains(&b);
    if value.is_empty() || !value.bytes().all(allowed) {
        return None;
    }
    // ASCII: any byte is a character boundary.
    Some(value[..value.len().min(defaults::K8S_NAME_MAX_LEN)].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TempDir;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn names(pod: &str, ns: &str, uid: Option<&str>, container: Option<&str>) -> K8sNames {
        K8sNames {
            pod_name: pod.into(),
            namespace: ns.into(),
            pod_uid: uid.map(Into::into),
            container_name: container.map(Into::into),
        }
    }

    #[test]
    fn containerd_and_crio_annotations() {
        let dir = TempDir::new("pods");
        let tasks = dir.0.join("tasks");
        let crio = dir.0.join("crio");
        write(
            &tasks.join("k8s.io").join(ID).join("config.json"),
            r#"{"annotations":{
                "io.kubernetes.cri.container-type":"container",
                "io.kubernetes.cri.sandbox-name":"web-0",
                "io.kubernetes.cri.sandbox-namespace":"shop",
                "io.kubernetes.cri.sandbox-uid":"7f1c",
                "io.kubernetes.cri.container-name":"agent"}}"#,
        );
        // containerd's sandbox: no container name.
        write(
            &tasks.join("k8s.io").join("sandbox").join("config.json"),
            r#"{"annotations":{
                "io.kubernetes.cri.container-type":"sandbox",
                "io.kubernetes.cri.sandbox-name":"web-0",
                "io.kubernetes.cri.sandbox-namespace":"shop",
                "io.kubernetes.cri.sandbox-uid":"7f1c"}}"#,
        );
        write(
            &crio.join(ID).join("userdata").join("config.json"),
            r#"{"annotations":{
                "io.kubernetes.pod.name":"db-1",
                "io.kubernetes.pod.namespace":"data",
                "io.kubernetes.pod.uid":"9a2b",
                "io.kubernetes.container.name":"postgres"}}"#,
        );
        let pods = PodNames::new(tasks, crio);
        assert_eq!(
            pods.lookup("containerd", ID).as_deref(),
            Some(&names("web-0", "shop", Some("7f1c"), Some("agent")))
        );
        assert_eq!(
            pods.lookup("containerd", "sandbox").as_deref(),
            Some(&names("web-0", "shop", Some("7f1c"), None))
        );
        assert_eq!(
            pods.lookup("cri-o", ID).as_deref(),
            Some(&names("db-1", "data", Some("9a2b"), Some("postgres")))
        );
        // Each runtime's own keys only, its own folder only.
        assert_eq!(pods.lookup("cri-o", "sandbox"), None);
        assert_eq!(pods.lookup("docker", ID), None);
        assert_eq!(pods.lookup("containerd", "../k8s.io"), None);
        assert_eq!(pods.lookup("containerd", "missing"), None);
    }

    #[test]
    fn hostile_bundles_give_no_names_or_bounded_ones() {
        let dir = TempDir::new("pods-hostile");
        let tasks = dir.0.join("tasks");
        let config = |id: &str| tasks.join("k8s.io").join(id).join("config.json");
        let long = "p".repeat(1000);
        let cases = [
            ("not-json", "{\"annotations\":".to_string()),
            ("no-annotations", r#"{"ociVersion":"1.0.2"}"#.to_string()),
            ("annotations-list", r#"{"annotations":["a"]}"#.to_string()),
            (
                "number",
                r#"{"annotations":{"io.kubernetes.cri.sandbox-name":7,
                    "io.kubernetes.cri.sandbox-namespace":"ns"}}"#
                    .to_string(),
            ),
            (
                "no-namespace",
                r#"{"annotations":{"io.kubernetes.cri.sandbox-name":"p"}}"#.to_string(),
            ),
            (
                "control",
                r#"{"annotations":{"io.kubernetes.cri.sandbox-name":"p\u001b[31m",
                    "io.kubernetes.cri.sandbox-namespace":"ns"}}"#
                    .to_string(),
            ),
            (
                "bidi",
                r#"{"annotations":{"io.kubernetes.cri.sandbox-name":"p\u202ex",
                    "io.kubernetes.cri.sandbox-namespace":"ns"}}"#
                    .to_string(),
            ),
            (
                "accented",
                r#"{"annotations":{"io.kubernetes.cri.sandbox-name":"café",
                    "io.kubernetes.cri.sandbox-namespace":"ns"}}"#
                    .to_string(),
            ),
            (
                "empty",
                r#"{"annotations":{"io.kubernetes.cri.sandbox-name":"",
                    "io.kubernetes.cri.sandbox-namespace":"ns"}}"#
                    .to_string(),
            ),
        ];
        for (id, text) in &cases {
            write(&config(id), text);
        }
        // Past the size a bundle may have: not read at all.
        let huge = format!(
            r#"{{"annotations":{{"io.kubernetes.cri.sandbox-name":"p",
                "io.kubernetes.cri.sandbox-namespace":"ns"}},"pad":"{}"}}"#,
            "x".repeat(defaults::BUNDLE_MAX_BYTES as usize)
        );
        write(&config("huge"), &huge);
        write(
            &config("long"),
            &format!(
                r#"{{"annotations":{{"io.kubernetes.cri.sandbox-name":"{long}",
                    "io.kubernetes.cri.sandbox-namespace":"ns",
                    "io.kubernetes.cri.container-name":"bad\nname"}}}}"#
            ),
        );
        // A folder where config.json should be; a FIFO (opening it must not wait for a writer);
        // a symlink to a good bundle (not followed).
        std::fs::create_dir_all(config("dir")).unwrap();
        std::fs::create_dir_all(config("fifo").parent().unwrap()).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(config("fifo"))
            .status()
            .unwrap();
        assert!(made.success());
        let good = r#"{"annotations":{"io.kubernetes.cri.sandbox-name":"p",
            "io.kubernetes.cri.sandbox-namespace":"ns"}}"#;
        write(&config("good"), good);
        std::fs::create_dir_all(config("link").parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(config("good"), config("link")).unwrap();
        let pods = PodNames::new(tasks, dir.0.join("crio"));
        assert!(pods.lookup("containerd", "good").is_some());
        for id in cases
            .iter()
            .map(|(id, _)| *id)
            .chain(["huge", "dir", "fifo", "link"])
        {
            assert_eq!(pods.lookup("containerd", id), None, "{id}");
        }
        let got = pods.lookup("containerd", "long").unwrap();
        assert_eq!(got.pod_name.len(), defaults::K8S_NAME_MAX_LEN);
        assert!(long.starts_with(&got.pod_name));
        assert_eq!(got.container_name, None);
    }
}
