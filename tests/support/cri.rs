//! A private containerd with its CRI plugin, driven the way kubelet drives it: a CRI v1 client
//! over containerd's unix socket, pods on the host network with the cgroupfs driver, and an
//! image built here from busybox (no registry is reachable). Everything it starts, mounts and
//! creates is stopped, unmounted and removed on drop, also when an assertion fails.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient,
    ImageSpec, ImageStatusRequest, ListPodSandboxRequest, RemovePodSandboxRequest,
    StopPodSandboxRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::runtimes::{
    best_effort, busybox_rootfs, kill_shims, log_tail, output_within, parent_cgroups,
    remove_cgroup, run_ok, stop_child, HostLeftovers, Podman, TempDir, Tools, COMMAND_TIMEOUT,
    HOST_PATHS,
};

/// The image the pods run: busybox, `sleep` as its command (the sandbox's pause process).
pub const IMAGE: &str = "localhost/clawtrace-k8s:latest";

/// How long one CRI call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A private containerd whose CRI plugin serves on its socket, with [`IMAGE`] imported into
/// its `k8s.io` namespace.
pub struct CriContainerd {
    containerd: Child,
    ctr: PathBuf,
    sock: PathBuf,
    rt: tokio::runtime::Runtime,
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
    /// The pod cgroups (relative to each hierarchy's root) the tests made, removed on drop.
    pod_cgroups: Vec<PathBuf>,
    made: HostLeftovers,
    /// Dropped last: unmounts and removes the state.
    dir: TempDir,
}

impl CriContainerd {
    /// Builds the image (with podman, saved as an archive), starts containerd with the CRI
    /// plugin, imports the image and waits until the CRI knows it. Fails the test, with
    /// containerd's log, when any of it does not work here.
    pub fn start(tools: &Tools) -> CriContainerd {
        let started = Instant::now();
        let dir = TempDir::new("cri");
        let d = dir.path().to_path_buf();
        let archive = d.join("image.tar");
        build_image(tools, &archive);
        let made = HostLeftovers::note(HOST_PATHS, "kubepods");

        let sock = d.join("containerd.sock");
        let config = format!(
            r#"version = 2
root = {root:?}
state = {state:?}
[grpc]
  address = {sock:?}
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = {opt:?}
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {IMAGE:?}
  # A sandbox asks for a negative oom_score_adj, which needs CAP_SYS_RESOURCE: capped at
  # containerd's own, as in rootless or nested setups.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {cni_bin:?}
    conf_dir = {cni_conf:?}
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = {runc:?}
        Root = {runc_root:?}
"#,
            root = d.join("root").display().to_string(),
            state = Self::state_of(&d).display().to_string(),
            sock = sock.display(),
            opt = d.join("opt").display().to_string(),
            cni_bin = d.join("cni/bin").display().to_string(),
            cni_conf = d.join("cni/net.d").display().to_string(),
            runc = tools.get("runc").display().to_string(),
            runc_root = d.join("runc").display().to_string(),
        );
        fs::write(d.join("containerd.toml"), config).expect("write containerd.toml");
        let containerd = Command::new(tools.get("containerd"))
            .arg("--config")
            .arg(d.join("containerd.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(d.join("containerd.log")).expect("containerd.log"))
            .spawn()
            .expect("spawn containerd");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let channel = rt.block_on(async {
            let path = sock.clone();
            // The URI is not used: every connection is to the unix socket.
            Endpoint::try_from("http://[::]:50051")
                .expect("endpoint")
                .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
        });
        let mut cri = CriContainerd {
            containerd,
            ctr: tools.get("ctr").to_path_buf(),
            sock,
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            pod_cgroups: Vec::new(),
            made,
            dir,
        };
        // containerd is up when its socket answers; the CRI plugin when its Version does (it
        // fails here, with the reason in the log, when the plugin could not start).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = cri.containerd.try_wait() {
                panic!("containerd exited with {status}: {}", cri.log());
            }
            let mut client = cri.runtime.clone();
            let version = cri.rt.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(2),
                    client.version(k8s_cri::v1::VersionRequest::default()),
                )
                .await
            });
            match version {
                Ok(Ok(v)) => {
                    let v = v.into_inner();
                    eprintln!(
                        "CRI ready: {} {} (CRI {})",
                        v.runtime_name, v.runtime_version, v.runtime_api_version
                    );
                    break;
                }
                Ok(Err(status))
                    if cri.sock.exists() && status.code() == tonic::Code::Unimplemented =>
                {
                    panic!(
                        "containerd answers but its CRI plugin does not ({status}): {}",
                        cri.log()
                    );
                }
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "containerd's CRI did not answer within 30 s: {}",
                cri.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        run_ok(
            Command::new(&cri.ctr)
                .arg("--address")
                .arg(&cri.sock)
                .args(["--namespace", "k8s.io", "images", "import"])
                .arg(&archive),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cri.has_image(IMAGE) {
            assert!(
                Instant::now() < deadline,
                "the CRI never saw the imported {IMAGE}: {}",
                cri.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "containerd with its CRI plugin and {IMAGE} ready in {:.1?}",
            started.elapsed()
        );
        cri
    }

    fn state_of(dir: &Path) -> PathBuf {
        dir.join("state")
    }

    /// containerd's state folder (`--containerd-state` for clawtrace).
    pub fn state(&self) -> PathBuf {
        Self::state_of(self.dir.path())
    }

    /// containerd's socket (for `ctr --address`).
    pub fn socket(&self) -> &Path {
        &self.sock
    }

    /// The end of containerd's log, for failure messages.
    pub fn log(&self) -> String {
        log_tail(&self.dir.path().join("containerd.log"))
    }

    fn has_image(&self, image: &str) -> bool {
        let mut images = self.images.clone();
        let request = ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        };
        self.rt
            .block_on(images.image_status(request))
            .is_ok_and(|r| r.into_inner().image.is_some())
    }

    /// Runs one CRI call (with a time limit); fails the test with containerd's log if it fails.
    pub fn call<T, F>(&self, what: &str, call: impl FnOnce(RuntimeServiceClient<Channel>) -> F) -> T
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = self.runtime.clone();
        match self
            .rt
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, call(client)).await })
        {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => panic!("CRI {what}: {status}\ncontainerd: {}", self.log()),
            Err(_) => panic!(
                "CRI {what} took longer than {CALL_TIMEOUT:?}: {}",
                self.log()
            ),
        }
    }

    /// Remembers a pod's cgroup parent (`/kubepods/…/pod<uid>`) for clean-up.
    pub fn pod_cgroup(&mut self, parent: &str) {
        self.pod_cgroups
            .push(PathBuf::from(parent.trim_start_matches('/')));
    }

    fn cleanup(&mut self) {
        // What the CRI can still remove, as kubelet would.
        let up = matches!(self.containerd.try_wait(), Ok(None));
        if up {
            let mut client = self.runtime.clone();
            let rt = &self.rt;
            let pods = rt
                .block_on(async {
                    tokio::time::timeout(
                        Duration::from_secs(10),
                        client.list_pod_sandbox(ListPodSandboxRequest::default()),
                    )
                    .await
                })
                .ok()
                .and_then(Result::ok)
                .map(|r| r.into_inner().items)
                .unwrap_or_default();
            for pod in pods {
                let id = pod.id;
                let _ = rt.block_on(async {
                    tokio::time::timeout(Duration::from_secs(20), async {
                        let _ = client
                            .stop_pod_sandbox(StopPodSandboxRequest {
                                pod_sandbox_id: id.clone(),
                            })
                            .await;
                        client
                            .remove_pod_sandbox(RemovePodSandboxRequest {
                                pod_sandbox_id: id.clone(),
                            })
                            .await
                    })
                    .await
                });
            }
        }
        stop_child(&mut self.containerd, Duration::from_secs(10));
        // What a failed removal or a killed containerd leaves: the pods' processes, the shims.
        for pod in &self.pod_cgroups {
            for hierarchy in parent_cgroups("") {
                kill_below(&hierarchy.join(pod));
            }
        }
        kill_shims(self.dir.path());
        for pod in &self.pod_cgroups {
            for hierarchy in parent_cgroups("") {
                remove_below(&hierarchy.join(pod));
            }
        }
        // The QoS class folder (`besteffort`) goes with `kubepods` when the test made it.
        self.made.remove(&["besteffort"]);
    }
}

impl Drop for CriContainerd {
    fn drop(&mut self) {
        self.cleanup();
        // `dir` (a TempDir) then unmounts what containerd left mounted and removes the state.
    }
}

/// Kills every process of a cgroup v2 folder and its children (`cgroup.kill`).
fn kill_below(dir: &Path) {
    if dir.join("cgroup.kill").exists() {
        let _ = fs::write(dir.join("cgroup.kill"), "1");
    }
}

/// Removes a cgroup folder and its children, deepest first.
fn remove_below(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    for child in fs::read_dir(dir).into_iter().flatten().flatten() {
        if child.file_type().is_ok_and(|t| t.is_dir()) {
            remove_below(&child.path());
        }
    }
    remove_cgroup(dir);
}

/// Builds [`IMAGE`] from a busybox root filesystem with a private podman, and saves it as a
/// Docker archive at `archive` (what `ctr images import` reads). The podman state goes with
/// the podman.
fn build_image(tools: &Tools, archive: &Path) {
    let podman = Podman::new(tools);
    let rootfs = podman.dir().join("rootfs");
    busybox_rootfs(&rootfs, tools.get("busybox"));
    fs::create_dir_all(podman.dir().join("tmp")).expect("mkdir podman tmp");
    let tar = podman.dir().join("rootfs.tar");
    run_ok(
        Command::new(tools.get("tar"))
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    run_ok(
        podman
            .cmd()
            .args(["import", "--change", "ENV PATH=/bin"])
            .args(["--change", r#"CMD ["/bin/sleep", "1000000"]"#])
            .arg(&tar)
            .arg(IMAGE),
    );
    let out = output_within(
        podman
            .cmd()
            .args(["save", "--format", "docker-archive", "--output"])
            .arg(archive)
            .arg(IMAGE),
        COMMAND_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "podman save failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    best_effort(
        podman.cmd().args(["rmi", "--force", IMAGE]),
        COMMAND_TIMEOUT,
    );
}
