//! `hoist plugin new NAME --lang rust|python|js`: scaffolds a plugin project from the
//! templates in `plugins/templates/` and the SDKs' examples (compiled into the binary): the
//! hook (trino-drain's logic), its build recipe, a context file for `hoist plugin run` and a
//! README.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// Languages with a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with `hoist-sdk` (plugins/sdk).
    Rust,
    /// Python with `hoist-sdk` (plugins/python) and componentize-py.
    Python,
    /// JavaScript with `hoist-sdk` (plugins/js) and componentize-js.
    Js,
}

/// Arguments of `hoist plugin new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The plugin's name: lowercase letters, digits and '-' (also the directory's name).
    name: String,
    /// The language of the template.
    #[arg(long, value_enum, default_value = "rust")]
    lang: Lang,
    /// Where to create the project (default: ./NAME). It must not exist or be empty.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Depend on the SDK at this path (a checkout's `plugins/sdk`, `plugins/python` or
    /// `plugins/js`) instead of by git. Required for js (npm cannot take a package from a
    /// repository's subdirectory).
    #[arg(long)]
    sdk_path: Option<PathBuf>,
}

/// The git dependency of the Rust SDK when no path is given.
const SDK_GIT: &str = r#"{ git = "https://github.com/hoist-dev/hoist", package = "hoist-sdk" }"#;
/// The pip requirement of the Python SDK when no path is given.
const PYTHON_SDK_GIT: &str =
    "hoist-sdk @ git+https://github.com/hoist-dev/hoist#subdirectory=plugins/python";

const CONTEXT: &str = include_str!("../../../../plugins/templates/context.json");

/// (path in the project, template text) of each language.
fn files(lang: Lang) -> &'static [(&'static str, &'static str)] {
    match lang {
        Lang::Rust => &[
            (
                "Cargo.toml",
                include_str!("../../../../plugins/templates/rust/Cargo.toml.tmpl"),
            ),
            (
                "src/lib.rs",
                include_str!("../../../../plugins/templates/rust/src/lib.rs"),
            ),
            ("context.json", CONTEXT),
            (
                "README.md",
                include_str!("../../../../plugins/templates/rust/README.md"),
            ),
            (".gitignore", "/target\n"),
        ],
        Lang::Python => &[
            (
                "app.py",
                include_str!("../../../../plugins/python/examples/trino_drain/app.py"),
            ),
            (
                "requirements.txt",
                include_str!("../../../../plugins/templates/python/requirements.txt"),
            ),
            ("context.json", CONTEXT),
            (
                "README.md",
                include_str!("../../../../plugins/templates/python/README.md"),
            ),
            (".gitignore", "/.venv\n*.wasm\n__pycache__/\n"),
        ],
        Lang::Js => &[
            (
                "app.js",
                include_str!("../../../../plugins/js/examples/trino-drain/app.js"),
            ),
            (
                "package.json",
                include_str!("../../../../plugins/templates/js/package.json"),
            ),
            ("context.json", CONTEXT),
            (
                "README.md",
                include_str!("../../../../plugins/templates/js/README.md"),
            ),
            (".gitignore", "/node_modules\n*.wasm\n"),
            // A `file:` SDK is installed as a copy with its dependencies, not as a link whose
            // build script could not find componentize-js (npm installs no dependencies of a
            // linked folder).
            (".npmrc", "install-links=true\n"),
        ],
    }
}

/// Whether `name` can name a plugin (and a crate, with '_' for '-').
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: a plugin name is 1–63 lowercase letters, digits and '-', starting with a letter and not ending with '-'"
        ))
    }
}

/// The template text with its placeholders filled.
fn render(template: &str, name: &str, sdk: &str) -> String {
    template
        .replace("{{name}}", name)
        .replace("{{crate}}", &name.replace('-', "_"))
        .replace("{{sdk}}", sdk)
}

pub fn run(args: &NewArgs) -> anyhow::Result<()> {
    check_name(&args.name).map_err(anyhow::Error::msg)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!("{} exists and is not empty", dir.display());
    }
    let sdk = match (&args.sdk_path, args.lang) {
        (None, Lang::Rust) => SDK_GIT.to_owned(),
        (None, Lang::Python) => PYTHON_SDK_GIT.to_owned(),
        (None, Lang::Js) => bail!(
            "--lang js needs --sdk-path (a hoist checkout's plugins/js): npm cannot take a package from a repository's subdirectory"
        ),
        (Some(path), lang) => {
            let path = std::fs::canonicalize(path)
                .with_context(|| format!("--sdk-path {}", path.display()))?;
            let manifest = match lang {
                Lang::Rust => "Cargo.toml",
                Lang::Python => "pyproject.toml",
                Lang::Js => "package.json",
            };
            if !path.join(manifest).is_file() {
                bail!("--sdk-path {}: no {manifest} there", path.display());
            }
            let shown = path.display().to_string();
            match lang {
                Lang::Rust => format!("{{ path = {shown:?} }}"),
                Lang::Python => format!("hoist-sdk @ file://{shown}"),
                Lang::Js => format!("file:{shown}"),
            }
        }
    };
    for (file, template) in files(args.lang) {
        write(&dir.join(file), &render(template, &args.name, &sdk))?;
    }
    println!(
        "created {} ({:?} plugin {})",
        dir.display(),
        args.lang,
        args.name
    );
    println!("next: cd {} && cat README.md", dir.display());
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_crate_and_label_friendly() {
        for good in ["drain", "my-drain", "trino2"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "Drain",
            "my_drain",
            "-drain",
            "drain-",
            "2drain",
            &"a".repeat(64),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_placeholder_is_filled() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            for (file, template) in files(lang) {
                let text = render(template, "my-drain", SDK_GIT);
                assert!(!text.contains("{{"), "{lang:?} {file}: {text}");
            }
        }
        let cargo = render(files(Lang::Rust)[0].1, "my-drain", SDK_GIT);
        assert!(cargo.contains("name = \"my-drain\""), "{cargo}");
        assert!(cargo.contains("hoist-sdk = { git = "), "{cargo}");
    }
}
