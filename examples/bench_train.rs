//! The training benchmark as a stand-alone program, with the arguments of
//! `sweeper bench train`: `bench_train [bench train] --backbone resnet50
//! --image-size 64 --batch 64 --steps 5 --warmup 2 --mode compute|end_to_end
//! --device cpu|cuda`. Prints one JSON line.

use std::process::ExitCode;

use sweeper::train::standalone::{bench_train, BenchMode, BenchOptions};

fn parse(args: &[String]) -> Result<BenchOptions, String> {
    let mut opts = BenchOptions {
        backbone: "resnet18".into(),
        image_size: 32,
        batch_size: 64,
        steps: 5,
        warmup_steps: 2,
        mode: BenchMode::Compute,
        device: tch::Device::Cpu,
    };
    let mut it = args.iter().skip_while(|a| *a == "bench" || *a == "train");
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<i64>()
                .map_err(|_| format!("{flag}: not a number: {value}"))
        };
        match flag.as_str() {
            "--backbone" => opts.backbone = value.clone(),
            "--image-size" => opts.image_size = number()?,
            "--batch" => opts.batch_size = number()?,
            "--steps" => opts.steps = number()?,
            "--warmup" => opts.warmup_steps = number()?,
            "--mode" => {
                opts.mode = match value.as_str() {
                    "compute" => BenchMode::Compute,
                    "end_to_end" | "e2e" => BenchMode::EndToEnd,
                    other => return Err(format!("unknown mode {other}")),
                }
            }
            "--device" => {
                opts.device = match value.as_str() {
                    "cpu" => tch::Device::Cpu,
                    "cuda" => tch::Device::Cuda(0),
                    other => return Err(format!("unknown device {other}")),
                }
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(opts)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = parse(&args).and_then(|opts| bench_train(&opts).map_err(|e| e.to_string()));
    match result.and_then(|report| serde_json::to_string(&report).map_err(|e| e.to_string())) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_train: {e}");
            ExitCode::FAILURE
        }
    }
}
