//! The committed header `src/ffi/pangea_ces.h` must be what cbindgen generates
//! from `lib.rs` with `cbindgen.toml`. `PANGEA_BLESS=1` rewrites it.

use std::path::{Path, PathBuf};

const REGENERATE: &str = "PANGEA_BLESS=1 cargo test --release -p pangea-ces --test header";

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn generate_into(dir: &Path) -> PathBuf {
    let crate_dir = crate_dir();
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("read src/ffi/cbindgen.toml");
    let path = dir.join("pangea_ces.h");
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("lib.rs"))
        .generate()
        .expect("cbindgen generates the header")
        .write_to_file(&path);
    path
}

#[test]
fn committed_header_is_up_to_date() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("header-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let generated = std::fs::read_to_string(generate_into(&tmp)).unwrap();
    std::fs::remove_dir_all(&tmp).unwrap();
    declares_the_api(&generated);

    let committed_path = crate_dir().join("pangea_ces.h");
    if std::env::var_os("PANGEA_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&committed_path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    if committed != generated {
        let first_diff = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(generated.lines().count()));
        panic!(
            "src/ffi/pangea_ces.h is stale (first difference at line {}): \
             regenerate it with `{REGENERATE}` and commit it",
            first_diff + 1
        );
    }
}

/// A sanity check on what cbindgen made of lib.rs and cbindgen.toml.
fn declares_the_api(header: &str) {
    for needle in [
        "#ifndef PANGEA_CES_H",
        "#define PANGEA_CES_H",
        "typedef enum ces_status",
        "CES_STATUS_OK = 0",
        "typedef struct ces_ctx ces_ctx;",
        "typedef struct ces_config",
        "typedef struct ces_encoded",
        "typedef struct ces_buffer",
        "ces_status ces_new(",
        "ces_status ces_process(",
        "ces_status ces_reconstruct(",
        "void ces_free(",
        "void ces_encoded_free(",
        "void ces_buffer_free(",
        "const char *ces_last_error(void);",
        "const char *ces_status_str(int status);",
        "#define CES_KEY_LEN 32",
    ] {
        assert!(header.contains(needle), "pangea_ces.h lacks `{needle}`");
    }
}
