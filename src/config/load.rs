//! Finding and parsing the pipeline's files: `pipeline.yml` and `stages.d/*.yml|*.yaml`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::config::raw::{Node, Span, Value};
use crate::error::{Problem, SourceFile};

/// The folder of drop-in stage files, next to `pipeline.yml`.
pub const STAGES_DIR: &str = "stages.d";

/// The default pipeline file, found as git and cargo find theirs: in the current folder, else
/// the nearest folder above that has one (as a relative path: `../../pipeline.yml`). `None` when
/// no folder up to the root has one.
pub fn find_upward(name: &Path) -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    let mut up = PathBuf::new();
    for dir in cwd.ancestors() {
        if dir.join(name).is_file() {
            return Some(up.join(name));
        }
        up.push("..");
    }
    None
}

/// One parsed file, ready for validation.
pub(crate) struct Parsed {
    pub(crate) file: SourceFile,
    pub(crate) root: Node,
}

/// Reads and parses the pipeline file and every stage file; a file that cannot be read or
/// parsed adds a problem and the others are still parsed, so every syntax error shows at once.
pub(crate) fn read_all(
    pipeline_file: &Path,
    problems: &mut Vec<Problem>,
) -> (Option<Parsed>, Vec<Parsed>) {
    let main = read_one(pipeline_file, problems);
    let dir = pipeline_file
        .parent()
        .unwrap_or(Path::new("."))
        .join(STAGES_DIR);
    let stage_files = match stage_files(&dir) {
        Ok((files, not_files)) => {
            for (path, what) in not_files {
                // A stage file that silently went missing would drop its stages (a deploy).
                problems.push(
                    Problem::general(format!("{} is not a file: {what}", path.display()))
                    .with_help(format!(
                        "every *.yml and *.yaml in {STAGES_DIR}/ is a stage file: fix the link, or rename it"
                    )),
                );
            }
            files
        }
        Err(err) => {
            problems.push(Problem::general(format!(
                "cannot read {}: {err}",
                dir.display()
            )));
            Vec::new()
        }
    };
    let stages = stage_files
        .iter()
        .filter_map(|path| read_one(path, problems))
        .collect();
    (main, stages)
}

/// A path named like a stage file that is not one, and what it is.
type NotAFile = (PathBuf, &'static str);

/// What a stage file path that is not a regular file is, for the error.
fn what_is(path: &Path) -> &'static str {
    match (fs::symlink_metadata(path), fs::metadata(path)) {
        (Ok(link), Err(_)) if link.file_type().is_symlink() => "a broken symbolic link",
        (_, Ok(meta)) => crate::files::kind_of(meta.file_type()),
        _ => "not readable",
    }
}

/// `*.yml` and `*.yaml` files in `dir`, sorted by file name (nothing when there is no `dir`),
/// and the entries named so that are not files (a broken link, a folder, a FIFO), with what
/// they are. Hidden names (`.#10.yml`, Emacs's lock link; `.10.yml.swp`-like editor files
/// and dotfiles) are not stage files.
fn stage_files(dir: &Path) -> std::io::Result<(Vec<PathBuf>, Vec<NotAFile>)> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Ok((Vec::new(), Vec::new()));
        }
        Err(err) => return Err(err),
    };
    let (mut files, mut not_files) = (Vec::new(), Vec::new());
    for entry in entries {
        let path = entry?.path();
        let is_yaml = path
            .extension()
            .is_some_and(|ext| ext == "yml" || ext == "yaml");
        let hidden = path
            .file_name()
            .is_some_and(|name| name.as_encoded_bytes().starts_with(b"."));
        if !is_yaml || hidden {
            continue;
        }
        if path.is_file() {
            files.push(path);
        } else {
            let what = what_is(&path);
            not_files.push((path, what));
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    not_files.sort();
    Ok((files, not_files))
}

/// Parses a YAML file that is not part of the pipeline (a workflow to import), with the same
/// parser settings and syntax errors as the pipeline's own files.
pub(crate) fn parse_yaml(file: &SourceFile) -> Result<Node, crate::error::Invalid> {
    parse(&file.text).map_err(|err| syntax_problem(file, &err).into())
}

fn read_one(path: &Path, problems: &mut Vec<Problem>) -> Option<Parsed> {
    let text = match crate::files::read_regular(path, MAX_FILE).and_then(|bytes| {
        String::from_utf8(bytes).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8 text")
        })
    }) {
        Ok(text) => text,
        Err(err) => {
            let help = if err.kind() == std::io::ErrorKind::NotFound {
                "no pipeline.yml here or in any folder above: `pydeployer init` writes one, or pass the file with -f PATH"
            } else {
                "pass the pipeline file with -f PATH, or run where pipeline.yml is"
            };
            problems.push(
                Problem::general(format!("cannot read {}: {err}", path.display())).with_help(help),
            );
            return None;
        }
    };
    let file = SourceFile::new(path, text);
    match parse(&file.text) {
        Ok(root) => {
            // A NUL comes in as a byte or through an escape (`"\0"`, `"\x00"`): without
            // either in the text, there is no need to walk the tree.
            if memchr::memchr2(b'\0', b'\\', file.text.as_bytes()).is_some() {
                nul_bytes(&file, &root, problems);
            }
            Some(Parsed { file, root })
        }
        Err(err) => {
            problems.push(syntax_problem(&file, &err));
            None
        }
    }
}

/// The largest pipeline or stage file read (the parser reads at most 16 MiB of values).
const MAX_FILE: u64 = 32 << 20;

/// A NUL byte in any key or text of the file: no program, argument, variable or file name can
/// hold one, so it is refused here, where its place is known, rather than when a stage starts.
fn nul_bytes(file: &SourceFile, node: &Node, problems: &mut Vec<Problem>) {
    let refuse = |span: Span, problems: &mut Vec<Problem>| {
        problems.push(
            Problem::at(
                file,
                span,
                "a NUL byte (\\0) cannot be passed to a program, an environment variable or a file name",
                "holds a NUL byte",
            )
            .with_help("remove the \\0 (or \\x00) from the value"),
        );
    };
    match &node.value {
        Value::Str(text) if text.contains('\0') => refuse(node.span, problems),
        Value::Seq(items) => {
            for item in items {
                nul_bytes(file, item, problems);
            }
        }
        Value::Map(entries) => {
            for (key, value) in entries {
                if key.name.contains('\0') {
                    refuse(key.span, problems);
                }
                nul_bytes(file, value, problems);
            }
        }
        _ => {}
    }
}

/// Limits far above any real pipeline and far below what would hurt: an alias bomb or a
/// thousand-deep nesting is refused at once instead of being expanded.
///
/// Booleans are YAML 1.2's: only `true` and `false`. YAML 1.1 also read `yes`, `no`, `on`,
/// `off`, `y` and `n` as booleans, which turned `COUNTRY: NO` into `false` in a stage's
/// environment (the "Norway problem"); here they stay text, as GitHub Actions reads them.
fn parse(text: &str) -> Result<Node, serde_saphyr::Error> {
    let options = serde_saphyr::options! {
        strict_booleans: true,
        // A key given twice reaches the validator, which shows both places (a stage declared
        // twice in one file, as across files).
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        // `.inf` and `.nan` are read as text: refused where a number is due, passed as they
        // are in `env:`.
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::AsString,
        budget: serde_saphyr::budget! {
            max_depth: 32,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_nodes: 200_000,
            max_documents: 1,
            max_total_scalar_bytes: 16 * 1024 * 1024,
            max_recorded_anchor_bytes: 1024 * 1024,
        },
    };
    serde_saphyr::from_str_with_options(text, options)
}

fn syntax_problem(file: &SourceFile, err: &serde_saphyr::Error) -> Problem {
    let plain = err.without_snippet();
    let message = first_line(&plain.to_string());
    match plain.location() {
        Some(location) => {
            let mut span = Span::from_location(&location);
            if span.offset == 0 && (span.line, span.column) != (1, 1) {
                // Some parser errors carry a line and column but no byte offset.
                span.offset = offset_of(&file.text, span.line, span.column);
                span.len = 0;
            }
            if message.contains("budget") {
                // Not a syntax error, and no snippet: the place may be a line of megabytes.
                return Problem::general(format!(
                    "{}:{}: the file is too large or too deep for pydeployer: {message}",
                    file.name.display(),
                    span.line
                ))
                .with_help(
                    "pydeployer reads at most 200,000 values, 32 levels of nesting, 1,000 \
                     aliases and 16 MiB of text per file: split the stages into files in \
                     stages.d/, or drop the aliases that multiply them",
                );
            }
            let at = point_at(&file.text, span);
            Problem::at(file, at, format!("invalid YAML: {message}"), "here").with_help(
                "fix the YAML syntax; a YAML linter or editor plugin shows the structure",
            )
        }
        None => Problem::general(format!("{}: invalid YAML: {message}", file.name.display())),
    }
}

/// The byte offset of 1-based `line` and `column` (in characters) in `text`, or its end.
fn offset_of(text: &str, line: u64, column: u64) -> usize {
    let skip = usize::try_from(line.saturating_sub(1)).unwrap_or(usize::MAX);
    let Some(start) = std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .nth(skip)
    else {
        return text.len();
    };
    let rest = &text[start..];
    let end = rest.find('\n').unwrap_or(rest.len());
    let column = usize::try_from(column.saturating_sub(1)).unwrap_or(usize::MAX);
    start
        + rest[..end]
            .char_indices()
            .nth(column)
            .map_or(end, |(i, _)| i)
}

/// A zero-length span cannot be drawn; widen it to the character there (if any).
fn point_at(text: &str, mut span: Span) -> Span {
    if span.len == 0 && span.offset < text.len() {
        span.len = text[span.offset..].chars().next().map_or(0, char::len_utf8);
    }
    span.offset = span.offset.min(text.len());
    span
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).to_owned()
}

#[cfg(test)]
mod tests {
    use super::offset_of;

    #[test]
    fn the_credentials_of_every_url_in_a_pipeline_are_masked() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let file = dir.path().join("pipeline.yml");
        std::fs::write(
            &file,
            concat!(
                "repo: { url: 'https://u:repo-pass@git.example.org/app.git' }\n",
                "environments:\n",
                "  staging: { url: 'ssh://deploy:env-pass@vps.example.org/srv/app.git' }\n",
                "stages:\n",
                "  publish:\n",
                "    uses: python/publish\n",
                "    with: { repository_url: 'https://alice:index-pass@pypi.example.org/legacy/' }\n",
            ),
        )
        .expect("write");
        let pipeline = crate::config::load(&file).expect("valid");
        let masker = crate::mask::Masker::for_pipeline(&pipeline);
        for secret in ["repo-pass", "env-pass", "index-pass"] {
            let said = format!("uploading with {secret} now");
            assert_eq!(
                masker.mask_str(&said),
                "uploading with *** now",
                "{secret} is not masked"
            );
        }
    }

    #[test]
    fn line_and_column_give_the_offset() {
        let text = "name: p\nstages:\n  a: { run: \"é }\n";
        assert_eq!(offset_of(text, 1, 1), 0);
        assert_eq!(offset_of(text, 2, 1), 8);
        assert_eq!(&text[offset_of(text, 3, 13)..], "\"é }\n");
        assert_eq!(&text[offset_of(text, 3, 15)..], " }\n");
        assert_eq!(offset_of(text, 9, 1), text.len());
    }
}
