//! Build-time generation (the `bindgen` feature): the one bindgen configuration, the `cc` build
//! of the header's static-inline functions, and WDK mode.

use std::env;
use std::path::{Path, PathBuf};

/// The base types that `wrapper.h` takes from `kmcl_base_types.h` or `<wdm.h>`. bindgen must not
/// emit them: the crate's `base` module defines them with fixed widths (bindgen would otherwise
/// turn `unsigned long` into `c_ulong`, which is 64-bit on Linux and breaks the host build), or
/// re-exports wdk-sys's when the `wdk-sys` feature asks for type identity.
const BASE_TYPES: &[&str] = &[
    "NTSTATUS",
    "BOOLEAN",
    "UCHAR",
    "UINT8",
    "USHORT",
    "UINT16",
    "PUINT16",
    "UINT32",
    "PUINT32",
    "UINT64",
    "ULONG",
    "PULONG",
    "LONG",
    "LONGLONG",
    "ULONG_PTR",
    "PVOID",
    "HANDLE",
    "PHANDLE",
    "WCHAR",
    "PWCH",
    "_GUID",
    "GUID",
    "LPGUID",
    "LPCGUID",
    "_UNICODE_STRING",
    "UNICODE_STRING",
    "PUNICODE_STRING",
    "PCUNICODE_STRING",
    "_MDL",
    "MDL",
    "PMDL",
    "_DEVICE_OBJECT",
    "DEVICE_OBJECT",
    "PDEVICE_OBJECT",
    "_LARGE_INTEGER.*",
    "LARGE_INTEGER",
    "PLARGE_INTEGER",
    "PFN_NUMBER",
    "PPFN_NUMBER",
    "_INTERFACE",
    "INTERFACE",
    "PINTERFACE",
    "PINTERFACE_REFERENCE",
    "PINTERFACE_DEREFERENCE",
];

/// Where the KMCL items come from: everything the header declares, by naming pattern.
const KMCL_ITEMS: &str = "(_?VMB.*|_?KMCL_.*|VmbChannel.*|VmbClient.*|VmbPacket.*|VmbServer.*|\
                          VmbConvert.*|EVT_VMB_.*|PFN_VMB_.*|FN_VMB_.*|P?VMB_.*|VMBUS_.*)";

/// The inline helper, bound only through `cc`-compiled wrappers.
const INLINE_FNS: &str = "VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT";

/// The interface tables, which Microsoft's header lays out with unnamed members bindgen cannot
/// handle; in WDK mode they come from the bundled header instead (see [`generate_bindings`]).
const TABLES: &[&str] = &[
    "_KMCL_CLIENT_INTERFACE_V1",
    "KMCL_CLIENT_INTERFACE_V1",
    "PKMCL_CLIENT_INTERFACE_V1",
    "_KMCL_SERVER_ONLY_METHODS",
    "KMCL_SERVER_ONLY_METHODS",
    "PKMCL_SERVER_ONLY_METHODS",
    "_KMCL_SERVER_INTERFACE_V1",
    "KMCL_SERVER_INTERFACE_V1",
    "PKMCL_SERVER_INTERFACE_V1",
];

/// Link attributes put on every extern block that declares functions: direct calls go to the
/// KMCL driver's exports through `raw-dylib`, so no import library is needed and a driver links
/// from any host. Blocks that only declare data (the interface GUIDs, which a driver defines
/// itself) get none.
const LINK_ATTRIBUTES: &str = "#[cfg_attr(all(target_os = \"windows\", feature = \"vmbkmcl\"), \
link(name = \"vmbkmcl.sys\", kind = \"raw-dylib\", modifiers = \"+verbatim\"))]\n\
#[cfg_attr(all(target_os = \"windows\", feature = \"vmbkmclr\", not(vmbus_kmcl_root_lib_override)), \
link(name = \"vmbkmclr.sys\", kind = \"raw-dylib\", modifiers = \"+verbatim\"))]\n";

/// Which headers a generation reads.
struct Headers {
    /// The crate directory, holding `wrapper.h`.
    manifest_dir: PathBuf,
    /// The bundled `include` directory.
    bundled: PathBuf,
    /// The WDK directory that shadows the bundled header, in WDK mode.
    wdk: Option<PathBuf>,
}

impl Headers {
    /// The clang arguments of this generation: include order decides which KMCL header is read.
    fn clang_args(&self, wdk_mode: bool) -> Vec<String> {
        let mut args = Vec::new();
        match (&self.wdk, wdk_mode) {
            (Some(wdk), true) => {
                args.push(format!("-I{}", wdk.display()));
                if wdk.join("wdm.h").exists() {
                    args.push("-DVMBUS_KMCL_USE_WDK".to_owned());
                }
                args.push(format!("--target={}", clang_target()));
            }
            _ => {
                // The bundled header is the same on every host; generate for one fixed target
                // so that the checked-in file does not depend on the machine that made it.
                args.push("--target=x86_64-pc-windows-msvc".to_owned());
            }
        }
        args.push(format!("-I{}", self.bundled.display()));
        args
    }
}

/// The one bindgen configuration, shared by every generation of this crate.
fn configure(headers: &Headers, wdk_mode: bool) -> bindgen::Builder {
    let mut builder = bindgen::Builder::default()
        .header(headers.manifest_dir.join("wrapper.h").display().to_string())
        .clang_args(headers.clang_args(wdk_mode))
        .use_core()
        .ctypes_prefix("::core::ffi")
        .rust_target(bindgen::RustTarget::stable(84, 0).expect("a valid Rust version"))
        .allowlist_item(KMCL_ITEMS)
        // Bound through `cc` wrappers in a separate pass, and always through the Rust twin.
        .blocklist_function(INLINE_FNS)
        .must_use_type("NTSTATUS")
        .derive_default(true)
        .layout_tests(true)
        .generate_comments(true)
        .parse_callbacks(Box::new(Callbacks));
    for ty in BASE_TYPES {
        builder = builder.blocklist_type(ty);
    }
    builder
}

/// Gives the interface-version macros the type of `INTERFACE::Version`.
#[derive(Debug)]
struct Callbacks;

impl bindgen::callbacks::ParseCallbacks for Callbacks {
    fn int_macro(&self, name: &str, _value: i64) -> Option<bindgen::callbacks::IntKind> {
        name.ends_with("_INTERFACE_VERSION_V1")
            .then_some(bindgen::callbacks::IntKind::U16)
    }
}

/// The clang target matching the Rust target being built (WDK mode only).
fn clang_target() -> String {
    let target = env::var("TARGET").expect("set by cargo");
    match target.as_str() {
        "x86_64-pc-windows-msvc" | "aarch64-pc-windows-msvc" => target,
        // On a host build (tests), parse as 64-bit Windows all the same: it is the ABI of the
        // declarations, and the layout assertions hold for it on every 64-bit host.
        t if t.starts_with("aarch64") => "aarch64-pc-windows-msvc".to_owned(),
        _ => "x86_64-pc-windows-msvc".to_owned(),
    }
}

/// The WDK's kernel-mode include directory, if one was named: `VMBUS_KMCL_WDK_INCLUDE_DIR`, or
/// the WDK's own environment (`WDKContentRoot` plus `WDKVersion`, or `WindowsSdkDir` plus
/// `WindowsSDKVersion`, as the WDK's developer prompt sets them).
fn wdk_include_dir() -> Option<PathBuf> {
    for var in [
        "VMBUS_KMCL_WDK_INCLUDE_DIR",
        "WDKContentRoot",
        "WDKVersion",
        "WindowsSdkDir",
        "WindowsSDKVersion",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    if let Some(dir) = env::var_os("VMBUS_KMCL_WDK_INCLUDE_DIR") {
        return Some(PathBuf::from(dir));
    }
    let pairs = [
        ("WDKContentRoot", "WDKVersion"),
        ("WindowsSdkDir", "WindowsSDKVersion"),
    ];
    pairs.iter().find_map(|(root, version)| {
        let root = env::var_os(root)?;
        let version = env::var(version).ok()?;
        let dir = Path::new(&root)
            .join("Include")
            .join(version.trim_end_matches(['\\', '/']))
            .join("km");
        dir.join("VmbusKernelModeClientLibApi.h")
            .exists()
            .then_some(dir)
    })
}

/// Puts [`LINK_ATTRIBUTES`] on each extern block of `text` that declares a function.
fn add_link_attributes(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4096);
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line != "unsafe extern \"C\" {" {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let mut block = vec![line];
        for inner in lines.by_ref() {
            block.push(inner);
            if inner == "}" {
                break;
            }
        }
        if block.iter().any(|l| l.trim_start().starts_with("pub fn ")) {
            out.push_str(LINK_ATTRIBUTES);
        }
        for l in block {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// The one-line doc comments of the bundled header's `#define`s, by macro name: bindgen carries
/// comments of declarations into rustdoc but not those of macros.
fn macro_docs(header: &str) -> Vec<(String, String)> {
    let mut docs = Vec::new();
    let mut pending: Option<&str> = None;
    for line in header.lines() {
        if let Some(name) = line.strip_prefix("#define ") {
            let name = name.split_whitespace().next().unwrap_or_default();
            if let Some(doc) = pending.take() {
                docs.push((name.to_owned(), doc.to_owned()));
            }
        } else {
            pending = line
                .trim()
                .strip_prefix("/**")
                .and_then(|rest| rest.strip_suffix("*/"))
                .map(str::trim_end);
        }
    }
    docs
}

/// Puts the header's macro comments on the constants bindgen made of them.
fn document_constants(text: &str, docs: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len() + 8192);
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("pub const ") {
            let name = rest.split(':').next().unwrap_or_default();
            if let Some((_, doc)) = docs.iter().find(|(n, _)| n == name) {
                out.push_str(&format!("#[doc = {doc:?}]\n"));
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Generates the bindings into `bindings`.
///
/// Outside WDK mode this is what `src/bindings.rs` holds. In WDK mode the declarations come from
/// Microsoft's header, except the interface tables, which are taken from the bundled header in a
/// second pass (their layout is proven equal to Microsoft's by the `wdk_layout` check compiled
/// below).
fn generate_bindings(headers: &Headers, bindings: &Path) {
    let wdk_mode = headers.wdk.is_some();
    let mut builder = configure(headers, wdk_mode);
    if wdk_mode {
        for table in TABLES {
            builder = builder.blocklist_type(table);
        }
    }
    let mut text = builder
        .generate()
        .expect("bindgen failed on wrapper.h")
        .to_string();
    if wdk_mode {
        let tables = TABLES
            .iter()
            .fold(configure(headers, false), |b, t| b.allowlist_type(t))
            .allowlist_recursively(false)
            .generate()
            .expect("bindgen failed on the bundled interface tables")
            .to_string();
        text.push_str("\n// Interface tables, from the bundled header (see build/generate.rs).\n");
        text.push_str(&tables);
    }
    let header = headers.bundled.join("VmbusKernelModeClientLibApi.h");
    let header = std::fs::read_to_string(&header)
        .unwrap_or_else(|e| panic!("reading {} failed: {e}", header.display()));
    let text = document_constants(&add_link_attributes(&text), &macro_docs(&header));
    std::fs::write(bindings, text)
        .unwrap_or_else(|e| panic!("writing {} failed: {e}", bindings.display()));
}

/// Binds the static-inline functions through wrappers that bindgen writes in C and `cc` compiles.
fn generate_inline_fns(headers: &Headers, out_dir: &Path) {
    let wrappers = out_dir.join("inline_fns");
    let decls = bindgen::Builder::default()
        .header(headers.manifest_dir.join("wrapper.h").display().to_string())
        .clang_args(headers.clang_args(headers.wdk.is_some()))
        .use_core()
        .ctypes_prefix("::core::ffi")
        .allowlist_function(INLINE_FNS)
        .allowlist_recursively(false)
        .wrap_static_fns(true)
        .wrap_static_fns_path(&wrappers)
        .generate()
        .expect("bindgen failed on the inline functions");
    decls
        .write_to_file(out_dir.join("inline_fns.rs"))
        .expect("writing inline_fns.rs failed");

    let mut build = cc::Build::new();
    build
        .file(wrappers.with_extension("c"))
        .include(&headers.manifest_dir)
        .include(&headers.bundled)
        .warnings(false);
    if let Some(wdk) = &headers.wdk {
        build.include(wdk);
        if wdk.join("wdm.h").exists() {
            build.define("VMBUS_KMCL_USE_WDK", None);
        }
        // Instantiate the interface GUIDs: their values live only in the WDK header.
        build.file(headers.manifest_dir.join("build").join("wdk_guids.c"));
    }
    build.compile("vmbus_kmcl_inline");
}

/// Entry point of the build script with the `bindgen` feature.
pub fn run(manifest_dir: &Path, out_dir: &Path, bindings: &Path) {
    let headers = Headers {
        manifest_dir: manifest_dir.to_path_buf(),
        bundled: manifest_dir.join("include"),
        wdk: wdk_include_dir(),
    };
    for file in [
        "wrapper.h",
        "include/VmbusKernelModeClientLibApi.h",
        "include/kmcl_base_types.h",
        "build/generate.rs",
        "build/wdk_guids.c",
    ] {
        println!(
            "cargo::rerun-if-changed={}",
            manifest_dir.join(file).display()
        );
    }
    if headers.wdk.is_some() {
        println!("cargo::rustc-cfg=vmbus_kmcl_wdk_mode");
    }
    generate_bindings(&headers, bindings);
    generate_inline_fns(&headers, out_dir);
}
