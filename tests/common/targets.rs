//! Push-to-deploy targets for the environment tests: bare repositories with a real
//! `post-receive` hook that checks the pushed commit out and (re)starts a small Python HTTP app
//! on a free loopback port, whose `/health` answers with the commit it runs (and 500 when the
//! tree holds `BROKEN`). [`Targets`] ends every app it started when it is dropped.

use super::{Project, git, make_executable};

/// The app the hook starts: `app.py PORT COMMIT LIVE_DIR`. It keeps trying to bind for a
/// while, since the app it replaces may still be letting go of the port.
const APP: &str = r#"import http.server, os, sys, time
port, commit, live = int(sys.argv[1]), sys.argv[2], sys.argv[3]
broken = os.path.exists(os.path.join(live, "BROKEN"))
version = open(os.path.join(live, "version.txt")).read().strip() if os.path.exists(os.path.join(live, "version.txt")) else "-"
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{commit} {version}{' broken' if broken else ''}\n".encode()
        self.send_response(500 if broken else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer.allow_reuse_address = True
for _ in range(200):
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        break
    except OSError:
        time.sleep(0.05)
server.serve_forever()
"#;

/// The hook: the pushed commit of master into `<repo>.live/`, the old app ended, a new one
/// started (in a session of its own, as a deploy target's service would be).
const HOOK: &str = r#"#!/bin/sh
repo=$(cd "$(dirname "$0")/.." && pwd)
live="$repo.live"
while read old new ref; do
  [ "$ref" = refs/heads/master ] || continue
  [ "$new" = 0000000000000000000000000000000000000000 ] && continue
  rm -rf "$live" && mkdir -p "$live"
  GIT_DIR="$repo" git archive "$new" | tar -x -C "$live"
  if [ -f "$repo.pid" ]; then kill "$(cat "$repo.pid")" 2>/dev/null; fi
  setsid python3 "$repo.app.py" "$(cat "$repo.port")" "$new" "$live" </dev/null >"$repo.app.log" 2>&1 &
  echo $! > "$repo.pid"
  echo "deployed $new on port $(cat "$repo.port")"
done
"#;

/// A free loopback port (bound, then let go).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The project and its push-to-deploy targets; the apps they started are ended on drop.
pub struct Targets {
    pub project: Project,
    pub ports: Vec<(String, u16)>,
}

impl Drop for Targets {
    fn drop(&mut self) {
        for (name, _) in &self.ports {
            let pid = self.project.join(&format!("envs/{name}.git.pid"));
            if let Ok(pid) = std::fs::read_to_string(pid)
                && let Ok(pid) = pid.trim().parse::<i32>()
            {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

impl Targets {
    pub fn port(&self, name: &str) -> u16 {
        self.ports.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// GET /health of an environment's app: (status, body); (0, "") when nothing answers.
    pub fn get(&self, name: &str) -> (u16, String) {
        http_get(&format!("http://127.0.0.1:{}/health", self.port(name)))
    }

    /// What an environment's branch holds (empty when it has none).
    pub fn head(&self, name: &str) -> String {
        let out = std::process::Command::new("git")
            .args(["rev-parse", "--verify", "--quiet", "master"])
            .current_dir(self.project.join(&format!("envs/{name}.git")))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn ledger(&self) -> Vec<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(&self.project.read("archive/deploy_history.json"))
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

/// A bare repository with the hook, for environment `name`, serving on a free port.
pub fn target(project: &Project, name: &str) -> u16 {
    let envs = project.join("envs");
    std::fs::create_dir_all(&envs).unwrap();
    git(
        &envs,
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "master",
            &format!("{name}.git"),
        ],
    );
    let port = free_port();
    project.file(&format!("envs/{name}.git.port"), &port.to_string());
    project.file(&format!("envs/{name}.git.app.py"), APP);
    project.file(&format!("envs/{name}.git/hooks/post-receive"), HOOK);
    make_executable(&project.join(&format!("envs/{name}.git/hooks/post-receive")));
    port
}

/// A new commit on origin's master, made in `seed/`.
pub fn commit_upstream(project: &Project, file: &str, text: &str, message: &str) -> String {
    let seed = project.join("seed");
    project.file(&format!("seed/{file}"), text);
    git(&seed, &["add", "-A"]);
    git(&seed, &["commit", "-q", "-m", message]);
    git(&seed, &["push", "-q", "origin", "master"]);
    git(&seed, &["rev-parse", "HEAD"])
}

pub fn origin_head(project: &Project) -> String {
    git(&project.join("origin.git"), &["rev-parse", "master"])
}

/// GET `url` (Python's urllib, as a client outside pydeployer): (status, body trimmed);
/// (0, "") when nothing answers.
pub fn http_get(url: &str) -> (u16, String) {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, urllib.request, urllib.error\ntry:\n    r = urllib.request.urlopen(sys.argv[1], timeout=5); print(r.status, r.read().decode().strip())\nexcept urllib.error.HTTPError as e:\n    print(e.code, e.read().decode().strip())\nexcept Exception:\n    print(0)",
            url,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (code, body) = text.split_once(' ').unwrap_or((&text, ""));
    (code.parse().unwrap_or(0), body.to_owned())
}
