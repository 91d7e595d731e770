//! Hostile components a Rust guest cannot be: hand-written core modules (`tests/hostile/*.wat`)
//! wrapped into components of `hoist:hooks/hook` by wit-component, with the WIT from `wit/`
//! (or an edited copy of it, for components whose types differ), with more core modules
//! added beside the plugin's.

use std::path::{Path, PathBuf};

use wasm_encoder::{
    CodeSection, ComponentSection as _, ComponentSectionId, Function, FunctionSection,
    InstanceSection, Module, ModuleArg, RawSection, TypeSection,
};
use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::Resolve;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile")
}

/// The core module of `tests/hostile/<name>.wat`.
pub fn core_module(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(format!("{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A component of `hoist:hooks/hook` from the core module `tests/hostile/<name>.wat`.
pub fn component(name: &str) -> Vec<u8> {
    component_with_wit(name, ToString::to_string)
}

/// Like [`component`], with the WIT of `wit/` edited by `edit` (applied to every file's
/// text): a component whose exports have other types than the contract's, under the same
/// names.
pub fn component_with_wit(name: &str, edit: impl Fn(&str) -> String) -> Vec<u8> {
    let wit = tempfile::tempdir().unwrap();
    copy_edited(&super::repo_root().join("wit"), wit.path(), &edit);
    let mut resolve = Resolve::default();
    let (package, _) = resolve.push_dir(wit.path()).unwrap();
    let world = resolve.select_world(&[package], Some("hook")).unwrap();
    let mut module = core_module(name);
    wit_component::embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8)
        .unwrap();
    ComponentEncoder::default()
        .module(&module)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap_or_else(|e| panic!("wrapping {name}.wat: {e:?}"))
}

fn copy_edited(from: &Path, to: &Path, edit: &impl Fn(&str) -> String) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_edited(&entry.path(), &target, edit);
        } else {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            std::fs::write(target, edit(&text)).unwrap();
        }
    }
}

/// `plugin` (a component) with `extra` core modules added and instantiated beside its own:
/// every core instance is part of each call's store (each with its own memory, for example).
/// The sections are appended to the component, whose own items keep their indices.
pub fn with_extra_modules(plugin: &[u8], extra: &[Vec<u8>]) -> Vec<u8> {
    let first = u32::try_from(top_level_modules(plugin)).unwrap();
    let mut out = plugin.to_vec();
    let mut core = InstanceSection::new();
    for (i, module) in extra.iter().enumerate() {
        RawSection {
            id: ComponentSectionId::CoreModule.into(),
            data: module,
        }
        .append_to_component(&mut out);
        core.instantiate(
            first + u32::try_from(i).unwrap(),
            std::iter::empty::<(&str, ModuleArg)>(),
        );
    }
    core.append_to_component(&mut out);
    out
}

/// How many core modules a component defines at its top level (not in nested components).
fn top_level_modules(component: &[u8]) -> usize {
    let mut depth = 0usize;
    let mut modules = 0;
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        match payload.unwrap() {
            wasmparser::Payload::ModuleSection { .. } => {
                if depth == 1 {
                    modules += 1;
                }
                depth += 1;
            }
            wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::Version { .. } if depth == 0 => depth = 1,
            wasmparser::Payload::End(_) => depth -= 1,
            _ => {}
        }
    }
    modules
}

/// A core module with one function of `depth` nested empty blocks: three bytes a level, a
/// few MiB that compile for minutes (cranelift's time grows faster than the depth).
pub fn nested_blocks(depth: usize) -> Vec<u8> {
    let mut module = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], []);
    module.section(&types);
    let mut functions = FunctionSection::new();
    functions.function(0);
    module.section(&functions);
    let mut body = Vec::with_capacity(depth * 3 + 1);
    for _ in 0..depth {
        body.extend_from_slice(&[0x02, 0x40]); // block (empty type)
    }
    body.resize(body.len() + depth + 1, 0x0b); // the blocks' ends and the function's
    let mut function = Function::new([]);
    function.raw(body);
    let mut code = CodeSection::new();
    code.function(&function);
    module.section(&code);
    module.finish()
}

/// The compile bomb: the plugin of `hooks.wat` with a module of `depth` nested blocks beside
/// it (compiled with the component, never called).
pub fn compile_bomb(depth: usize) -> Vec<u8> {
    with_extra_modules(&component("hooks"), &[nested_blocks(depth)])
}
