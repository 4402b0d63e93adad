//! The `sheen` subcommands that talk to a file system: `df`, `getstripe`,
//! `setstripe`, `targets`, `pools`, and the admin-endpoint scrapes behind `stats`
//! and `recovery`. Output: human tables, or one JSON object per line.
//!
//! Owns presentation only; the work is the library's ([`crate::Sheen`],
//! [`crate::mgc::Mgc`]).

use ptlrpc::wire::mds::StripeSpec;
use ptlrpc::wire::mgs::{MgsAdminReq, TargetKind, TargetRegReq};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::{Format, table};
use crate::error::{ClientError, Result};
use crate::fs::Sheen;
use crate::progress::Progress;

fn pct(used: u64, total: u64) -> String {
    (used.saturating_mul(100)).checked_div(total).map_or_else(|| "-".into(), |p| format!("{p}%"))
}

/// `sheen df`: space per target, then the file system's total (like `lfs df`).
/// `progress` ends before the table is printed.
/// `sheen check`: the MDT runs its namespace checker and asks every OST
/// about every object; prints the problems (none: "clean"). Returns
/// whether it is clean.
pub async fn check(fs: &Sheen, fmt: Format) -> crate::error::Result<bool> {
    let r = fs.mdc().get_info("check").await?;
    match fmt {
        Format::Json => println!("{}", serde_json::json!({"clean": r.problems.is_empty(), "problems": r.problems})),
        Format::Table => {
            for p in &r.problems {
                println!("PROBLEM: {p}");
            }
            println!("{}", if r.problems.is_empty() { "clean" } else { "INCONSISTENT" });
        }
    }
    Ok(r.problems.is_empty())
}

pub async fn df(fs: &Sheen, fmt: Format, progress: &Progress) -> bool {
    let rows = fs.df().await;
    progress.done();
    let ok = rows.iter().all(|r| r.ok);
    match fmt {
        Format::Json => {
            for r in &rows {
                println!("{}", serde_json::to_string(r).unwrap_or_default());
            }
        }
        Format::Table => {
            let osts: Vec<_> = rows.iter().filter(|r| r.name.contains("-OST")).collect();
            let mut t: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let pct = pct(r.used_kb, r.kbytes);
                    let num = |v: u64| if r.name.contains("-MDT") { "-".to_string() } else { v.to_string() };
                    let state = if r.ok { "" } else { "unreachable" };
                    vec![
                        r.name.clone(),
                        num(r.kbytes),
                        num(r.used_kb),
                        num(r.avail_kb),
                        pct,
                        r.files.to_string(),
                        state.into(),
                    ]
                })
                .collect();
            let sum = |f: fn(&&crate::fs::TargetSpace) -> u64| osts.iter().map(f).sum::<u64>();
            let (k, u, a) = (sum(|r| r.kbytes), sum(|r| r.used_kb), sum(|r| r.avail_kb));
            let pct = pct(u, k);
            t.push(vec![
                format!("filesystem_summary ({})", fs.fsname()),
                k.to_string(),
                u.to_string(),
                a.to_string(),
                pct,
                String::new(),
                String::new(),
            ]);
            print!("{}", table(&["UUID", "1K-blocks", "Used", "Available", "Use%", "Files", ""], &t));
        }
    }
    ok
}

/// `sheen getstripe PATH`.
pub async fn getstripe(fs: &Sheen, path: &str, fmt: Format) -> Result<()> {
    let st = fs.stat(path).await?;
    match (&st.layout, &st.default_stripe, fmt) {
        (Some(l), _, Format::Json) => println!(
            "{}",
            serde_json::json!({"path": path, "fid": st.fid().to_string(), "stripe_size": l.stripe_size,
                "stripe_count": l.objects.len(), "pool": l.pool,
                "objects": l.objects.iter().map(|o| serde_json::json!({"ost": o.ost, "seq": o.id.seq, "id": o.id.oid})).collect::<Vec<_>>()})
        ),
        (Some(l), _, Format::Table) => {
            println!("{path}");
            println!("lmm_stripe_count:  {}", l.objects.len());
            println!("lmm_stripe_size:   {}", l.stripe_size);
            println!("lmm_pool:          {}", if l.pool.is_empty() { "-" } else { &l.pool });
            println!("lmm_fid:           {}", st.fid());
            let rows: Vec<Vec<String>> = l
                .objects
                .iter()
                .enumerate()
                .map(|(i, o)| vec![i.to_string(), o.ost.to_string(), o.id.to_string()])
                .collect();
            print!("{}", table(&["stripe", "obdidx", "objid"], &rows));
        }
        (None, d, Format::Json) => println!(
            "{}",
            serde_json::json!({"path": path, "fid": st.fid().to_string(), "default": d.as_ref().map(|d| serde_json::json!({
                "stripe_size": d.stripe_size, "stripe_count": d.stripe_count, "stripe_offset": d.stripe_offset, "pool": d.pool}))})
        ),
        (None, Some(d), Format::Table) => println!(
            "{path}\nstripe_count: {} stripe_size: {} stripe_offset: {} pool: {}",
            d.stripe_count,
            d.stripe_size,
            d.stripe_offset,
            if d.pool.is_empty() { "-" } else { &d.pool }
        ),
        (None, None, Format::Table) => println!("{path} has no stripe info (the file system default applies)"),
    }
    Ok(())
}

/// `sheen setstripe`: a directory's default, or a new empty file's layout.
pub async fn setstripe(fs: &Sheen, path: &str, spec: StripeSpec) -> Result<()> {
    match fs.stat(path).await {
        Ok(st) if st.is_dir() => fs.setstripe_dir(path, spec).await,
        Ok(_) => {
            Err(ClientError::posix(format!("{path}: exists; a file's layout is set when it is created"), libc::EEXIST))
        }
        Err(e) if e.is_not_found() => {
            let f = fs.create(path, 0o644, Some(spec)).await?;
            fs.close(f).await
        }
        Err(e) => Err(e),
    }
}

/// What `sheen targets` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetAction {
    /// List.
    List,
    /// Register a target serving at some NIDs (what a starting target does).
    Add,
    /// Allow allocation.
    Activate,
    /// Stop allocation.
    Deactivate,
    /// Drop a deactivated target.
    Remove,
}

/// `sheen targets [ACTION KIND INDEX [--nid NID...]]`.
pub async fn targets(
    fs: &Sheen,
    action: TargetAction,
    kind: TargetKind,
    index: u32,
    nids: &[String],
    fmt: Format,
) -> Result<()> {
    let fsname = fs.fsname().to_string();
    let req = match action {
        TargetAction::Add => {
            if nids.is_empty() {
                return Err(ClientError::Invalid(
                    "targets add needs where the target serves: --nid ADDR@tcp (repeat for more)".into(),
                ));
            }
            let reg = TargetRegReq { fsname, kind, index, nids: nids.to_vec(), failover: vec![], instance: 1 };
            let r = fs.mgc().register(&reg).await?;
            return done(fmt, "add", r.record);
        }
        TargetAction::List => MgsAdminReq::Targets { fsname },
        TargetAction::Activate => MgsAdminReq::Activate { fsname, kind, index },
        TargetAction::Deactivate => MgsAdminReq::Deactivate { fsname, kind, index },
        TargetAction::Remove => MgsAdminReq::Remove { fsname, kind, index },
    };
    let r = fs.mgc().admin(&req).await?;
    if action != TargetAction::List {
        return done(fmt, &format!("{action:?}").to_lowercase(), r.record);
    }
    let name = |k: &TargetKind, i: u32| match k {
        TargetKind::Mdt => format!("{}-MDT{i:04x}", fs.fsname()),
        TargetKind::Ost => crate::osc::ost_name(fs.fsname(), i),
    };
    match fmt {
        Format::Json => {
            for t in &r.targets {
                println!(
                    "{}",
                    serde_json::json!({"target": name(&t.kind, t.index), "index": t.index, "nids": t.nids,
                        "failover": t.failover, "active": t.active, "instance": t.instance})
                );
            }
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = r
                .targets
                .iter()
                .map(|t| {
                    vec![
                        name(&t.kind, t.index),
                        if t.active { "active" } else { "inactive" }.into(),
                        t.nids.join(","),
                        t.instance.to_string(),
                    ]
                })
                .collect();
            print!("{}", table(&["target", "state", "nids", "instance"], &rows));
        }
    }
    Ok(())
}

/// Reports a change: the config-log record that carries it.
fn done(fmt: Format, what: &str, record: u64) -> Result<()> {
    match fmt {
        Format::Json => println!("{}", serde_json::json!({"done": what, "record": record})),
        Format::Table => println!("{what}: config log record {record}"),
    }
    Ok(())
}

/// What `sheen pools` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PoolAction {
    /// List pools and their OSTs.
    List,
    /// Create an empty pool.
    Create,
    /// Add OSTs to a pool.
    Add,
    /// Remove OSTs from a pool.
    Remove,
    /// Destroy an empty pool.
    Destroy,
}

/// `sheen pools [ACTION [POOL [OST...]]]` (like `lctl pool_*`).
pub async fn pools(fs: &Sheen, action: PoolAction, pool: Option<&str>, osts: &[u32], fmt: Format) -> Result<()> {
    let fsname = fs.fsname().to_string();
    let need_pool = || {
        pool.map(str::to_string)
            .ok_or_else(|| ClientError::Invalid(format!("pools {action:?} needs a pool name").to_lowercase()))
    };
    let need_osts = || {
        if osts.is_empty() {
            Err(ClientError::Invalid("name the OST indices to add or remove (e.g. `sheen pools add fast 0 1`)".into()))
        } else {
            Ok(())
        }
    };
    let mgc = fs.mgc();
    let mut record = 0;
    match action {
        PoolAction::List => {
            let r = mgc.admin(&MgsAdminReq::PoolList { fsname }).await?;
            let ost = |i: &u32| crate::osc::ost_name(fs.fsname(), *i);
            match fmt {
                Format::Json => {
                    for p in &r.pools {
                        let names: Vec<String> = p.osts.iter().map(ost).collect();
                        println!("{}", serde_json::json!({"pool": p.name, "osts": p.osts, "targets": names}));
                    }
                }
                Format::Table => {
                    let rows: Vec<Vec<String>> = r
                        .pools
                        .iter()
                        .map(|p| vec![p.name.clone(), p.osts.iter().map(ost).collect::<Vec<_>>().join(",")])
                        .collect();
                    print!("{}", table(&["pool", "osts"], &rows));
                }
            }
            return Ok(());
        }
        PoolAction::Create => {
            record = mgc.admin(&MgsAdminReq::PoolNew { fsname, pool: need_pool()? }).await?.record;
        }
        PoolAction::Destroy => {
            let pool = need_pool()?;
            let r = mgc.admin(&MgsAdminReq::PoolDestroy { fsname, pool: pool.clone() }).await;
            record = match r {
                Err(e) if e.errno() == libc::ENOTEMPTY => {
                    return Err(ClientError::Invalid(format!(
                        "pool {pool} still has OSTs: `sheen pools remove {pool} INDEX...` first (`sheen pools` lists them)"
                    )));
                }
                Err(e) if e.errno() == libc::ENOENT => {
                    return Err(ClientError::Invalid(format!("no pool {pool} (`sheen pools` lists the pools)")));
                }
                r => r?.record,
            };
        }
        PoolAction::Add | PoolAction::Remove => {
            let pool = need_pool()?;
            need_osts()?;
            for &ost in osts {
                let req = if action == PoolAction::Add {
                    MgsAdminReq::PoolAdd { fsname: fsname.clone(), pool: pool.clone(), ost }
                } else {
                    MgsAdminReq::PoolRemove { fsname: fsname.clone(), pool: pool.clone(), ost }
                };
                record = mgc.admin(&req).await?.record;
            }
        }
    }
    done(fmt, &format!("{action:?}").to_lowercase(), record)
}

/// `GET /metrics` of an admin endpoint, bounded.
pub async fn scrape(addr: &str) -> std::result::Result<String, String> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: sheen\r\n\r\n").await.map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(out.split_once("\r\n\r\n").map_or(out.clone(), |(_, b)| b.to_string()))
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), fut).await.unwrap_or_else(|_| Err("timed out".into()))
}

/// Metric samples (not comments) of `text` whose name contains any of `filter`.
pub fn samples<'a>(text: &'a str, filter: &[&str]) -> Vec<(&'a str, &'a str)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(k, _)| filter.is_empty() || filter.iter().any(|f| k.contains(f)))
        .collect()
}

/// `sheen stats` / `sheen recovery`: the samples of each endpoint that
/// match `filter` (all when empty). `progress` ends before anything is
/// printed.
pub async fn metrics(endpoints: &[(String, String)], filter: &[&str], fmt: Format, progress: &Progress) -> bool {
    let mut ok = true;
    let mut rows = Vec::new();
    let mut scraped = Vec::new();
    for (who, addr) in endpoints {
        scraped.push((who, addr, scrape(addr).await));
    }
    progress.done();
    for (who, addr, text) in scraped {
        match text {
            Ok(text) => {
                for (k, v) in samples(&text, filter) {
                    match fmt {
                        Format::Json => println!("{}", serde_json::json!({"daemon": who, "metric": k, "value": v})),
                        Format::Table => rows.push(vec![who.clone(), k.to_string(), v.to_string()]),
                    }
                }
            }
            Err(e) => {
                ok = false;
                match fmt {
                    Format::Json => println!("{}", serde_json::json!({"daemon": who, "error": e})),
                    Format::Table => rows.push(vec![who.clone(), format!("unreachable ({addr})"), e]),
                }
            }
        }
    }
    if fmt == Format::Table {
        print!("{}", table(&["daemon", "metric", "value"], &rows));
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_skip_comments_and_filter() {
        let t = "# HELP x y\nsheen_mdt_recovery_status 0\nptlrpc_handled_total{op=\"a\"} 3\n\n";
        assert_eq!(samples(t, &["recovery"]), vec![("sheen_mdt_recovery_status", "0")]);
        assert_eq!(samples(t, &[]).len(), 2);
    }
}
