//! `pydeployer export` and `pydeployer import`: the files they read and write around
//! `port`'s mapping. Nothing is written unless everything before it succeeded.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::actions::{CommandLine, git};
use crate::cli::{CiKind, Cli, ExportArgs, Format, ImportArgs};
use crate::config::{self, STAGES_DIR};
use crate::error::{Failure, Invalid, Problem, SourceFile, exit};
use crate::exec::process;
use crate::port::{self, Ci};

fn ci(kind: CiKind) -> Ci {
    match kind {
        CiKind::Github => Ci::Github,
        CiKind::Gitlab => Ci::Gitlab,
    }
}

fn no_json(cli: &Cli, name: &str, prints: &str) -> Result<(), Failure> {
    if cli.format == Format::Json {
        return Err(
            Problem::general(format!("`{name}` prints {prints}, not JSON"))
                .with_help(format!("run `pydeployer {name}` without `--format json`"))
                .into(),
        );
    }
    Ok(())
}

pub(crate) fn export(cli: &Cli, args: &ExportArgs) -> Result<(), Failure> {
    no_json(cli, "export", "a workflow file")?;
    let pipeline = config::load(&cli.file)?;
    let target = ci(args.target);
    let exported = port::export(&pipeline, target);
    for line in &exported.renamed {
        crate::errln!("note: {line}");
    }
    for warning in &exported.warnings {
        crate::errln!("warning: {warning} (a comment in the file says so too)");
    }
    let Some(output) = &args.output else {
        crate::out!("{}", exported.text);
        return Ok(());
    };
    if args.check {
        let again = format!(
            "pydeployer export {} -o {}",
            target.name(),
            output.display()
        );
        return match fs::read(output) {
            Ok(bytes) if bytes == exported.text.as_bytes() => {
                crate::errln!("{} is up to date", output.display());
                Ok(())
            }
            Ok(_) => {
                crate::errln!(
                    "{} is stale: the pipeline changed since it was exported; run `{again}`",
                    output.display()
                );
                Err(Failure::Exit(exit::STAGE_FAILED))
            }
            Err(err) => {
                crate::errln!(
                    "{} cannot be read ({err}), so it is not up to date; run `{again}`",
                    output.display()
                );
                Err(Failure::Exit(exit::STAGE_FAILED))
            }
        };
    }
    write_replacing(output, exported.text.as_bytes()).map_err(|err| {
        Failure::Tool(miette::miette!(
            help = "check that the folder is writable; the file was left as it was",
            "cannot write {}: {err}",
            output.display()
        ))
    })?;
    crate::errln!(
        "wrote {} ({} job{})",
        output.display(),
        pipeline.stages.len(),
        if pipeline.stages.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

/// Writes `path` whole or not at all: a new file in the same folder, renamed over it.
fn write_replacing(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&folder)?;
    let mut file = tempfile::Builder::new()
        .prefix(".pydeployer-export-")
        .tempfile_in(&folder)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|err| err.error)?;
    Ok(())
}

pub(crate) fn import(cli: &Cli, args: &ImportArgs) -> Result<(), Failure> {
    no_json(cli, "import", "a report")?;
    let source = &args.workflow;
    let text = fs::read_to_string(source).map_err(|err| {
        Problem::general(format!("cannot read {}: {err}", source.display())).with_help(
            "give the path of a workflow file: .github/workflows/NAME.yml, or .gitlab-ci.yml",
        )
    })?;
    let file = SourceFile::new(source, text);
    let root = config::parse_yaml(&file)?;
    let folder = match &args.output {
        Some(dir) => dir.clone(),
        None => match cli.file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        },
    };
    let target = ci(args.source);
    let imported = match target {
        Ci::Github => {
            let has_program = |name: &str| which::which(name).is_ok();
            let machine = port::import::github::Machine {
                branch: branch_of(&folder),
                has_program: &has_program,
            };
            port::import::github::import(&file, &root, &machine)?
        }
        Ci::Gitlab => port::import::gitlab::import(&file, &root)?,
    };
    let pipeline_name = cli
        .file
        .file_name()
        .map_or_else(|| PathBuf::from("pipeline.yml"), PathBuf::from);
    let mut files = imported.files(&source.display().to_string(), target.name());
    files[0].0.clone_from(&pipeline_name);

    let problems = existing(&folder, &files);
    if !problems.is_empty() {
        return Err(Invalid { problems }.into());
    }
    check(&files)?;
    write_new(&folder, &files).map_err(|err| {
        Failure::Tool(miette::miette!(
            help = "nothing was left behind; fix the folder's permissions or free some space",
            "cannot write the pipeline in {}: {err}",
            folder.display()
        ))
    })?;

    let mut out = String::new();
    for (path, _) in &files {
        out.push_str(&format!("wrote {}\n", folder.join(path).display()));
    }
    out.push_str(&format!(
        "\n{} stage{} from {}.\n",
        imported.stages.len(),
        if imported.stages.len() == 1 { "" } else { "s" },
        source.display()
    ));
    if imported.report.is_empty() {
        out.push_str("\nEverything was carried over.\n");
    } else {
        out.push_str("\nNot carried over:\n");
        for line in &imported.report {
            out.push_str(&format!("  - {line}\n"));
        }
    }
    if !imported.notes.is_empty() {
        out.push_str("\nNotes:\n");
        for line in &imported.notes {
            out.push_str(&format!("  - {line}\n"));
        }
    }
    out.push_str("\nNext: pydeployer plan   # what `run` does\n      pydeployer run\n");
    crate::out!("{out}");
    Ok(())
}

/// The branch checked out in `folder`, when it is the top of a git work tree with a commit.
fn branch_of(folder: &Path) -> Option<String> {
    let env: BTreeMap<String, Option<String>> =
        git::pinned_environment(None, false, &BTreeMap::new());
    let git = |args: &[&str]| {
        process::capture(&CommandLine::new("git", args.iter().copied()), folder, &env)
            .ok()
            .filter(|out| !out.is_empty())
    };
    let top = git(&["rev-parse", "--show-toplevel"])?;
    if fs::canonicalize(top).ok()? != fs::canonicalize(folder).ok()? {
        return None;
    }
    git(&["rev-parse", "--verify", "--quiet", "HEAD"])?;
    git(&["symbolic-ref", "--quiet", "--short", "HEAD"])
}

/// Files that are in the way: import never overwrites.
fn existing(folder: &Path, files: &[(PathBuf, String)]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let main = folder.join(&files[0].0);
    if main.symlink_metadata().is_ok() {
        problems.push(
            Problem::general(format!(
                "{} already exists; `pydeployer import` never overwrites a file, so nothing was written",
                main.display()
            ))
            .with_help("import into another folder with `-o DIR`, or move the file away"),
        );
    }
    if let Ok(entries) = fs::read_dir(folder.join(STAGES_DIR)) {
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
            .collect();
        found.sort();
        for path in found {
            problems.push(
                Problem::general(format!(
                    "{} already exists and would join the imported pipeline, so nothing was written",
                    path.display()
                ))
                .with_help("import into another folder with `-o DIR`"),
            );
        }
    }
    problems
}

/// The files must make a valid pipeline: they are loaded from a temporary folder first.
fn check(files: &[(PathBuf, String)]) -> Result<(), Failure> {
    let scratch = tempfile::Builder::new()
        .prefix("pydeployer-import-")
        .tempdir()
        .map_err(|err| Failure::Tool(miette::miette!("cannot create a temporary folder: {err}")))?;
    write_new(scratch.path(), files).map_err(|err| {
        Failure::Tool(miette::miette!("cannot write to a temporary folder: {err}"))
    })?;
    match config::load(&scratch.path().join(&files[0].0)) {
        Ok(_) => Ok(()),
        Err(invalid) => {
            let mut problems = vec![
                Problem::general(
                    "the pipeline `import` would write does not validate, so nothing was written",
                )
                .with_help("the workflow holds something pydeployer refuses; see below"),
            ];
            problems.extend(invalid.problems);
            Err(Invalid { problems }.into())
        }
    }
}

/// Writes the files, each created anew (as `init` does), in `folder`, made if need be; on an
/// error removes what it wrote, the folder too if it made it.
fn write_new(folder: &Path, files: &[(PathBuf, String)]) -> std::io::Result<()> {
    let made_folder = !folder.exists();
    fs::create_dir_all(folder)?;
    let result = super::init::write(folder, files);
    if result.is_err() && made_folder {
        let _ = fs::remove_dir(folder);
    }
    result
}
