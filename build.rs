//! How the `pydeployer` executable is linked on Linux with glibc, for its start-up time: a run
//! of one stage is mostly start-up, and make starts in about 1.3 ms (BENCHMARKS.md,
//! "Start-up"). Three settings, each measured there:
//!
//! - **Not position-independent** (`-no-pie`). A PIE executable of this size carries about
//!   13,000 relative relocations, and the loader writes every one of them at each start,
//!   copying about 50 pages of `.data.rel.ro` (and about 1.2 MB more of resident memory). The
//!   executable's own addresses are then the same at each start: the libraries, heap, stack
//!   and memory maps are still placed at random. `PYDEPLOYER_PIE=1` at build time keeps PIE.
//! - **libgcc's unwinder linked in** (`libgcc_eh.a`, as a static build does) instead of
//!   loading `libgcc_s.so.1`, whose start-up code probes the CPU with `cpuid` instructions that
//!   trap to the hypervisor on virtual machines. Rust's standard library asks for `gcc_s` by
//!   name; a folder of our own, searched first, answers that name with the static archive.
//! - **The functions that run first, laid out together** (`link/symbol-order.txt`, given to
//!   Rust's own lld, the default linker on x86-64 Linux, when a probe shows the linker takes
//!   it): the kernel maps code 64 KB at a time
//!   around each page touched, and the 1.3 MB of functions a run executes, scattered over 7 MB,
//!   kept about 5 MB resident. `link/order.py` writes the file; `PYDEPLOYER_NO_ORDER=1` at build
//!   time leaves the linker's own order.
//!
//! Anything unexpected (another OS or C library, no `libgcc_eh.a`, another linker) leaves the
//! default link.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=PYDEPLOYER_PIE");
    println!("cargo::rerun-if-env-changed=CC");
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let libc = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os != "linux" || libc != "gnu" {
        return;
    }
    if env::var_os("PYDEPLOYER_PIE").is_none_or(|v| v.is_empty() || v == "0") {
        println!("cargo::rustc-link-arg-bins=-no-pie");
    }
    if let Some(order) = symbol_order() {
        for arg in order_args(&order) {
            println!("cargo::rustc-link-arg-bins={arg}");
        }
    }
    if let Some(archive) = gcc_eh() {
        let Some(out) = env::var_os("OUT_DIR").map(PathBuf::from) else {
            return;
        };
        let folder = out.join("static-gcc");
        let link = folder.join("libgcc_s.a");
        let made = std::fs::create_dir_all(&folder)
            .and_then(|()| match std::fs::remove_file(&link) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            })
            .and_then(|()| std::os::unix::fs::symlink(&archive, &link));
        match made {
            Ok(()) => println!("cargo::rustc-link-search=native={}", folder.display()),
            Err(e) => println!(
                "cargo::warning=linking libgcc_s.so.1 as usual: could not link {}: {e}",
                link.display()
            ),
        }
    }
}

/// `libgcc_eh.a` of the C compiler that links the executable, if it has one.
fn gcc_eh() -> Option<PathBuf> {
    let cc = env::var_os("CC").unwrap_or_else(|| "cc".into());
    let out = Command::new(cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    // Not found, the compiler prints the bare name back.
    (out.status.success() && path.is_absolute() && path.is_file()).then_some(path)
}

/// `link/symbol-order.txt`, when the linker takes it: Rust's own lld does (the default on x86-64
/// Linux from rustup's Rust 1.90 on), the system's `ld.bfd` and `ld.gold` do not. The functions a
/// start-up, a plan and a run execute, which lld then lays out first and together (see the file's
/// generator, `link/order.py`).
fn symbol_order() -> Option<String> {
    println!("cargo::rerun-if-env-changed=PYDEPLOYER_NO_ORDER");
    if env::var_os("PYDEPLOYER_NO_ORDER").is_some_and(|v| !v.is_empty() && v != "0") {
        return None;
    }
    let file = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR")?).join("link/symbol-order.txt");
    if !file.is_file() {
        return None;
    }
    println!("cargo::rerun-if-changed=link/symbol-order.txt");
    // A linker set for the build (a `linker` setting, `-fuse-ld`, `-Clinker-flavor`) is not the
    // one the probe below would try.
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if env::var_os("RUSTC_LINKER").is_some() || flags.contains("link") || flags.contains("fuse-ld")
    {
        return None;
    }
    let file = file.to_str()?.to_owned();
    linker_takes(&order_args(&file)).then_some(file)
}

/// The linker arguments that hand `file` to lld, one `-Xlinker` each (`-Wl,` would split a path
/// holding a comma).
fn order_args(file: &str) -> Vec<String> {
    ["--symbol-ordering-file", file, "--no-warn-symbol-ordering"]
        .into_iter()
        .flat_map(|arg| ["-Xlinker".to_owned(), arg.to_owned()])
        .collect()
}

/// Whether an empty program for the target links with `args` added: the linker's answer, rather
/// than a guess from the Rust version or the target.
fn linker_takes(args: &[String]) -> bool {
    let (Some(out), Some(target)) = (env::var_os("OUT_DIR"), env::var_os("TARGET")) else {
        return false;
    };
    let out = PathBuf::from(out);
    let source = out.join("link-probe.rs");
    if std::fs::write(&source, "fn main() {}\n").is_err() {
        return false;
    }
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut probe = Command::new(rustc);
    probe
        .arg("--target")
        .arg(target)
        .arg("-o")
        .arg(out.join("link-probe"))
        .arg(&source);
    for arg in args {
        probe.arg("-C").arg(format!("link-arg={arg}"));
    }
    probe
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
