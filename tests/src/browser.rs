//! What the headless-Chromium tests share: the repository root, checks that the tools are
//! installed (each failing with words that say how to install what is missing), and a guard that
//! kills a node process group — node and the Chromium it started — when dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;

/// How to get the browser tools.
pub const SETUP_HINT: &str = "./scripts/test installs what the browser tests need";

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the repository")
        .to_path_buf()
}

/// Fails with words when node is not installed.
pub fn require_node() {
    let found = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "node is not installed: install Node.js 20 or newer (Debian: `apt-get install nodejs`); {SETUP_HINT}"
    );
}

/// The Chromium binary (`STRAIT_CHROMIUM`, or `/usr/bin/chromium`), or a failure that says how
/// to install it.
pub fn require_chromium() -> PathBuf {
    let path = PathBuf::from(
        std::env::var("STRAIT_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    assert!(
        path.exists(),
        "Chromium is not installed at {}: `apt-get update && apt-get install -y chromium` \
         (or set STRAIT_CHROMIUM to a Chromium binary); {SETUP_HINT}",
        path.display()
    );
    path
}

/// Fails with words when `npm ci` has not been run in `web-demo/`.
pub fn require_playwright(root: &Path) {
    let module = root.join("web-demo/node_modules/playwright-core/package.json");
    assert!(
        module.exists(),
        "playwright-core is not installed: run `npm ci` in web-demo/; {SETUP_HINT}"
    );
}

/// Kills a child's whole process group (node and the Chromium it started) when dropped, so a
/// hung or failed test leaves no browser behind. Start the child with `process_group(0)`.
#[derive(Debug)]
pub struct ProcessGroup(pub u32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // `kill -KILL -- -PGID`; the group is gone already when everything exited cleanly.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0)])
            .stderr(Stdio::null())
            .status();
    }
}
