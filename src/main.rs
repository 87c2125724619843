//! The `sweeper` command line: parse, set up tracing, call the library.

fn main() {
    let _ = sweeper::train::TrainError::Cancelled;
    println!("sweeper {}", env!("CARGO_PKG_VERSION"));
}
