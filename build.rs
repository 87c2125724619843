//! Link libtorch so the binary runs without `LD_LIBRARY_PATH` and really links the
//! CUDA half of libtorch.
//!
//! torch-sys (our direct dependency, `links = "tch"`) tells us where libtorch lives
//! through `DEP_TCH_LIBTORCH_LIB`. Two things go wrong without this script:
//! - the binary cannot find `libtorch*.so` at run time unless the user sets
//!   `LD_LIBRARY_PATH`; an rpath fixes that;
//! - rustc links with `--as-needed`, and nothing in our object files names a symbol of
//!   `libtorch_cuda.so`, so the linker drops it and `tch::Cuda::is_available()` is false
//!   on every GPU machine. `--no-as-needed` around it keeps it in `DT_NEEDED`.

use std::path::Path;

fn main() {
    record_commit();
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Some(lib_dir) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=DEP_TCH_LIBTORCH_LIB is not set; the binary will need LD_LIBRARY_PATH to find libtorch");
        return;
    };
    let lib_dir = Path::new(&lib_dir);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    if lib_dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib_dir.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    println!("cargo:rustc-env=SWEEPER_LIBTORCH_LIB={}", lib_dir.display());
}

/// `SWEEPER_COMMIT`: the commit the binary is built from, for each attempt's
/// provenance; empty outside a git checkout.
fn record_commit() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_default();
    println!("cargo:rustc-env=SWEEPER_COMMIT={commit}");
    // A new commit or checkout moves HEAD's log; rebuilding on every index change
    // would recompile the crate at each `git add`.
    if let Some(log) = git(&["rev-parse", "--git-path", "logs/HEAD"]) {
        println!("cargo:rerun-if-changed={log}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
