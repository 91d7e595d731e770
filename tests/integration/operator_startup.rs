//! `hoist run` against a cluster without the Scaler CRD: it says how to install the CRD and
//! exits non-zero. This needs a control plane of its own (the shared one has the CRD, and
//! removing it would break the tests running beside this one), so it starts one with
//! `tests/cluster/up` and stops it afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hoist_tests::operator::hoist_binary;
use hoist_tests::repo_root;

/// Stops the cluster however the test ends.
struct Down(std::path::PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("tests/cluster/down"))
            .arg(&self.0)
            .output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn without_the_crd_hoist_run_says_how_to_install_it_and_exits_non_zero() {
    let base = std::env::var_os("HOIST_CACHE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache/hoist"))
        })
        .unwrap()
        .join("clusters");
    std::fs::create_dir_all(&base).unwrap();
    let dir = base.join(format!("crdless-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let up = Command::new(repo_root().join("tests/cluster/up"))
        .arg(&dir)
        .arg("--owner-pid")
        .arg(std::process::id().to_string())
        .output()
        .unwrap();
    let _down = Down(dir.clone());
    assert!(
        up.status.success(),
        "tests/cluster/up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );

    let mut child = Command::new(hoist_binary().unwrap())
        .args(["run", "--leader-elect=false", "--metrics-addr=127.0.0.1:0"])
        .arg("--plugin-cache-dir")
        .arg(dir.join("plugin-cache"))
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .env_remove("POD_NAMESPACE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_mins(1);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("hoist run kept running without the CRD");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = {
        use std::io::Read as _;
        let mut s = String::new();
        child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
        s
    };
    assert!(!status.success(), "exit status {status}; stderr:\n{stderr}");
    assert!(
        stderr.contains("scalers.hoist.dev") && stderr.contains("hoist crds | kubectl apply"),
        "the message says what is missing and how to install it:\n{stderr}"
    );
}
