//! The built binary finds libtorch on its own (rpath) and really links the CUDA half
//! of libtorch, so the same binary trains on a GPU wherever one exists.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sweeper");

#[test]
fn binary_starts_without_ld_library_path() {
    let out = Command::new(BIN)
        .arg("--version")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run the sweeper binary");
    assert!(
        out.status.success(),
        "sweeper --version failed without LD_LIBRARY_PATH: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("sweeper"));
}

#[test]
fn ldd_lists_libtorch_cuda() {
    let out = Command::new("ldd").arg(BIN).output().expect("run ldd");
    let listing = String::from_utf8_lossy(&out.stdout);
    let cuda = listing
        .lines()
        .find(|l| l.contains("libtorch_cuda.so"))
        .unwrap_or_else(|| panic!("ldd does not list libtorch_cuda.so:\n{listing}"));
    assert!(
        !cuda.contains("not found"),
        "libtorch_cuda.so is not resolved: {cuda}"
    );
    assert!(
        !listing
            .lines()
            .any(|l| l.contains("libtorch") && l.contains("not found")),
        "a libtorch library is not resolved:\n{listing}"
    );
}
