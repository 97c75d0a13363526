//! Compiles proto/ with tonic (madsim-tonic-build: plain tonic codegen unless `--cfg madsim`).
//! protoc comes from the `protoc-bin-vendored` crate unless PROTOC names one.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the environment now.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_build::configure()
        .file_descriptor_set_path(out_dir.join("log_descriptor.bin"))
        .bytes(["."])
        .compile_protos(&["proto/log/v1/log.proto"], &["proto"])?;
    // The members-only Raft transport (no reflection: it is internal).
    tonic_build::configure()
        .bytes(["."])
        .compile_protos(&["proto/raft/v1/raft.proto"], &["proto"])?;
    // The production (non-simulated) code of both services once more, now with our codec: it
    // reserves a message's encoded length before writing it, instead of growing the buffer
    // (and copying it) step by step. madsim-tonic-build has no codec option; this overwrites
    // its non-simulated output and leaves the simulated one (which has no codec) alone.
    for proto in ["proto/log/v1/log.proto", "proto/raft/v1/raft.proto"] {
        tonic_prost_build::configure()
            .bytes(".")
            .codec_path("crate::codec::LogCodec")
            .compile_protos(&[proto], &["proto"])?;
    }
    // The original API alone, for the wire-compatibility test (tests/grpc.rs).
    let original_dir = out_dir.join("original");
    std::fs::create_dir_all(&original_dir)?;
    tonic_build::configure()
        .build_server(false)
        .out_dir(&original_dir)
        .compile_protos(&["tests/original/log.proto"], &["tests/original"])?;
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=tests/original");
    Ok(())
}
