//! Cloud mode against real moto (S3, SNS and SQS on one port, with its request authentication
//! on: every request must carry a valid SigV4 signature of an IAM user's key), checked with
//! boto3; webhooks against a real HTTP server on loopback.
//!
//! One moto serves the whole file (started once, on a free port); a test that stops its
//! cloud starts a private one. Each test uses its own bucket, topic and queue.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on what they set up

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{Project, bare_origin, webhook_server};

/// A moto server, stopped when the test binary ends (its stdin closes).
struct Moto {
    endpoint: String,
    port: u16,
    /// The IAM user's key (moto checks every signature against it).
    key_id: String,
    secret: String,
    child: Child,
}

/// How many requests moto takes without a signature: the three that make the IAM user.
const NO_AUTH_REQUESTS: &str = "3";

impl Moto {
    fn start_on(port: u16, auth: bool) -> Moto {
        assert!(
            Command::new("moto_server")
                .arg("--help")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "moto_server is not installed: run ./test.sh (it installs moto[server] and boto3)"
        );
        let mut command = Command::new("sh");
        command
            .args([
                "-c",
                // The server goes when the test binary does: its stdin (this pipe) closes.
                "moto_server -H 127.0.0.1 -p \"$1\" </dev/null >/dev/null 2>&1 & pid=$!; read _ ; kill $pid",
                "sh",
                &port.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        if auth {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", NO_AUTH_REQUESTS);
        } else {
            command.env_remove("INITIAL_NO_AUTH_ACTION_COUNT");
        }
        let child = command.spawn().expect("start moto_server");
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_mins(1),
                "moto never listened on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut moto = Moto {
            endpoint,
            port,
            key_id: "testing".into(),
            secret: "testing-secret".into(),
            child,
        };
        if auth {
            let keys = moto.python(MAKE_USER, &[]);
            let (id, secret) = keys.trim().split_once(' ').expect("keys");
            id.clone_into(&mut moto.key_id);
            secret.clone_into(&mut moto.secret);
        }
        moto
    }

    /// Runs a Python script with boto3 pointed at this moto, as the IAM user; its stdout.
    fn python(&self, script: &str, args: &[&str]) -> String {
        let out = Command::new("python3")
            .arg("-c")
            .arg(format!("{PRELUDE}\n{script}"))
            .args(args)
            .env("ENDPOINT", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `pydeployer ARGS…` with this moto's user in the environment (and nothing of the
    /// machine's own AWS setup).
    fn cmd(&self, project: &Project, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = project.cmd(args);
        aws_env(&mut cmd, project);
        cmd.env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret);
        cmd
    }

    fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "moto did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The machine's AWS settings out, HOME in the project (no ~/.aws of the machine).
fn aws_env(cmd: &mut assert_cmd::Command, project: &Project) {
    for name in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT_URL_SNS",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
    ] {
        cmd.env_remove(name);
    }
    cmd.env("HOME", project.path());
}

const PRELUDE: &str = r#"
import base64, hashlib, json, os, sys, time
import boto3
E = os.environ["ENDPOINT"]
def client(name, region="eu-west-3"):
    return boto3.client(name, endpoint_url=E, region_name=region)
"#;

const MAKE_USER: &str = r#"
iam = boto3.client("iam", endpoint_url=E, region_name="us-east-1")
iam.create_user(UserName="ci")
iam.put_user_policy(UserName="ci", PolicyName="all", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
key = iam.create_access_key(UserName="ci")["AccessKey"]
print(key["AccessKeyId"], key["SecretAccessKey"])
"#;

const MAKE_BUCKET: &str = r#"
client("s3").create_bucket(Bucket=sys.argv[1], CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
"#;

/// A topic with an SQS queue subscribed to it; prints the topic's ARN and the queue's URL.
const MAKE_TOPIC: &str = r#"
sns, sqs = client("sns"), client("sqs")
topic = sns.create_topic(Name=sys.argv[1])["TopicArn"]
queue = sqs.create_queue(QueueName=sys.argv[1])["QueueUrl"]
arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
print(topic, queue)
"#;

/// Every message waiting in the queue (removed), as a JSON list of {subject, message}.
const RECEIVE: &str = r#"
sqs = client("sqs")
out = []
for _ in range(3):
    got = sqs.receive_message(QueueUrl=sys.argv[1], MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    for m in got:
        body = json.loads(m["Body"])
        out.append({"subject": body.get("Subject"), "message": body["Message"]})
        sqs.delete_message(QueueUrl=sys.argv[1], ReceiptHandle=m["ReceiptHandle"])
print(json.dumps(out))
"#;

/// Each key of the bucket with its size.
const LIST: &str = r#"
s3 = client("s3")
print(json.dumps({o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=sys.argv[1]).get("Contents", [])}))
"#;

/// An object's bytes, base64 (small objects only).
const GET: &str = r#"
body = client("s3").get_object(Bucket=sys.argv[1], Key=sys.argv[2])["Body"].read()
print(base64.b64encode(body).decode())
"#;

/// An object's size, SHA-256 (streamed), ETag and stored checksum.
const DIGEST: &str = r#"
s3 = client("s3")
head = s3.head_object(Bucket=sys.argv[1], Key=sys.argv[2], ChecksumMode="ENABLED")
h = hashlib.sha256()
for chunk in s3.get_object(Bucket=sys.argv[1], Key=sys.argv[2])["Body"].iter_chunks(1 << 20):
    h.update(chunk)
print(json.dumps({"size": head["ContentLength"], "sha256": h.hexdigest(), "etag": head["ETag"],
                  "checksum": head.get("ChecksumSHA256")}))
"#;

fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| Moto::start_on(free_port(), true))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn get(moto: &Moto, bucket: &str, key: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(moto.python(GET, &[bucket, key]).trim())
        .expect("base64")
}

/// The only run log's file name.
fn log_name(project: &Project) -> String {
    let logs = project.logs();
    assert_eq!(logs.len(), 1, "{logs:?}");
    logs[0].file_name().unwrap().to_string_lossy().into_owned()
}

fn sha256_hex(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(bytes)?;
            child.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn output(cmd: &mut assert_cmd::Command) -> (i32, String, String) {
    let out = cmd.output().expect("run pydeployer");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_five_stage_run_leaves_its_log_ledger_and_summary_in_s3() {
    use base64::Engine as _;
    let moto = moto();
    moto.python(MAKE_BUCKET, &["five-stages"]);
    let project = Project::new();
    bare_origin(&project);
    // Credentials and region from a profile, as `aws configure` writes them.
    project.file(
        "aws/credentials",
        &format!(
            "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[ci]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            moto.key_id, moto.secret
        ),
    );
    project.file("aws/config", "[profile ci]\nregion = eu-west-3\n");
    project.file(
        "pipeline.yml",
        &format!(
            "name: five\nrepo: {{ url: origin.git }}\ncloud:\n  s3: {{ bucket: five-stages, prefix: sample-app, endpoint: \"{}\" }}\n\
             stages:\n  clone: {{ uses: git/clone }}\n  install: {{ run: echo installing, needs: [clone] }}\n\
             \x20 build: {{ uses: git/commit, needs: [install] }}\n  test: {{ run: echo testing, needs: [build] }}\n\
             \x20 deploy: {{ uses: git/push, needs: [test] }}\n",
            moto.endpoint
        ),
    );
    let mut cmd = project.cmd(&["run"]);
    aws_env(&mut cmd, &project);
    cmd.env("AWS_PROFILE", "ci")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            project.join("aws/credentials"),
        )
        .env("AWS_CONFIG_FILE", project.join("aws/config"));
    let (code, _, stderr) = output(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let name = log_name(&project);
    let stem = name.strip_suffix(".log").unwrap();
    let keys = json(&moto.python(LIST, &["five-stages"]));
    let log_key = format!("sample-app/logs/{name}");
    let summary_key = format!("sample-app/runs/{stem}.json");
    let ledger_key = "sample-app/archive/deploy_history.json";
    for key in [&log_key, &summary_key, &ledger_key.to_owned()] {
        assert!(keys.get(key).is_some(), "{key} not in {keys}");
    }
    let local_log = std::fs::read(&project.logs()[0]).unwrap();
    assert_eq!(get(moto, "five-stages", &log_key), local_log);
    assert_eq!(
        get(moto, "five-stages", ledger_key),
        std::fs::read(project.join("archive/deploy_history.json")).unwrap()
    );
    let summary = json(&String::from_utf8(get(moto, "five-stages", &summary_key)).unwrap());
    assert_eq!(summary["pipeline"], "five");
    assert_eq!(summary["result"], "passed");
    assert_eq!(summary["stages"].as_array().unwrap().len(), 5);
    // The checksum S3 verified and kept is the local file's.
    let digest = json(&moto.python(DIGEST, &["five-stages", &log_key]));
    assert_eq!(digest["sha256"], sha256_hex(&local_log));
    let expected = base64::engine::general_purpose::STANDARD.encode(
        (0..32)
            .map(|i| u8::from_str_radix(&sha256_hex(&local_log)[2 * i..2 * i + 2], 16).unwrap())
            .collect::<Vec<u8>>(),
    );
    assert_eq!(digest["checksum"], expected);
    // Nothing waits.
    let outbox: Vec<_> = std::fs::read_dir(project.join(".pydeployer/outbox"))
        .unwrap()
        .collect();
    assert!(outbox.is_empty(), "{outbox:?}");
}

fn failing_pipeline(moto: &Moto, name: &str, topic: &str, on: &str) -> Project {
    let project = Project::new();
    project.file(
        "pipeline.yml",
        &format!(
            "name: {name}\nsecrets: [DEPLOY_TOKEN]\ncloud:\n  s3: {{ bucket: {name}, region: eu-west-3, endpoint: \"{e}\" }}\n\
             \x20 sns: {{ topic: \"{topic}\", on: [{on}], endpoint: \"{e}\" }}\n\
             stages:\n  build: {{ run: echo built }}\n\
             \x20 test: {{ run: \"echo token=$DEPLOY_TOKEN; env | grep AWS_SECRET; echo boom; exit ${{TEST_EXIT:-3}}\", needs: [build] }}\n",
            e = moto.endpoint
        ),
    );
    project
}

#[test]
fn a_failing_test_stage_sends_one_sns_message_with_everything_masked() {
    let moto = moto();
    moto.python(MAKE_BUCKET, &["failing"]);
    let made = moto.python(MAKE_TOPIC, &["failing"]);
    let (topic, queue) = made.trim().split_once(' ').unwrap();
    let project = failing_pipeline(moto, "failing", topic, "failure, rollback");
    let secret = "tok-5ecret-value-123";
    let (code, stdout, stderr) = output(moto.cmd(&project, &["run"]).env("DEPLOY_TOKEN", secret));
    assert_eq!(code, 1, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let messages = json(&moto.python(RECEIVE, &[queue]));
    let messages = messages.as_array().unwrap();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let text = messages[0]["message"].as_str().unwrap();
    let subject = messages[0]["subject"].as_str().unwrap();
    let name = log_name(&project);
    let log_key = format!("s3://failing/logs/{name}");
    for expected in [
        "failing",
        "failed stage: test",
        "exit code 3",
        &log_key,
        "boom",
    ] {
        assert!(text.contains(expected), "{expected:?} not in {text}");
    }
    assert!(
        subject.contains("failing") && subject.len() < 100,
        "{subject}"
    );
    // Masked: the pipeline's secret and the AWS secret key, everywhere.
    let s3_log = String::from_utf8(get(moto, "failing", &format!("logs/{name}"))).unwrap();
    assert!(s3_log.contains("token=***"), "{s3_log}");
    assert!(s3_log.contains("AWS_SECRET_ACCESS_KEY=***"), "{s3_log}");
    assert!(text.contains("token=***"), "{text}");
    let summary = String::from_utf8(get(
        moto,
        "failing",
        &format!("runs/{}.json", name.strip_suffix(".log").unwrap()),
    ))
    .unwrap();
    for place in [
        &stdout,
        &stderr,
        &project.last_log(),
        &s3_log,
        &summary,
        text,
        subject,
    ] {
        assert!(!place.contains(secret), "the secret in {place}");
        assert!(
            !place.contains(&moto.secret),
            "the AWS secret key in {place}"
        );
    }
    // A green run sends nothing when `on:` does not list success …
    let (code, _, stderr) = output(
        moto.cmd(&project, &["run"])
            .env("DEPLOY_TOKEN", secret)
            .env("TEST_EXIT", "0"),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(json(&moto.python(RECEIVE, &[queue])), serde_json::json!([]));
    // … and one message when it does.
    let project = failing_pipeline(moto, "failing", topic, "success");
    let (code, _, stderr) = output(
        moto.cmd(&project, &["run"])
            .env("DEPLOY_TOKEN", secret)
            .env("TEST_EXIT", "0"),
    );
    assert_eq!(code, 0, "{stderr}");
    let messages = json(&moto.python(RECEIVE, &[queue]));
    assert_eq!(messages.as_array().unwrap().len(), 1, "{messages}");
    let text = messages[0]["message"].as_str().unwrap();
    assert!(text.starts_with("failing passed"), "{text}");
}

#[test]
fn a_bad_signature_is_refused_by_moto_and_waits_in_the_outbox() {
    let moto = moto();
    moto.python(MAKE_BUCKET, &["bad-signature"]);
    let project = Project::with_pipeline(&format!(
        "cloud:\n  s3: {{ bucket: bad-signature, region: eu-west-3, endpoint: \"{}\" }}\nstages:\n  a: {{ run: echo a }}\n",
        moto.endpoint
    ));
    let (code, _, stderr) = output(
        moto.cmd(&project, &["run"])
            .env("AWS_SECRET_ACCESS_KEY", "not-the-key"),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("SignatureDoesNotMatch"), "{stderr}");
    assert!(!stderr.contains("not-the-key"), "{stderr}");
    assert_eq!(
        json(&moto.python(LIST, &["bad-signature"])),
        serde_json::json!({})
    );
    let (code, stdout, stderr) = output(&mut moto.cmd(&project, &["sync"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("sent s3://bad-signature/logs/"), "{stdout}");
}

#[test]
fn with_the_cloud_away_the_run_keeps_its_result_and_sync_sends_it_later() {
    let port = free_port();
    let private = Moto::start_on(port, false);
    private.python(MAKE_BUCKET, &["away"]);
    let project = Project::with_pipeline(&format!(
        "cloud:\n  s3: {{ bucket: away, region: eu-west-3, endpoint: \"{}\" }}\nstages:\n  a: {{ run: echo a }}\n",
        private.endpoint
    ));
    private.stop();
    let mut cmd = project.cmd(&["run"]);
    aws_env(&mut cmd, &project);
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing-secret");
    let (code, _, stderr) = output(&mut cmd);
    assert_eq!(code, 0, "the run's own result stands: {stderr}");
    let name = log_name(&project);
    assert!(
        stderr.contains(&format!(
            "warning: not sent: s3://away/logs/{name}: connection refused"
        )),
        "{stderr}"
    );
    assert!(stderr.contains(".pydeployer/outbox/"), "{stderr}");
    let waiting = std::fs::read_dir(project.join(".pydeployer/outbox"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(waiting.contains(&format!("logs/{name}")), "{waiting}");
    // Back (a new moto on the same port: a new, empty bucket).
    let back = Moto::start_on(port, false);
    back.python(MAKE_BUCKET, &["away"]);
    let (code, stdout, stderr) = output(&mut back.cmd(&project, &["sync"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("sent s3://away/logs/{name}")),
        "{stdout}"
    );
    assert_eq!(
        get(&back, "away", &format!("logs/{name}")),
        std::fs::read(&project.logs()[0]).unwrap()
    );
    assert_eq!(
        std::fs::read_dir(project.join(".pydeployer/outbox"))
            .unwrap()
            .count(),
        0
    );
    let (code, stdout, _) = output(&mut back.cmd(&project, &["sync"]));
    assert_eq!((code, stdout.trim()), (0, "nothing to send"));
    back.stop();
}

#[test]
fn an_endpoint_that_never_answers_costs_one_timeout() {
    // Accepts every connection and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let project = Project::with_pipeline(&format!(
        "cloud:\n  s3: {{ bucket: blackhole, region: eu-west-3, endpoint: \"http://127.0.0.1:{port}\" }}\n  timeout: 2s\nstages:\n  a: {{ run: echo a }}\n"
    ));
    let mut cmd = project.cmd(&["run"]);
    aws_env(&mut cmd, &project);
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing-secret")
        .timeout(Duration::from_mins(1)); // a hang guard, not a measurement
    let (code, _, stderr) = output(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
    let name = log_name(&project);
    assert!(
        stderr.contains(&format!(
            "not sent: s3://blackhole/logs/{name}: no answer before the timeout"
        )),
        "{stderr}"
    );
    // The other upload was not tried: one timeout in all, not one per file.
    assert!(stderr.contains("not tried"), "{stderr}");
}

#[test]
fn a_200_mb_log_goes_up_in_parts_in_little_memory() {
    let moto = moto();
    moto.python(MAKE_BUCKET, &["big-log"]);
    let project = Project::with_pipeline(&format!(
        "cloud:\n  s3: {{ bucket: big-log, region: eu-west-3, endpoint: \"{}\" }}\n\
         stages:\n  big: {{ run: \"yes 0123456789012345678901234567890123456789012345678901234567890123456789 | head -c 200000000\" }}\n",
        moto.endpoint
    ));
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("pydeployer"));
    cmd.current_dir(project.path())
        .args(["-q", "run"])
        .env("NO_COLOR", "1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_SESSION_TOKEN")
        .env("HOME", project.path())
        .env("AWS_ACCESS_KEY_ID", &moto.key_id)
        .env("AWS_SECRET_ACCESS_KEY", &moto.secret)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // Reaped by `wait_with_peak_rss` (wait4, for its resource usage).
    #[expect(clippy::zombie_processes, reason = "wait4 reaps it")]
    let mut child = cmd.spawn().expect("start pydeployer");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let (status, peak_kib) = wait_with_peak_rss(&child);
    assert_eq!(status, 0, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let log = &project.logs()[0];
    let size = std::fs::metadata(log).unwrap().len();
    assert!(size > 200_000_000, "{size}");
    let name = log_name(&project);
    let digest = json(&moto.python(DIGEST, &["big-log", &format!("logs/{name}")]));
    assert_eq!(digest["size"], size);
    let local = Command::new("sha256sum").arg(log).output().unwrap();
    let local = String::from_utf8_lossy(&local.stdout);
    assert_eq!(digest["sha256"], local.split_whitespace().next().unwrap());
    // A multipart object's ETag ends in -<parts>.
    let etag = digest["etag"].as_str().unwrap();
    assert!(
        etag.trim_matches('"')
            .rsplit_once('-')
            .is_some_and(|(_, n)| n.parse::<u32>().unwrap() > 1),
        "{etag}"
    );
    eprintln!("peak RSS of the runner (and its stages): {peak_kib} KiB for a {size}-byte log");
    assert!(peak_kib < 32 * 1024, "peak RSS {peak_kib} KiB");
}

/// Waits for `child`; its exit code and the peak resident memory (KiB) of it and of every
/// process it waited for.
fn wait_with_peak_rss(child: &Child) -> (i32, i64) {
    let pid = i32::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child, status and usage are valid for writes.
    let rc = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    assert_eq!(rc, pid, "wait4");
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}

#[test]
fn bad_cloud_settings_are_refused_with_their_places() {
    let project = Project::with_pipeline(concat!(
        "cloud:\n",
        "  s3: { bucket: My_Bucket, region: moon-1, endpoint: \"ftp://x\" }\n",
        "  sns: { topic: \"arn:aws:sns:eu-west-3:12345:ci\", on: [failure, sucess] }\n",
        "  requird: true\n",
        "notify:\n",
        "  - { webhook_env: \"https://hooks.example.org/x\" }\n",
        "stages:\n  a: { run: echo a }\n",
    ));
    let (code, _, stderr) = project.run(&["validate"]);
    assert_eq!(code, 2, "{stderr}");
    for expected in [
        "`My_Bucket` is not a valid S3 bucket name",
        "pipeline.yml:2:17",
        "`moon-1` is not an AWS region",
        "pipeline.yml:2:36",
        "refusing `cloud.s3.endpoint` \"ftp://x\"",
        "pipeline.yml:2:54",
        "is not an SNS topic ARN: its account must be 12 digits",
        "pipeline.yml:3:17",
        "unknown event `sucess`",
        "pipeline.yml:3:65",
        "unknown `cloud` setting `requird`",
        "pipeline.yml:4:3",
        "the URL itself is a secret",
        "pipeline.yml:6:20",
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in:\n{stderr}");
    }
    // Nothing runs.
    let (code, _, _) = project.run(&["run"]);
    assert_eq!(code, 2);
    assert!(!project.exists("logs"));
    assert!(!project.exists(".pydeployer"));
}

#[test]
fn a_webhook_gets_one_json_post_on_failure_and_its_url_is_masked() {
    let (base, received) = webhook_server();
    let url = format!("{base}/hooks/T0KEN-in-the-url-42");
    let project = Project::with_pipeline(concat!(
        "name: hooked\nnotify:\n  - { webhook_env: HOOK_URL, on: [failure] }\n",
        "stages:\n  test: { run: \"echo posting to $HOOK_URL; exit 4\" }\n",
    ));
    let mut cmd = project.cmd(&["run"]);
    aws_env(&mut cmd, &project);
    cmd.env("HOOK_URL", &url);
    let (code, stdout, stderr) = output(&mut cmd);
    assert_eq!(code, 1, "{stderr}");
    let posts: Vec<_> = received.try_iter().collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    let (line, body) = &posts[0];
    assert!(
        line.starts_with("POST /hooks/T0KEN-in-the-url-42 "),
        "{line}"
    );
    let body = json(body);
    assert_eq!(body["pipeline"], "hooked");
    assert_eq!(body["result"], "failed");
    assert_eq!(body["failed"][0]["stage"], "test");
    assert_eq!(body["failed"][0]["exit_code"], 4);
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("failed stage: test"),
        "{body}"
    );
    assert!(
        body["command"]
            .as_str()
            .unwrap()
            .starts_with("pydeployer logs "),
        "{body}"
    );
    let lines = body["failed"][0]["last_lines"].to_string();
    assert!(lines.contains("posting to ***"), "{lines}");
    for place in [&stdout, &stderr, &project.last_log(), &body.to_string()] {
        assert!(!place.contains("T0KEN-in-the-url-42"), "the URL in {place}");
    }
    // The outbox never holds the URL, only its variable's name.
    let mut cmd = project.cmd(&["run"]);
    aws_env(&mut cmd, &project);
    let (code, _, stderr) = output(&mut cmd);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("not sent: webhook $HOOK_URL: the variable is not set"),
        "{stderr}"
    );
    for entry in std::fs::read_dir(project.join(".pydeployer/outbox")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains("T0KEN"), "{text}");
    }
}
