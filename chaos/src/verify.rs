//! The end of a run: read back what every client's directory holds, from a
//! fresh mount, and compare it with the client's model.
//!
//! Owns: [`observe`] (walk a client's directory with the library API:
//! every entry's type and mode, every block of every file) and [`verify`]
//! (the models from the logs against what was observed).
//!
//! Must not: change the file system.

use std::path::Path;

use client::Sheen;

use crate::block::BLOCK;
use crate::model::{Finding, Model, Observed, classify};
use crate::oplog::{Entry, Found, read_log};
use crate::worker::MAX_BLOCKS;

/// Directories walked below a client's root at most (a bound on a
/// looping server).
const MAX_WALK: usize = 10_000;

/// What a client's directory `root` holds; `client` names whose blocks
/// the files must hold.
pub async fn observe(fs: &Sheen, client: u32, root: &str) -> Observed {
    let mut obs = Observed::default();
    let mut todo = vec![root.to_string()];
    let mut walked = 0;
    while let Some(dir) = todo.pop() {
        walked += 1;
        if walked > MAX_WALK {
            obs.unreadable.push((dir, format!("more than {MAX_WALK} directories")));
            break;
        }
        let entries = match fs.readdir(&dir).await {
            Ok(e) => e,
            Err(e) => {
                obs.unreadable.push((dir, format!("readdir: {e}")));
                continue;
            }
        };
        for e in entries {
            if e.name == "." || e.name == ".." {
                continue;
            }
            let path = format!("{dir}/{}", e.name);
            let st = match fs.stat(&path).await {
                Ok(s) => s,
                Err(err) => {
                    obs.unreadable.push((path, format!("stat: {err}")));
                    continue;
                }
            };
            obs.entries.insert(path.clone(), Entry { dir: st.is_dir(), mode: st.attr.mode & 0o7777 });
            if st.is_dir() {
                todo.push(path);
                continue;
            }
            // The file id is in the name: f<id> or f<id>r<n>.
            let id = e.name.strip_prefix('f').and_then(|s| s.split('r').next()).and_then(|s| s.parse::<u32>().ok());
            let Some(id) = id else { continue };
            match read_blocks(fs, &path, client, id, st.size()).await {
                Ok(b) => {
                    obs.blocks.insert(path, b);
                }
                Err(why) => obs.unreadable.push((path, why)),
            }
        }
    }
    obs
}

async fn read_blocks(fs: &Sheen, path: &str, client: u32, id: u32, size: u64) -> Result<Vec<Found>, String> {
    let f = fs.open(path, 0, 0, None).await.map_err(|e| format!("open: {e}"))?;
    let n = (size.div_ceil(BLOCK as u64) as u32).max(MAX_BLOCKS);
    let mut out = Vec::new();
    let mut buf = vec![0u8; BLOCK];
    let mut res = Ok(());
    for blk in 0..n {
        match fs.read(&f, u64::from(blk) * BLOCK as u64, &mut buf).await {
            Ok(k) => out.push(classify(client, id, blk, &buf[..k])),
            Err(e) => {
                res = Err(format!("read of block {blk}: {e}"));
                break;
            }
        }
    }
    let _ = fs.close(f).await;
    res.map(|()| out)
}

/// Every client's findings: its log replayed into a model, compared with
/// what its directory holds. Returns (client, model, findings).
pub async fn verify(fs: &Sheen, logs: &[(u32, &Path)]) -> anyhow::Result<Vec<(u32, Model, Vec<Finding>)>> {
    let mut out = Vec::new();
    for &(client, log) in logs {
        let recs = read_log(log)?;
        let model = Model::build(client, &recs);
        let findings = match model.root() {
            Some(root) => {
                let obs = observe(fs, client, root).await;
                model.compare(&obs)
            }
            None => model.findings.clone(),
        };
        out.push((client, model, findings));
    }
    Ok(out)
}
