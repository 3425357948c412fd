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

/// The KMCL header's file name, the same in the WDK and in the bundled `include` directory.
const KMCL_HEADER: &str = "VmbusKernelModeClientLibApi.h";

/// Which headers a generation reads.
struct Headers {
    /// The crate directory, holding `wrapper.h`.
    manifest_dir: PathBuf,
    /// The bundled `include` directory.
    bundled: PathBuf,
    /// The WDK that shadows the bundled header, in WDK mode.
    wdk: Option<Wdk>,
}

/// WDK mode: where Microsoft's header is found, and how to compile it.
struct Wdk {
    /// clang arguments for bindgen that put the WDK ahead of the bundled directory: include
    /// directories, definitions and flags.
    bindgen_args: Vec<String>,
    /// The same include directories for `cc`, in search order.
    cc_include_dirs: Vec<PathBuf>,
    /// The same preprocessor definitions for `cc`.
    cc_defines: Vec<(String, Option<String>)>,
    /// Configured by wdk-build, whose builders do not add the host's detected system include
    /// paths (they can shadow the eWDK's); the generation follows it there too.
    from_wdk_build: bool,
}

impl Wdk {
    /// WDK mode from one include directory (`VMBUS_KMCL_WDK_INCLUDE_DIR`, or the km directory
    /// found through the WDK's own environment), with no other configuration.
    fn from_dir(dir: PathBuf) -> Self {
        Self {
            bindgen_args: vec![format!("-I{}", dir.display())],
            cc_include_dirs: vec![dir],
            cc_defines: Vec::new(),
            from_wdk_build: false,
        }
    }

    /// Whether the WDK's base header is on the include path: then `wrapper.h` takes the base
    /// types from `<wdm.h>` rather than from the bundled `kmcl_base_types.h`.
    fn has_wdm_h(&self) -> bool {
        self.cc_include_dirs
            .iter()
            .any(|d| d.join("wdm.h").is_file())
    }

    /// The KMCL header that `#include <VmbusKernelModeClientLibApi.h>` resolves to.
    fn kmcl_header(&self) -> Option<PathBuf> {
        self.cc_include_dirs
            .iter()
            .map(|d| d.join(KMCL_HEADER))
            .find(|h| h.is_file())
    }
}

impl Headers {
    /// The clang arguments of this generation: include order decides which KMCL header is read.
    fn clang_args(&self, wdk_mode: bool) -> Vec<String> {
        let mut args = Vec::new();
        match (&self.wdk, wdk_mode) {
            (Some(wdk), true) => {
                args.extend(wdk.bindgen_args.iter().cloned());
                // Microsoft's interface tables embed typedef'd structures as unnamed members.
                args.push("-fms-extensions".to_owned());
                if wdk.has_wdm_h() {
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
    configure_without_allowlist(headers, wdk_mode).allowlist_item(KMCL_ITEMS)
}

/// [`configure`] without its allowlist, for the pass that emits only the interface tables.
fn configure_without_allowlist(headers: &Headers, wdk_mode: bool) -> bindgen::Builder {
    let mut builder = bindgen::Builder::default()
        .header(headers.manifest_dir.join("wrapper.h").display().to_string())
        .clang_args(headers.clang_args(wdk_mode))
        .use_core()
        .ctypes_prefix("::core::ffi")
        .rust_target(bindgen::RustTarget::stable(84, 0).expect("a valid Rust version"))
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
    if wdk_mode && headers.wdk.as_ref().is_some_and(|wdk| wdk.from_wdk_build) {
        builder = builder.detect_include_paths(false);
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

/// WDK mode, if a WDK was named.
///
/// * `VMBUS_KMCL_WDK_INCLUDE_DIR`: a directory holding `VmbusKernelModeClientLibApi.h` (an absolute
///   path; the WDK's `Include/<version>/km`, or a stand-in), searched first. It works on any
///   host and needs nothing else.
/// * On a Windows host with the `wdk-build` feature: wdk-build's configuration (the include
///   paths, definitions and clang flags wdk-sys uses), behind the explicit directory if one is
///   also set.
/// * Otherwise the WDK's own environment: `WDKContentRoot` plus `WDKVersion`, or `WindowsSdkDir`
///   plus `WindowsSDKVersion`, as the WDK's developer prompt sets them.
fn wdk_setup() -> Option<Wdk> {
    for var in [
        "VMBUS_KMCL_WDK_INCLUDE_DIR",
        "WDKContentRoot",
        "WDKVersion",
        "WindowsSdkDir",
        "WindowsSDKVersion",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let explicit = env::var_os("VMBUS_KMCL_WDK_INCLUDE_DIR").map(|dir| {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join(KMCL_HEADER).is_file(),
            "VMBUS_KMCL_WDK_INCLUDE_DIR={} does not hold {KMCL_HEADER} (give an absolute path to \
             the WDK's Include/<version>/km directory)",
            dir.display()
        );
        dir
    });

    #[cfg(all(windows, feature = "wdk-build"))]
    {
        Some(wdk_build_config::wdk(explicit))
    }

    #[cfg(not(all(windows, feature = "wdk-build")))]
    {
        if env::var_os("CARGO_FEATURE_WDK_BUILD").is_some() {
            println!(
                "cargo::warning=the `wdk-build` feature of vmbus-kmcl-sys only has an effect on \
                 Windows hosts; use VMBUS_KMCL_WDK_INCLUDE_DIR elsewhere"
            );
        }
        explicit
            .or_else(wdk_dir_from_environment)
            .map(Wdk::from_dir)
    }
}

/// The WDK's km directory, from the environment the WDK's developer prompt sets.
#[cfg_attr(
    all(windows, feature = "wdk-build"),
    allow(dead_code, reason = "wdk-build finds the WDK itself")
)]
fn wdk_dir_from_environment() -> Option<PathBuf> {
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
        dir.join(KMCL_HEADER).is_file().then_some(dir)
    })
}

/// WDK mode through wdk-build, on Windows hosts with the `wdk-build` feature, so that the KMCL
/// header is parsed exactly as wdk-sys parses the WDK.
///
/// UNTESTED in this repository's CI (wdk-build only builds on a Windows host with a WDK).
#[cfg(all(windows, feature = "wdk-build"))]
mod wdk_build_config {
    use std::path::PathBuf;

    use wdk_build::metadata::TryFromCargoMetadataError;
    use wdk_build::{BuilderExt, Config, ConfigError};

    use super::Wdk;

    /// The configuration wdk-sys would use: the `[package.metadata.wdk]` of the top-level
    /// manifest, or wdk-build's default (WDM) when the workspace has none.
    fn config() -> Config {
        match Config::from_env_auto() {
            Ok(config) => config,
            Err(ConfigError::TryFromCargoMetadataError(
                TryFromCargoMetadataError::NoWdkConfigurationsDetected,
            )) => Config::new(),
            Err(e) => panic!("wdk-build could not read the WDK configuration: {e}"),
        }
    }

    /// The clang arguments that `BuilderExt::wdk_default` gives wdk-sys's bindgen builder.
    ///
    /// wdk-build 0.6 configures a bindgen 0.73 `Builder`, a different type from this crate's
    /// bindgen 0.72 one, so its builder cannot be extended directly; its clang arguments (what
    /// decides how the headers are parsed) are taken over from its command line instead. If
    /// `wdk_default` fails (it looks wdk-build up with `cargo metadata`, which may not list an
    /// optional dependency), the same arguments are assembled from the `Config`, as
    /// `wdk_default` does.
    fn wdk_default_clang_args(config: &Config) -> Vec<String> {
        match <bindgen_wdk_build::Builder as BuilderExt>::wdk_default(config) {
            Ok(builder) => builder
                .command_line_flags()
                .into_iter()
                .skip_while(|arg| arg != "--")
                .skip(1)
                .collect(),
            Err(e) => {
                println!(
                    "cargo::warning=wdk-build's wdk_default failed ({e}); using the include \
                     paths, definitions and flags of its Config directly"
                );
                let includes = config
                    .include_paths()
                    .unwrap_or_else(|e| panic!("wdk-build found no WDK include paths: {e}"))
                    .map(|dir| format!("--include-directory={}", dir.display()));
                let defines = config
                    .preprocessor_definitions()
                    .map(|(key, value)| match value {
                        Some(value) => format!("--define-macro={key}={value}"),
                        None => format!("--define-macro={key}"),
                    });
                includes
                    .chain(defines)
                    .chain(Config::wdk_bindgen_compiler_flags())
                    .collect()
            }
        }
    }

    /// WDK mode configured by wdk-build; `explicit` (`VMBUS_KMCL_WDK_INCLUDE_DIR`) still comes
    /// first on both include paths.
    pub(super) fn wdk(explicit: Option<PathBuf>) -> Wdk {
        let config = config();
        let mut cc_include_dirs: Vec<PathBuf> = explicit.iter().cloned().collect();
        cc_include_dirs.extend(
            config
                .include_paths()
                .unwrap_or_else(|e| panic!("wdk-build found no WDK include paths: {e}")),
        );
        let mut bindgen_args: Vec<String> = explicit
            .iter()
            .map(|dir| format!("-I{}", dir.display()))
            .collect();
        bindgen_args.extend(wdk_default_clang_args(&config));
        Wdk {
            bindgen_args,
            cc_include_dirs,
            cc_defines: config.preprocessor_definitions().collect(),
            from_wdk_build: true,
        }
    }
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
/// second pass; their layout is proven equal to Microsoft's by the `wdk_layout` check (see
/// [`write_layout_lists`]). Returns the text of that second pass in WDK mode.
fn generate_bindings(headers: &Headers, bindings: &Path) -> Option<String> {
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
    let tables = wdk_mode.then(|| {
        TABLES
            .iter()
            .fold(configure_without_allowlist(headers, false), |b, t| {
                b.allowlist_type(t)
            })
            .allowlist_recursively(false)
            .generate()
            .expect("bindgen failed on the bundled interface tables")
            .to_string()
    });
    if let Some(tables) = &tables {
        text.push_str("\n// Interface tables, from the bundled header (see build/generate.rs).\n");
        text.push_str(tables);
    }
    // The bundled header documents every macro; in WDK mode the WDK's header may add some.
    let wdk_header = headers.wdk.as_ref().and_then(Wdk::kmcl_header);
    let mut docs = Vec::new();
    for header in std::iter::once(headers.bundled.join(KMCL_HEADER)).chain(wdk_header) {
        let text = std::fs::read_to_string(&header)
            .unwrap_or_else(|e| panic!("reading {} failed: {e}", header.display()));
        docs.extend(macro_docs(&text));
    }
    let text = document_constants(&add_link_attributes(&text), &docs);
    std::fs::write(bindings, text)
        .unwrap_or_else(|e| panic!("writing {} failed: {e}", bindings.display()));
    tables
}

/// The members of the base type `INTERFACE` (fixed by the kernel headers, defined by hand in
/// the crate's `base` module, so absent from bindgen's output).
const INTERFACE_FIELDS: &[&str] = &[
    "Size",
    "Version",
    "Context",
    "InterfaceReference",
    "InterfaceDereference",
];

/// The interface tables whose layouts WDK mode compares with Microsoft's.
const LAYOUT_TABLES: &[&str] = &[
    "KMCL_CLIENT_INTERFACE_V1",
    "KMCL_SERVER_ONLY_METHODS",
    "KMCL_SERVER_INTERFACE_V1",
];

/// The `(name, type)` of each field of the structure `name` in bindgen's output `text`. A field
/// declaration may be wrapped over several lines; attributes (doc comments) take one line each.
fn struct_fields(text: &str, name: &str) -> Vec<(String, String)> {
    let opening = format!("pub struct {name} {{");
    let body = text
        .lines()
        .skip_while(|line| *line != opening)
        .skip(1)
        .take_while(|line| *line != "}")
        .map(str::trim)
        .filter(|line| !line.starts_with("#["));
    let mut fields = Vec::new();
    let mut declaration = String::new();
    for line in body {
        declaration.push_str(line);
        if let Some(complete) = declaration.strip_suffix(',') {
            let (field, ty) = complete
                .strip_prefix("pub ")
                .and_then(|d| d.split_once(':'))
                .unwrap_or_else(|| panic!("unexpected field `{complete}` in `{name}`"));
            fields.push((field.trim().to_owned(), ty.trim().to_owned()));
            declaration.clear();
        }
    }
    assert!(
        !fields.is_empty() && declaration.is_empty(),
        "could not read the fields of `{name}` in the table bindings"
    );
    fields
}

/// One leaf field of an interface table, as the layout check sees it.
struct LayoutField {
    /// The member name in Microsoft's header, where embedded structures are unnamed members, so
    /// their fields are reached directly (`Size`, not `InterfaceHeader.Size`).
    c_member: String,
    /// The field path in the Rust structure (`InterfaceHeader.Size`).
    rust_path: String,
}

/// The leaf fields of the table `table` (a typedef name), in declaration order: embedded
/// `INTERFACE`s and tables are flattened, as Microsoft's unnamed members are.
fn layout_fields(tables: &str, table: &str, prefix: &str, out: &mut Vec<LayoutField>) {
    for (field, ty) in struct_fields(tables, &format!("_{table}")) {
        let path = format!("{prefix}{field}");
        let ty = ty.as_str();
        if ty == "INTERFACE" {
            out.extend(INTERFACE_FIELDS.iter().map(|member| LayoutField {
                c_member: (*member).to_owned(),
                rust_path: format!("{path}.{member}"),
            }));
        } else if LAYOUT_TABLES.contains(&ty) {
            layout_fields(tables, ty, &format!("{path}."), out);
        } else {
            out.push(LayoutField {
                c_member: field,
                rust_path: path,
            });
        }
    }
}

/// WDK mode: writes the field lists of the layout check, derived from the bundled tables (the
/// Rust structures): `wdk_layout_fields.h`, read by `build/wdk_layout.c`, which asks the C
/// compiler for `sizeof`/`offsetof` of Microsoft's structures, and `wdk_layout_fields.rs`, read
/// by `tests/wdk_mode.rs`, which computes the same for the Rust structures. A member missing
/// from Microsoft's header fails the C build; an extra one changes its size.
fn write_layout_lists(tables: &str, out_dir: &Path) {
    let mut c = String::from("/* Generated by vmbus-kmcl-sys's build/generate.rs. */\n");
    let mut rust = String::from("// Generated by vmbus-kmcl-sys's build/generate.rs.\n[\n");
    for table in LAYOUT_TABLES {
        c.push_str(&format!("VMBUS_KMCL_LAYOUT_TABLE({table})\n"));
        rust.push_str(&format!("    layout_table!({table}),\n"));
        let mut fields = Vec::new();
        layout_fields(tables, table, "", &mut fields);
        for LayoutField {
            c_member,
            rust_path,
        } in fields
        {
            c.push_str(&format!(
                "VMBUS_KMCL_LAYOUT_FIELD({table}, {c_member}, \"{rust_path}\")\n"
            ));
            rust.push_str(&format!("    layout_field!({table}, {rust_path}),\n"));
        }
    }
    rust.push_str("]\n");
    for (name, text) in [("wdk_layout_fields.h", c), ("wdk_layout_fields.rs", rust)] {
        std::fs::write(out_dir.join(name), text)
            .unwrap_or_else(|e| panic!("writing {name} failed: {e}"));
    }
}

/// Binds the static-inline functions through wrappers that bindgen writes in C and `cc` compiles;
/// in WDK mode also compiles the GUID definitions and the layout report of Microsoft's tables.
fn generate_c(headers: &Headers, out_dir: &Path) {
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
        .detect_include_paths(!headers.wdk.as_ref().is_some_and(|wdk| wdk.from_wdk_build))
        .generate()
        .expect("bindgen failed on the inline functions");
    decls
        .write_to_file(out_dir.join("inline_fns.rs"))
        .expect("writing inline_fns.rs failed");

    let mut build = cc::Build::new();
    build
        .file(wrappers.with_extension("c"))
        .include(&headers.manifest_dir)
        .warnings(false);
    if let Some(wdk) = &headers.wdk {
        // Same search order as bindgen's: the WDK ahead of the bundled directory.
        build.includes(&wdk.cc_include_dirs);
        for (key, value) in &wdk.cc_defines {
            build.define(key, value.as_deref());
        }
        if wdk.has_wdm_h() {
            build.define("VMBUS_KMCL_USE_WDK", None);
        }
        // Microsoft's tables embed typedef'd structures as unnamed members: MSVC accepts them
        // as they are, gcc and clang with this flag.
        if !build.get_compiler().is_like_msvc() {
            build.flag("-fms-extensions");
        }
        let sources = headers.manifest_dir.join("build");
        // The interface GUIDs: their values live only in the WDK header.
        build.file(sources.join("wdk_guids.c"));
        // The layouts of Microsoft's tables, for the comparison in tests/wdk_mode.rs; the field
        // lists come from `write_layout_lists`.
        build.file(sources.join("wdk_layout.c")).include(out_dir);
    }
    build.include(&headers.bundled);
    build.compile("vmbus_kmcl_inline");
}

/// Entry point of the build script with the `bindgen` feature.
pub fn run(manifest_dir: &Path, out_dir: &Path, bindings: &Path) {
    let headers = Headers {
        manifest_dir: manifest_dir.to_path_buf(),
        bundled: manifest_dir.join("include"),
        wdk: wdk_setup(),
    };
    for file in [
        "wrapper.h",
        "include/VmbusKernelModeClientLibApi.h",
        "include/kmcl_base_types.h",
        "build/generate.rs",
        "build/wdk_guids.c",
        "build/wdk_layout.c",
    ] {
        println!(
            "cargo::rerun-if-changed={}",
            manifest_dir.join(file).display()
        );
    }
    if let Some(wdk) = &headers.wdk {
        println!("cargo::rustc-cfg=vmbus_kmcl_wdk_mode");
        let header = wdk
            .kmcl_header()
            .unwrap_or_else(|| panic!("WDK mode: no {KMCL_HEADER} in {:?}", wdk.cc_include_dirs));
        println!("cargo::rerun-if-changed={}", header.display());
    }
    let tables = generate_bindings(&headers, bindings);
    if let Some(tables) = tables {
        write_layout_lists(&tables, out_dir);
    }
    generate_c(&headers, out_dir);
}
