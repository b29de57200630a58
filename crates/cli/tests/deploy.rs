//! The deployment files in deploy/: the Kubernetes manifests pass an offline
//! validation against the Kubernetes API schemas (kubernetes-validate, which
//! `make venv` installs), and the compose file parses.

mod common;

use common::run_venv_script;
use prophetkv_model::testing::workspace_root;

#[test]
fn kubernetes_manifests_pass_the_api_schemas_offline() {
    let dir = workspace_root().join("deploy/k8s");
    let stdout = run_venv_script("k8s_check.py", &[&dir.to_string_lossy()]);
    assert!(stdout.contains("kubernetes manifests valid"), "{stdout}");
}
