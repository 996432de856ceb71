//! libtorch's shared libraries are found at run time through an RPATH, so `affect-train` and the
//! tests run without `LD_LIBRARY_PATH` (tch adds none itself).
//!
//! The source revision the binary is built from is recorded as `AFFECT_GIT_REVISION`: the
//! commit of this crate's repository (`git rev-parse HEAD`), with `-dirty` when tracked files
//! differ from it, or `unknown` when not built from a git checkout.
use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{libtorch}/lib");
    }

    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Sources that make the tree dirty; the workspace's `target/` is left out on purpose.
    println!("cargo:rerun-if-changed={}", crate_dir.display());
    println!(
        "cargo:rerun-if-changed={}",
        crate_dir.join("../shared").display()
    );
    let revision = match git(crate_dir, &["rev-parse", "HEAD"]) {
        Some(head) if !head.is_empty() => {
            // HEAD, the branch it names, packed refs and the index (in a worktree, HEAD lives in
            // the worktree's git dir and the refs in the common one).
            let paths = ["HEAD", "index", "packed-refs"]
                .map(|p| git(crate_dir, &["rev-parse", "--git-path", p]));
            let branch = git(crate_dir, &["symbolic-ref", "-q", "HEAD"])
                .and_then(|r| git(crate_dir, &["rev-parse", "--git-path", &r]));
            for path in paths.into_iter().chain([branch]).flatten() {
                let path = crate_dir.join(path);
                if path.exists() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
            let dirty = git(
                crate_dir,
                &["status", "--porcelain", "--untracked-files=no"],
            )
            .is_some_and(|s| !s.is_empty());
            if dirty { format!("{head}-dirty") } else { head }
        }
        _ => "unknown".to_owned(),
    };
    println!("cargo:rustc-env=AFFECT_GIT_REVISION={revision}");
}
