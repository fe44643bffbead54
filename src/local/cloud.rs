//! `layerforge local up` and `local down`: start and stop the processes of the local cloud.

use std::{
    fs::File,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::{LocalError, Process, State, moto::Moto, provision, sdk_for};

/// Where the tools come from: `ROOT/.tools/venv/bin` (scripts/bootstrap.sh installs them), else `PATH`.
fn tool(root: &Path, name: &str) -> PathBuf {
    let local = root.join(".tools/venv/bin").join(name);
    if local.is_file() {
        local
    } else {
        PathBuf::from(name)
    }
}

/// `PATH` with the tools' directory first (uv for layer-builder; cargo for cargo-lambda).
pub(crate) fn tools_path(root: &Path) -> std::ffi::OsString {
    let mut dirs = vec![root.join(".tools/venv/bin")];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

fn free_port() -> Result<u16, LocalError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| LocalError::Setup(format!("no free loopback port: {e}")))
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300)).is_ok()
}

/// Starts `command` in its own process group (so that `down` can stop it with its children), output to `log`.
fn spawn(
    name: &str,
    program: &str,
    mut command: Command,
    port: Option<u16>,
    log: PathBuf,
) -> Result<Process, LocalError> {
    use std::os::unix::process::CommandExt;
    let out = File::create(&log).map_err(LocalError::io(&log))?;
    let err = out.try_clone().map_err(LocalError::io(&log))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| LocalError::Setup(format!("starting {name} ({command:?}): {e}")))?;
    Ok(Process {
        name: name.to_owned(),
        pid: child.id(),
        program: program.to_owned(),
        port,
        log,
    })
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s != "Z" && s != "X"),
        Err(_) => false,
    }
}

/// True when `pid` is alive and its command line mentions `program`.
fn runs(pid: u32, program: &str) -> bool {
    alive(pid)
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(program))
}

fn signal_group(pid: u32, signal: i32) {
    if let Ok(pgid) = i32::try_from(pid) {
        // SAFETY: kill(2) with a negative PID signals that process group; no memory is involved.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// Stops one process group started by `up`: TERM, then KILL after 10 s. Returns what happened.
fn stop(process: &Process) -> String {
    if !runs(process.pid, &process.program) {
        return format!("{} (pid {}) was not running", process.name, process.pid);
    }
    signal_group(process.pid, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(process.pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if alive(process.pid) {
        signal_group(process.pid, libc::SIGKILL);
        std::thread::sleep(Duration::from_millis(300));
        return format!("{} (pid {}) killed", process.name, process.pid);
    }
    format!("{} (pid {}) stopped", process.name, process.pid)
}

async fn wait_until<F: Fn() -> bool>(
    what: &str,
    process: &Process,
    seconds: u64,
    ready: F,
) -> Result<(), LocalError> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if ready() {
            return Ok(());
        }
        if !alive(process.pid) {
            return Err(LocalError::Setup(format!(
                "{what} exited at start; its log: {}",
                process.log.display()
            )));
        }
        if Instant::now() > deadline {
            return Err(LocalError::Setup(format!(
                "{what} not ready after {seconds} s; its log: {}",
                process.log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts the local cloud (see the module docs of [`super`]); returns its state, also written to
/// `DIR/state.json`. On a failure, whatever was started is stopped again.
pub async fn up(root: &Path, dir: &Path) -> Result<State, LocalError> {
    std::fs::create_dir_all(dir).map_err(LocalError::io(dir))?;
    if let Ok(old) = State::load(dir)
        && let Some(p) = old.processes.iter().find(|p| runs(p.pid, &p.program))
    {
        return Err(LocalError::Setup(format!(
            "the local cloud of {} is already up ({} runs as pid {}): `layerforge local down` first",
            dir.display(),
            p.name,
            p.pid
        )));
    }
    let mut started = Vec::new();
    let result = start(root, dir, &mut started).await;
    if result.is_err() {
        for p in started.iter().rev() {
            stop(p);
        }
        let _ = std::fs::remove_file(State::path(dir));
    }
    result
}

async fn start(root: &Path, dir: &Path, started: &mut Vec<Process>) -> Result<State, LocalError> {
    // 1. moto's server, and the stack in it.
    let port = free_port()?;
    let mut command = Command::new(tool(root, "moto_server"));
    command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    let moto_process = spawn(
        "moto",
        "moto_server",
        command,
        Some(port),
        dir.join("moto.log"),
    )?;
    started.push(moto_process.clone());
    let moto_endpoint = format!("http://127.0.0.1:{port}");
    let moto = Moto::new(&moto_endpoint).map_err(|e| LocalError::Setup(e.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !moto.is_up().await {
        if !alive(moto_process.pid) || Instant::now() > deadline {
            return Err(LocalError::Setup(format!(
                "moto's server did not start; its log: {}",
                moto_process.log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sdk = sdk_for(&moto_endpoint).await;
    let stack = provision::stack(&sdk, &moto, super::STACK).await?;

    // 2. cargo-lambda's Runtime API, and the three functions (this build's binaries, next to this one)
    //    polling it for their invocations, with the template's environment pointed at moto.
    let exe = std::env::current_exe()
        .map_err(|e| LocalError::Setup(format!("where is this layerforge binary? {e}")))?;
    let functions = [
        super::SUBMIT_FUNCTION,
        super::STATUS_FUNCTION,
        super::PUBLISH_FUNCTION,
        super::FAST_FUNCTION,
    ];
    for name in functions {
        if !exe.with_file_name(name).is_file() {
            return Err(LocalError::Setup(format!(
                "{} is missing: build the functions next to layerforge (cargo build --bins)",
                exe.with_file_name(name).display()
            )));
        }
    }
    let lambda_port = free_port()?;
    let mut command = Command::new(tool(root, "cargo-lambda"));
    command
        .args([
            "lambda",
            "watch",
            "--only-lambda-apis",
            "--invoke-address",
            "127.0.0.1",
        ])
        .arg("--invoke-port")
        .arg(lambda_port.to_string())
        .args(["--ignore-changes", "--quiet"])
        .current_dir(root)
        .env("PATH", tools_path(root));
    let watch = spawn(
        "cargo-lambda",
        "cargo-lambda",
        command,
        Some(lambda_port),
        dir.join("watch.log"),
    )?;
    started.push(watch.clone());
    wait_until("cargo lambda watch", &watch, 60, || listening(lambda_port)).await?;
    // The front's port is chosen now: submit-build invokes the fast builder through it (asynchronously).
    let front_port = free_port()?;
    let fast_env = fast_builder_env(front_port)?;
    for name in functions {
        let mut command = Command::new(exe.with_file_name(name));
        // Only the function's own environment, as in Lambda: no profile or endpoint of the caller leaks in.
        command
            .env_clear()
            .envs(stack.functions_env(&moto_endpoint))
            .env("PATH", tools_path(root))
            .env("RUST_LOG", "info")
            // The Runtime API of one function behind cargo-lambda (`watch --only-lambda-apis`).
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{lambda_port}/.rt/{name}"),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
            .envs(fast_env.iter().map(|(k, v)| (k, v)));
        if name == super::FAST_FUNCTION {
            // The fast builder reaches the package index as this machine does (its CA bundle, its proxy): the
            // variables the builder hands its installer (isolation::passes), as Lambda's network needs none.
            command.envs(
                std::env::vars()
                    .filter(|(k, _)| k != "PATH" && crate::builder::isolation::passes(k)),
            );
        }
        started.push(spawn(
            name,
            name,
            command,
            None,
            dir.join(format!("{name}.log")),
        )?);
    }

    // 3. `local serve` listens on the front's port (the Lambda endpoint every caller uses) and runs the Fargate
    //    stand-in and the S3-event forwarder.
    let mut state = State {
        root: root.to_owned(),
        moto_endpoint,
        lambda_endpoint: format!("http://127.0.0.1:{front_port}"),
        runtime_api_endpoint: format!("http://127.0.0.1:{lambda_port}"),
        stack,
        processes: started.clone(),
    };
    state.save(dir)?;
    let mut command = Command::new(&exe);
    command
        .args(["local", "serve", "--local-dir"])
        .arg(dir)
        .env("PATH", tools_path(root));
    let serve = spawn(
        "serve",
        "layerforge",
        command,
        Some(front_port),
        dir.join("serve.log"),
    )?;
    started.push(serve.clone());
    state.processes = started.clone();
    state.save(dir)?;
    wait_until("layerforge local serve", &serve, 30, || {
        listening(front_port)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(gone) = state.processes.iter().find(|p| !alive(p.pid)) {
        return Err(LocalError::Setup(format!(
            "{} exited at start; its log: {}",
            gone.name,
            gone.log.display()
        )));
    }
    Ok(state)
}

/// The fast builder's part of every function's environment (as template.yaml's Globals): its name, the runtimes
/// whose bytecode it can compile (here: this machine's Python, which the build user can run), and where it is
/// invoked (the front); and the uv it runs, when the build user needs a copy ([`super::serve::uv_for_jobs`]).
fn fast_builder_env(front_port: u16) -> Result<Vec<(String, String)>, LocalError> {
    let sandbox = crate::builder::isolation::Sandbox::from_env().map_err(LocalError::Setup)?;
    let runtimes: Vec<&str> = crate::request::Runtime::ALL
        .into_iter()
        .filter(|r| crate::builder::python::find(*r, None, true, &sandbox).is_ok())
        .map(|r| r.as_str())
        .collect();
    let runtimes = if runtimes.is_empty() {
        "none".to_owned()
    } else {
        runtimes.join(",")
    };
    let mut env = vec![
        (
            "FAST_BUILDER_FUNCTION".to_owned(),
            super::FAST_FUNCTION.to_owned(),
        ),
        ("FAST_BUILDER_RUNTIMES".to_owned(), runtimes),
        (
            crate::aws::INVOKE_ENDPOINT_ENV.to_owned(),
            format!("http://127.0.0.1:{front_port}"),
        ),
    ];
    if let Some(uv) = super::serve::uv_for_jobs()? {
        env.push((crate::builder::UV_ENV.to_owned(), uv.display().to_string()));
    }
    Ok(env)
}

/// Stops what `up` started (by PID, in reverse order), checks that none of its ports still listens and
/// removes the state file. Returns one line per process.
pub fn down(dir: &Path) -> Result<Vec<String>, LocalError> {
    let state = State::load(dir)?;
    let mut report: Vec<String> = state.processes.iter().rev().map(stop).collect();
    let still: Vec<u16> = state
        .processes
        .iter()
        .filter_map(|p| p.port)
        .filter(|port| listening(*port))
        .collect();
    if !still.is_empty() {
        return Err(LocalError::Setup(format!(
            "after stopping the local cloud, something still listens on 127.0.0.1 port(s) {still:?}"
        )));
    }
    let path = State::path(dir);
    std::fs::remove_file(&path).map_err(LocalError::io(&path))?;
    report.push(format!("removed {}", path.display()));
    Ok(report)
}
