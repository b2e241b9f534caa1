//! A deploy to one of `environments:`: what the environment holds is fetched into a ref of the
//! workspace's own (`refs/pydeployer/environments/NAME`), the commit is pushed to the
//! environment's URL and branch, and its health check runs; an unhealthy deploy is rolled
//! back at once by a commit pushed on top that has the files of the environment's last healthy
//! deploy, and checked again.
//!
//! A rollback of an environment never touches the workspace's branch or files: its commit is
//! made with `git commit-tree` (the tree of the deploy returned to, the environment's commit as
//! its parent), so it is exactly that deploy's files, one commit for the whole range, and the
//! next run's pull is not disturbed. Such a commit carries a `Pydeployer-Rollback:` trailer;
//! the next deploy may leave it behind (a push with a lease on what the environment held),
//! and nothing else: a commit on the environment that the deploy does not contain is refused.

use crate::actions::{CommandLine, RunContext, git};
use crate::object_id::ObjectId;
use crate::pipeline::{Environment, HealthCheck, Pipeline};

/// The workspace's ref for what `environment` holds, as last fetched or pushed.
pub fn tracking_ref(environment: &str) -> String {
    format!("refs/pydeployer/environments/{environment}")
}

/// The trailer that marks a rollback commit made by pydeployer.
const TRAILER: &str = "Pydeployer-Rollback";

/// The commands of a deploy stage that pushes to `environment`, in order:
/// fetch, probe (what it held), probe (the commit to push), gate, approval (on a terminal),
/// push, health check; then, run only when it was unhealthy: the automatic rollback, a probe
/// of the rollback commit, the health check again.
pub fn deploy(
    pipeline: &Pipeline,
    environment: &Environment,
    context: &RunContext,
) -> Vec<CommandLine> {
    let tracking = tracking_ref(&environment.name);
    if let Some(rollback) = &context.env_rollback {
        let mut commands = vec![fetch(environment, &tracking), probe(&tracking)];
        commands.push(roll_back(environment, &rollback.commit, &rollback.reason));
        commands.push(probe(&tracking));
        commands.extend(health(pipeline, environment, context));
        return commands;
    }
    let commit = context
        .promote
        .as_ref()
        .map_or_else(|| "HEAD".to_owned(), |c| c.as_str().to_owned());
    let mut commands = vec![fetch(environment, &tracking)];
    // A promotion's commit comes from the environment it requires: fetched, so it is there.
    if context.promote.is_some()
        && let Some(required) = environment
            .requires
            .as_deref()
            .and_then(|r| pipeline.environment(r))
    {
        commands.push(fetch(required, &tracking_ref(&required.name)));
    }
    commands.extend([probe(&tracking), probe(&commit), CommandLine::gate()]);
    if environment.approval && context.approved.is_none() {
        commands.push(approval(environment, &commit));
    }
    commands.push(push(environment, &tracking, &commit));
    let checks = health(pipeline, environment, context);
    if !checks.is_empty() {
        commands.extend(checks.iter().cloned());
        let last_healthy = context
            .last_healthy
            .get(&environment.name)
            .map(|(_, c)| c.clone());
        let rollback = match last_healthy {
            Some(target) => roll_back(
                environment,
                &target,
                "the deploy was unhealthy; back to the last healthy deploy",
            ),
            None => CommandLine::new(
                "sh",
                [
                    "-c",
                    "echo \"$1 has no earlier healthy deploy to roll back to: it stays as it is\" >&2; exit 1",
                    "rollback",
                    &environment.name,
                ],
            )
            .shown_as(format!("(no healthy deploy of {} to roll back to)", environment.name)),
        };
        commands.push(CommandLine {
            if_unhealthy: true,
            ..rollback
        });
        commands.push(CommandLine {
            if_unhealthy: true,
            ..probe(&tracking)
        });
        commands.extend(checks.into_iter().map(|c| CommandLine {
            if_unhealthy: true,
            ..c
        }));
    }
    commands
}

/// What the environment's branch holds now, into the tracking ref (removed when the branch
/// is not there yet: a first deploy).
fn fetch(environment: &Environment, tracking: &str) -> CommandLine {
    let script = r#"git ls-remote --exit-code --heads "$1" "refs/heads/$2" >/dev/null
case $? in
  0) exec git fetch --quiet --no-tags --end-of-options "$1" "+refs/heads/$2:$3" ;;
  2) git update-ref -d "$3" 2>/dev/null
     echo "environment $4 has no branch $2 yet: this is its first deploy"; exit 0 ;;
  *) echo "cannot reach environment $4 ($1)" >&2; exit 1 ;;
esac"#;
    CommandLine::new(
        "sh",
        [
            "-c",
            script,
            "fetch",
            &environment.url,
            &environment.branch,
            tracking,
            &environment.name,
        ],
    )
    .shown_as(format!(
        "git fetch {} {}",
        super::quote(&environment.url),
        super::quote(&environment.branch)
    ))
}

fn probe(what: &str) -> CommandLine {
    CommandLine::probe(
        "git",
        [
            "rev-parse".to_owned(),
            "--verify".to_owned(),
            "--quiet".to_owned(),
            "--end-of-options".to_owned(),
            format!("{what}^{{commit}}"),
        ],
    )
}

/// On a terminal: `Deploy 3f2a9c1 to production? [y/N]`; the runner turns its exit code into
/// the approval (0: yes).
fn approval(environment: &Environment, commit: &str) -> CommandLine {
    let script = r#"commit=$(git rev-parse --verify --quiet --short --end-of-options "$2^{commit}")
printf 'Deploy %s to %s? [y/N] ' "$commit" "$1"
IFS= read -r answer || answer=
case $answer in
  y|Y|yes|YES|Yes) exit 0 ;;
  *) echo "not approved: nothing is pushed to $1"; exit 1 ;;
esac"#;
    CommandLine {
        approval: true,
        ..CommandLine::new("sh", ["-c", script, "approval", &environment.name, commit])
            .shown_as(format!("ask: deploy to {}? [y/N]", environment.name))
    }
}

/// Pushes `commit` to the environment's branch: a fast-forward, or over pydeployer's own
/// rollback commits only (with a lease on what the environment held).
fn push(environment: &Environment, tracking: &str, commit: &str) -> CommandLine {
    let script = format!(
        r#"url=$1 branch=$2 tracking=$3 commit=$(git rev-parse --verify --quiet --end-of-options "$4^{{commit}}") || {{ echo "no commit $4 in the workspace" >&2; exit 1; }}
prev=$(git rev-parse --verify --quiet --end-of-options "$tracking^{{commit}}")
lease=
if [ -n "$prev" ] && ! git merge-base --is-ancestor "$prev" "$commit"; then
  for c in $(git rev-list --end-of-options "$commit..$prev"); do
    if ! git log -1 --format=%B "$c" | grep -q '^{TRAILER}: '; then
      echo "environment $5 holds commit $c, which $commit does not contain and pydeployer did not make: refusing to push over it" >&2
      echo "deploy a commit that contains it, or reset the environment's branch by hand" >&2
      exit 1
    fi
  done
  lease="--force-with-lease=refs/heads/$branch:$prev"
  echo "$commit replaces the rollback commit(s) pydeployer left on $5"
fi
git push $lease --end-of-options "$url" "$commit:refs/heads/$branch" || exit
git update-ref "$tracking" "$commit""#
    );
    CommandLine::new(
        "sh",
        [
            "-c",
            &script,
            "push",
            &environment.url,
            &environment.branch,
            tracking,
            commit,
            &environment.name,
        ],
    )
    .shown_as(format!(
        "git push {} {}:refs/heads/{}",
        super::quote(&environment.url),
        if commit == "HEAD" {
            "HEAD"
        } else {
            &commit[..commit.len().min(10)]
        },
        environment.branch
    ))
}

/// A commit with the files of `target` on top of what the environment holds, pushed there:
/// the rollback of every deploy after `target`, in one commit. Nothing when the environment
/// already has those files.
fn roll_back(environment: &Environment, target: &ObjectId, why: &str) -> CommandLine {
    let script = format!(
        r#"{identity}url=$1 branch=$2 tracking=$3 target=$4
base=$(git rev-parse --verify --quiet --end-of-options "$tracking^{{commit}}") || {{ echo "environment $5 has no branch $branch: nothing was deployed there" >&2; exit 1; }}
git cat-file -e "$target^{{commit}}" 2>/dev/null || git fetch --quiet --no-tags --end-of-options "$url" "$target" 2>/dev/null || {{ echo "commit $target is not in the workspace: cannot make its files again" >&2; exit 1; }}
if git diff --quiet --end-of-options "$target" "$base" --; then
  echo "environment $5 already has the files of $(git rev-parse --short "$target"): nothing to revert"
  exit 0
fi
range="$(git rev-parse --short "$target")..$(git rev-parse --short "$base")"
echo "rolling back $5: reverting $range ($(git rev-list --count "$target..$base") commit(s)), back to the files of $(git rev-parse --short "$target")"
new=$(printf 'Roll back %s to %s\n\nReverts %s in one commit: %s.\nThe files are exactly those of %s; no history is rewritten.\n\n{TRAILER}: %s\n' \
  "$5" "$(git rev-parse --short "$target")" "$range" "$6" "$target" "$target" \
  | git commit-tree "$target^{{tree}}" -p "$base") || exit
git push --end-of-options "$url" "$new:refs/heads/$branch" || exit
git update-ref "$tracking" "$new"
echo "environment $5 is now at $(git rev-parse --short "$new"), with the files of $(git rev-parse --short "$target")""#,
        identity = git::FALLBACK_IDENTITY,
    );
    CommandLine::new(
        "sh",
        [
            "-c",
            &script,
            "rollback",
            &environment.url,
            &environment.branch,
            &tracking_ref(&environment.name),
            target.as_str(),
            &environment.name,
            why,
        ],
    )
    .shown_as(format!(
        "roll back {} to {} (one commit on top, the files of that deploy)",
        environment.name,
        &target.as_str()[..10]
    ))
}

/// The environment's health check as commands (none without `health:`).
fn health(
    pipeline: &Pipeline,
    environment: &Environment,
    context: &RunContext,
) -> Vec<CommandLine> {
    let Some(health) = &environment.health else {
        return Vec::new();
    };
    let seconds = |d: std::time::Duration| format!("{:.3}", d.as_secs_f64());
    let command = match &health.check {
        HealthCheck::Http {
            url,
            expect,
            contains,
        } => {
            let mut args = vec![
                "__health-check".to_owned(),
                "--url".to_owned(),
                url.clone(),
                "--expect".to_owned(),
                expect.to_string(),
                "--timeout".to_owned(),
                seconds(health.timeout),
                "--interval".to_owned(),
                seconds(health.interval),
            ];
            if let Some(text) = contains {
                args.extend(["--contains".to_owned(), text.clone()]);
            }
            let program = context
                .program
                .clone()
                .or_else(|| std::env::current_exe().ok())
                .unwrap_or_else(|| "pydeployer".into());
            CommandLine::new(program.display().to_string(), args).shown_as(format!(
                "health: GET {url} until {expect}{} (at most {})",
                contains
                    .as_ref()
                    .map(|t| format!(" with {t:?}"))
                    .unwrap_or_default(),
                humantime::format_duration(health.timeout)
            ))
        }
        HealthCheck::Run(script) => {
            // Tried until it exits 0; `sleep` between tries runs in this process, never in
            // the runner.
            let lp = r#"end=$(( $(date +%s) + $2 ))
while :; do
  if sh -c "$1"; then echo "health: healthy"; exit 0; fi
  if [ $(( $(date +%s) + $3 )) -ge "$end" ]; then echo "health: still failing after ${2}s: unhealthy" >&2; exit 1; fi
  sleep "$3"
done"#;
            let _ = pipeline;
            CommandLine::new(
                "sh",
                [
                    "-c",
                    lp,
                    "health",
                    script,
                    &health.timeout.as_secs().max(1).to_string(),
                    &health.interval.as_secs().max(1).to_string(),
                ],
            )
            .shown_as(format!(
                "health: {script} until it exits 0 (at most {})",
                humantime::format_duration(health.timeout)
            ))
        }
    };
    vec![CommandLine {
        health: true,
        ..command
    }]
}

/// The answers of [`deploy`]'s probes: what the environment held before, the commit pushed,
/// and the rollback commit (when there was one). A manual rollback answers (before, after).
pub fn answers(answers: &[String], rollback: bool) -> [Option<ObjectId>; 3] {
    let id = |i: usize| {
        answers
            .get(i)
            .and_then(|a| a.trim().parse::<ObjectId>().ok())
    };
    if rollback {
        [id(0), id(1), None]
    } else {
        [id(0), id(1), id(2)]
    }
}
