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
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
