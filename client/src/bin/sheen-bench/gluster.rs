//! A GlusterFS baseline: `glusterd`, a 2-brick distribute volume on
//! loopback and its FUSE mount, set up and torn down by the benchmark
//! (Debian's glusterfs-server and glusterfs-client; `scripts/bench-deps`
//! installs them).
//!
//! Gluster refuses `127.0.0.1`/`localhost` bricks, so the bricks' host is
//! `127.0.0.2` (a loopback address it accepts as local). Owns: the
//! volume's lifetime; [`Gluster::stop`] unmounts, stops and deletes the
//! volume and ends the glusterd this started. Must not: touch a volume or
//! a glusterd it did not create.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The volume's name.
const VOLUME: &str = "sheenbench";
/// The bricks' host.
const HOST: &str = "127.0.0.2";

/// A running volume and its mount.
#[derive(Debug)]
pub struct Gluster {
    /// The mount point.
    pub mnt: PathBuf,
    /// glusterd's pid (started by us) or `None` (one was running).
    glusterd: Option<u32>,
    dir: PathBuf,
}

fn gluster(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("timeout")
        .arg("120")
        .arg("gluster")
        .arg("--mode=script")
        .args(args)
        .output()
        .context("running gluster (install: apt-get install glusterfs-server glusterfs-client)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("gluster {}: {}", args.join(" "), text.trim());
    }
    Ok(text)
}

fn glusterd_running() -> bool {
    Command::new("gluster").args(["--mode=script", "pool", "list"]).output().is_ok_and(|o| o.status.success())
}

impl Gluster {
    /// Starts glusterd (if none runs), creates and starts the volume with
    /// bricks under `dir`, and mounts it on `dir/mnt` with mount options
    /// `opts` (none when empty).
    pub fn start(dir: &Path, opts: &str) -> anyhow::Result<Gluster> {
        if Command::new("glusterd").arg("--version").output().is_err() {
            bail!("glusterd is not installed (scripts/bench-deps installs glusterfs-server and glusterfs-client)");
        }
        std::fs::create_dir_all(dir)?;
        let mut g = Gluster { mnt: dir.join("mnt"), glusterd: None, dir: dir.to_path_buf() };
        if !glusterd_running() {
            let pidfile = dir.join("glusterd.pid");
            let st = Command::new("glusterd")
                .arg(format!("--log-file={}", dir.join("glusterd.log").display()))
                .arg("-p")
                .arg(&pidfile)
                .status()
                .context("starting glusterd")?;
            if !st.success() {
                bail!("glusterd exited {st}; see {}", dir.join("glusterd.log").display());
            }
            let pid = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse().ok());
            g.glusterd = pid;
            // glusterd daemonizes before it listens: the CLI's own connect
            // retries (bounded by `timeout`) wait for it.
            gluster(&["pool", "list"]).context("glusterd does not answer")?;
        }
        // A volume left by an interrupted run.
        if gluster(&["volume", "info", VOLUME]).is_ok() {
            let _ = gluster(&["volume", "stop", VOLUME, "force"]);
            let _ = gluster(&["volume", "delete", VOLUME]);
        }
        let bricks: Vec<String> = (1..=2)
            .map(|i| {
                let b = dir.join(format!("brick{i}"));
                let _ = std::fs::remove_dir_all(&b);
                std::fs::create_dir_all(&b).map(|()| format!("{HOST}:{}", b.display()))
            })
            .collect::<Result<_, _>>()?;
        let mut args = vec!["volume", "create", VOLUME, "transport", "tcp"];
        args.extend(bricks.iter().map(String::as_str));
        args.push("force");
        if let Err(e) = gluster(&args).and_then(|_| gluster(&["volume", "start", VOLUME])) {
            g.stop();
            return Err(e);
        }
        std::fs::create_dir_all(&g.mnt)?;
        let mut mount = Command::new("mount");
        if !opts.is_empty() {
            mount.args(["-o", opts]);
        }
        let st = mount
            .args(["-t", "glusterfs", &format!("{HOST}:/{VOLUME}")])
            .arg(&g.mnt)
            .status()
            .context("mount -t glusterfs")?;
        if !st.success() {
            g.stop();
            bail!("mount -t glusterfs exited {st}");
        }
        Ok(g)
    }

    /// Unmounts, stops and deletes the volume, removes the bricks, and
    /// ends glusterd if this started it.
    pub fn stop(self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = gluster(&["volume", "stop", VOLUME, "force"]);
        let _ = gluster(&["volume", "delete", VOLUME]);
        for i in 1..=2 {
            let _ = std::fs::remove_dir_all(self.dir.join(format!("brick{i}")));
        }
        if let Some(pid) = self.glusterd {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
    }
}
